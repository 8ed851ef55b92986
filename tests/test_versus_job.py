"""The base-vs-head job end to end: a user's project in a real git repository, its base and head commits
measured in one job on this machine (pytester, the tiny preset at the fast settings).

One job carries the behaviours that need timing, so that the suite pays for one job: against the base
commit run by a wrapper interpreter that slows one technique (``--diffaccel-base-python`` and
``--diffaccel-base`` together), the head's real extra work in the UNet's forward fails ``latency`` naming
the ratio and the base ref (the user's package is installed editable, pointing at the head's ``src/``: the
base arm imports the base's, or the job stops naming the module), its nudged scheduler fails ``picture vs
base``, the wrapper's slowed technique reads ``faster``, an unchanged fp32 passes, a test added in the head
is ``new in head``; the JSON report carries both arms' runs; the worktree and the job's folder are gone at
the end. The bad inputs are usage errors before any timing, with nothing left behind.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

BASE_CONFTEST = """
import mypkg.tweaks


def pytest_diffaccel_register_techniques(register):
    @register("tweak", min_ssim=0.5)
    def tweak(pipe):
        return mypkg.tweaks.tweak(pipe)

    @register("nudged", min_ssim=0.5)
    def nudged(pipe):
        return pipe
"""

BASE_TWEAKS = """
def tweak(pipe):
    return pipe
"""

HEAD_TWEAKS = """
import torch


def tweak(pipe):
    # the head's change: real extra work in the UNet's forward (matrix products, never a sleep)
    forward = pipe.unet.forward
    unit = torch.randn(192, 192, generator=torch.Generator().manual_seed(0))

    def slower(*args, **kwargs):
        x = unit
        for _ in range(400):
            x = torch.tanh(x @ x)
        return forward(*args, **kwargs)

    pipe.unet.forward = slower
    return pipe
"""

HEAD_CONFTEST = """
import mypkg.tweaks


def pytest_diffaccel_register_techniques(register):
    @register("tweak", min_ssim=0.5)
    def tweak(pipe):
        return mypkg.tweaks.tweak(pipe)  # the user's package: the base arm must run the base's

    @register("nudged", min_ssim=0.5)
    def nudged(pipe):
        # the head's change: the scheduler's sigmas scaled, a setting nudged by an upgrade
        scheduler = pipe.scheduler
        set_timesteps = scheduler.set_timesteps

        def nudged_timesteps(*args, **kwargs):
            set_timesteps(*args, **kwargs)
            scheduler.sigmas = scheduler.sigmas * 1.3

        scheduler.set_timesteps = nudged_timesteps
        return pipe
"""

TEST = """
def test_acceleration(diffaccel_pipeline, diffaccel_benchmark):
    diffaccel_benchmark(diffaccel_pipeline)
"""

GONE_TEST = """
import pytest


@pytest.mark.diffaccel(techniques="fp32")
def test_removed_in_head(diffaccel_pipeline, diffaccel_benchmark):
    diffaccel_benchmark(diffaccel_pipeline)
"""

NEW_TEST = """
import pytest


@pytest.mark.diffaccel(techniques="fp32")
def test_added_in_head(diffaccel_pipeline, diffaccel_benchmark):
    diffaccel_benchmark(diffaccel_pipeline)
"""


def git(path: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
        cwd=path,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def commit(path: Path, message: str) -> None:
    git(path, "add", "-A")
    git(path, "commit", "-qm", message)


def job_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("diffaccel-base-*")}


def editable_install(src: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> None:
    """The user's package installed editable (``pip install -e .`` of a src/ layout, as setuptools writes it): a
    .pth naming the head's src/ folder in a site folder every process reads at its start (the user site of a
    PYTHONUSERBASE of the test's own), and the folder on this process's path, as a start would have put it. A
    base arm that let it win would import the head's package: the worktree must come first."""
    if not site.ENABLE_USER_SITE:  # pragma: no cover - a virtualenv without user site: the flat layout would do
        pytest.skip("no user site in this interpreter (a virtualenv): the editable install can't be emulated")
    userbase = tmp_path_factory.mktemp("userbase")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    folder = userbase / "lib" / version / "site-packages"
    folder.mkdir(parents=True)
    (folder / "__editable__.mypkg-0.1.pth").write_text(f"{src}\n")
    monkeypatch.setenv("PYTHONUSERBASE", str(userbase))
    monkeypatch.syspath_prepend(str(src))


@pytest.fixture
def repo(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> pytest.Pytester:
    """A user's project (a package in src/, installed editable, and its tests): the base commit, then the head
    commit that changes the package's tweak and a technique of the conftest, and adds a test."""
    # this job's temporary folders in a folder of its own: another worker's job (pytest -n 2) makes its own meanwhile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("job-tmp")))
    git(pytester.path, "init", "-q")
    package = pytester.path / "src" / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    editable_install(pytester.path / "src", monkeypatch, tmp_path_factory)
    (package / "tweaks.py").write_text(BASE_TWEAKS)
    pytester.makeconftest(BASE_CONFTEST)
    pytester.makepyfile(test_speed=TEST + GONE_TEST)
    commit(pytester.path, "base")
    (package / "tweaks.py").write_text(HEAD_TWEAKS)
    pytester.makeconftest(HEAD_CONFTEST)
    pytester.makepyfile(test_speed=TEST + NEW_TEST)
    commit(pytester.path, "head")
    return pytester


def test_the_head_is_judged_against_the_base_measured_in_the_same_job(repo: pytest.Pytester, run_inner):
    wrapper = repo.path / "slow-python"
    wrapper.write_text(f'#!/bin/sh\nDIFFACCEL_SLOWDOWN="sdpa-math=150%" exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    before = job_folders()
    result = run_inner(
        "--diffaccel-base=HEAD~1",
        f"--diffaccel-base-python={wrapper}",
        "--diffaccel-base-runs=1",
        "--diffaccel-techniques=fp32,sdpa-math,tweak,nudged",
        "--diffaccel-max-slowdown=50%",
        "--diffaccel-alpha=0.01",
        "--diffaccel-json=report.json",
        "--diffaccel-html=report.html",
        "-v",
    )
    out = result.stdout.str()
    result.assert_outcomes(passed=3, failed=2)
    sha = git(repo.path, "rev-parse", "--short=7", "HEAD~1").strip()
    result.stdout.fnmatch_lines(["diffaccel: checking the base (HEAD~1 @ *): collecting its tests ..."])
    for arm in ("base", "head"):  # in a random order: each run a fresh process, its tests streamed
        result.stdout.fnmatch_lines(
            [
                f"diffaccel: {arm} run 1/1 in a fresh process ...",
                f"diffaccel:   {arm} run 1/1 [[]*/*[]] test_speed.py::test_acceleration[[]fp32[]] PASSED *",
            ]
        )
    result.stdout.fnmatch_lines(
        [
            f"*vs base HEAD~1 @ {sha} with python {wrapper}*, 1 pair*interleaved in this job*",
            "*test_speed.py::test_acceleration[[]fp32[]] PASSED*",
            "*test_speed.py::test_acceleration[[]tweak[]] FAILED*",
            "*test_speed.py::test_added_in_head[[]fp32[]] PASSED*",
        ]
    )
    # the head's extra work: latency, with the ratio and the base ref, and the component that moved
    assert "latency gate failed: relative to the interleaved fp32, " in out
    tweak = next(line for line in out.splitlines() if line.strip().startswith("tweak: latency:"))
    # significant on its one starting pair, confirmed by the two after it (a failure needs two pairs at least)
    assert "slower (3 pairs: " in tweak and f"vs base HEAD~1 @ {sha}" in tweak and "denoiser" in tweak
    assert "not decided after 1 pair: 2 more pairs for them only" in out
    # the nudged scheduler: the picture against the base's, with the tolerance and where it came from
    nudged = next(line for line in out.splitlines() if line.strip().startswith("nudged: picture vs base:"))
    assert "picture changed vs base: SSIM" in nudged and "one base run" in nudged
    # the wrapper slowed the base's sdpa-math: the head reads faster; fp32 unchanged passes; the new test is named
    lines = out.splitlines()
    rows = {cells[0]: line for line in lines if (cells := line.split()) and cells[0].startswith("test_")}
    assert rows["test_acceleration[sdpa-math]"].rstrip().endswith("pass (faster)"), out
    assert rows["test_acceleration[fp32]"].rstrip().endswith("pass"), out
    assert rows["test_added_in_head[fp32]"].rstrip().endswith("new in head: not judged"), out
    assert "gone from head: test_speed.py::test_removed_in_head[fp32] (in the base only: not judged)" in out
    html = (repo.path / "report.html").read_text()
    assert html.count('class="base"') >= 4 and f"base (HEAD~1 @ {sha}" in html  # the base's picture beside
    report = json.loads((repo.path / "report.json").read_text())
    runs = report["versus"]["runs"]
    arms = [r["arm"] for r in runs]
    assert arms.count("base") == arms.count("head") >= 1  # one pair, more for a test not decided at one
    assert report["versus"]["base"].startswith(f"HEAD~1 @ {sha}")
    tweak_bench = next(b for b in report["benchmarks"] if b["extra_info"]["technique"] == "tweak")
    assert tweak_bench["extra_info"]["versus"]["comparisons"]["ratio"]["regression"] is True
    # nothing left behind: the worktree and the job's folder
    assert len(git(repo.path, "worktree", "list").splitlines()) == 1
    assert job_folders() <= before


def test_a_base_that_cant_be_measured_is_a_usage_error_before_any_timing(repo: pytest.Pytester, run_inner):
    before = job_folders()
    missing = run_inner("--diffaccel-base=no-such-branch")
    assert missing.ret == 4
    missing.stderr.fnmatch_lines(["*--diffaccel-base=no-such-branch: no such commit, branch or tag*"])
    # a base whose conftest raises: its collection fails, named, before any run is timed
    repo.makeconftest("raise RuntimeError('the base conftest is broken')\n")
    commit(repo.path, "broken")
    repo.makeconftest(HEAD_CONFTEST)
    commit(repo.path, "fixed")
    broken = run_inner("--diffaccel-base=HEAD~1", "--diffaccel-techniques=fp32")
    assert broken.ret == 4
    text = broken.stderr.str()
    assert "the base (HEAD~1 @" in text and "does not collect" in text and "the base conftest is broken" in text
    assert "base run 1" not in broken.stdout.str()
    assert len(git(repo.path, "worktree", "list").splitlines()) == 1
    assert job_folders() <= before


CRASH = """

def pytest_diffaccel_register_techniques(register):
    @register("crash", min_ssim=0.5)
    def crash(pipe):
        import os

        if os.environ.get("PYTEST_DIFFACCEL_ARM", "").startswith("base"):
            os._exit(3)  # the base's code dies mid-run, as a segfault in a kernel would
        return pipe
"""


def test_a_base_run_that_dies_mid_way_is_named_and_gives_no_verdict(repo: pytest.Pytester, run_inner):
    before = job_folders()
    repo.makeconftest(CRASH)
    commit(repo.path, "a technique whose base dies")
    repo.makeconftest(CRASH.replace('startswith("base")', 'startswith("never")'))
    commit(repo.path, "the head's is sound")
    result = run_inner("--diffaccel-base=HEAD~1", "--diffaccel-techniques=crash", "--diffaccel-base-runs=1")
    assert result.ret == 4
    out = result.stdout.str()
    assert "the base arm's run 1 died in test_speed.py::test_acceleration[crash] (exit status 3" in out, out
    assert "no verdict is given on partial data" in out
    assert "PASSED" not in out.split("died in", 1)[1]  # no test reports a verdict after the crash
    assert len(git(repo.path, "worktree", "list").splitlines()) == 1
    assert job_folders() <= before
