"""The two arms of a base-vs-head job as processes: where each runs, with what, and how each run goes.

The head arm is the working tree with this interpreter. The base arm is a ``git worktree`` of the
base commit in a temporary folder (its own tests, conftest and code: the whole tree at that commit is
what is compared), or the same tree with another interpreter (``--diffaccel-base-python``), or both.
Every run of either arm is a fresh ``python -m pytest`` process with the command's own selection;
it judges the picture gates that need no history, times its tests as any run does, and writes its
results to a file (``child.py``) for the job to pair.

The base arm must really run the base's code. An editable install, or the project installed in the
virtualenv, points at the head's files, so the worktree goes first on the import path (``src/`` and
flat layouts), and each base run reports every module it imported from the head's tree: one is an
error that names it, never a silent comparison of the head with itself.

Each arm keeps its own compile caches (``TORCHINDUCTOR_CACHE_DIR``, ``TRITON_CACHE_DIR``) in the
job's temporary folder; downloaded weights (the Hugging Face cache) are shared.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..calibration import FINISHED, SHORT, SUMMARY, duration, stream
from .env import ARM_ENV, FORBID_ENV, ONLY_ENV, OUT_ENV, started_environment
from .figures import RunFigures, from_payload

# options of the command that the job keeps to itself: what an arm's process must not do
VALUE_OPTIONS = (
    "--diffaccel-base",
    "--diffaccel-base-python",
    "--diffaccel-base-runs",
    "--diffaccel-save",
    "--diffaccel-save-runs",
    "--diffaccel-accept",
    "--diffaccel-json",
    "--diffaccel-md",
    "--diffaccel-html",
    "--diffaccel-baselines",
    "--diffaccel-history",
    "--diffaccel-report-only",
    "--junitxml",
    "--junit-xml",
    "--basetemp",
)
FLAG_OPTIONS = ("--diffaccel-require-baseline",)
TAIL_LINES = 12
SESSION_SECONDS = re.compile(r" in ([0-9.]+)s\b")  # pytest's summary line: "... in 282.70s (0:04:42) ..."


class ArmError(Exception):
    """A base that can't be measured: a usage error (exit 4), raised before any timing starts."""


@dataclass
class Arm:
    name: str  # "base" or "head"
    python: str
    cwd: Path
    label: str  # "origin/main @ 1a2b3c4", "the working tree", "python ../venv/bin/python"
    env: dict[str, str] = field(default_factory=dict)  # added to the process's environment
    forbid: Path | None = None  # no module of this arm may come from here


@dataclass
class ArmRun:
    """One run of one arm: its tests' figures, or why it has none."""

    arm: str
    number: int  # the pair it belongs to
    status: int
    seconds: float
    figures: dict[str, RunFigures] = field(default_factory=dict)
    counts: str = ""  # "17 passed, 12 skipped"
    session_seconds: float | None = None  # the run's own test session, as its pytest summary says
    violations: list[str] = field(default_factory=list)  # modules imported from the head's tree
    python: str = ""
    versions: dict[str, Any] = field(default_factory=dict)
    crashed_in: str = ""  # the test that was running when the process died
    tail: str = ""
    wrote: bool = False  # the process wrote its results file

    @property
    def crashed(self) -> bool:
        return not self.wrote or self.status not in (0, 1, 5)

    def line(self, total: int) -> str:
        return f"{self.arm} run {self.number}/{total}: {self.counts or 'no test summary'} in {duration(self.seconds)}"


# ----------------------------------------------------------------------------- preparing the arms


def git(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=str(cwd), capture_output=True, text=True, check=False)


def toplevel(where: Path) -> Path:
    found = git(["rev-parse", "--show-toplevel"], where)
    if found.returncode != 0:
        raise ArmError(
            f"--diffaccel-base: {where} is not in a git repository ({found.stderr.strip() or 'git failed'}); "
            "the base is a commit of the repository the tests run in"
        )
    return Path(found.stdout.strip()).resolve()


def resolve(ref: str, top: Path) -> str:
    """The base ref's commit, or an error that says what to do (a shallow clone: fetch the history)."""
    found = git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], top)
    if found.returncode == 0 and found.stdout.strip():
        return found.stdout.strip()
    shallow = git(["rev-parse", "--is-shallow-repository"], top).stdout.strip() == "true"
    if shallow:
        raise ArmError(
            f"--diffaccel-base={ref}: no such commit in this clone, which is shallow: fetch the history first "
            "(actions/checkout with fetch-depth: 0, or git fetch --unshallow origin), then run again"
        )
    raise ArmError(
        f"--diffaccel-base={ref}: no such commit, branch or tag in {top} (git rev-parse found none); "
        "name a ref this clone has (git branch -a), e.g. origin/main after git fetch origin main"
    )


def make_worktree(top: Path, sha: str, folder: Path) -> Path:
    path = folder / "base"
    made = git(["worktree", "add", "--detach", "--quiet", str(path), sha], top)
    if made.returncode != 0:
        raise ArmError(f"--diffaccel-base: git worktree add failed: {made.stderr.strip()}")
    return path


def remove_worktree(top: Path, path: Path) -> None:
    git(["worktree", "remove", "--force", str(path)], top)
    git(["worktree", "prune"], top)
    shutil.rmtree(path, ignore_errors=True)


def import_path(tree: Path) -> list[str]:
    """The folders to put first on the import path so that the tree's own packages win (src/ and flat)."""
    src = tree / "src"
    return [str(src), str(tree)] if src.is_dir() else [str(tree)]


def check_python(python: str) -> dict[str, Any]:
    """The base interpreter's plugin and torch, or an error naming what it lacks."""
    path = shutil.which(python) or python
    if not Path(path).exists():
        raise ArmError(f"--diffaccel-base-python={python}: no such interpreter; give the path of a python executable")
    probe = (
        "import json, sys\n"
        "found = {'python': sys.executable}\n"
        "for name in ('pytest', 'pytest_diffaccel', 'torch', 'diffusers'):\n"
        "    try:\n"
        "        module = __import__(name)\n"
        "        found[name] = getattr(module, '__version__', '?')\n"
        "    except Exception as error:\n"
        "        found[name] = None\n"
        "        found[name + '_error'] = f'{type(error).__name__}: {error}'\n"
        "print(json.dumps(found))\n"
    )
    try:
        done = subprocess.run([path, "-c", probe], capture_output=True, text=True, timeout=300, check=False)
    except OSError as error:
        raise ArmError(f"--diffaccel-base-python={python}: can't run it ({error})") from None
    try:
        found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ArmError(f"--diffaccel-base-python={python}: it does not run Python ({tail[0]})") from None
    for name, install in (("pytest", "pytest"), ("pytest_diffaccel", "pytest-diffaccel"), ("torch", "torch")):
        if found.get(name) is None:
            raise ArmError(
                f"--diffaccel-base-python={python}: {name} does not import there ({found.get(name + '_error')}); "
                f"install it in that environment ({python} -m pip install {install})"
            )
    return found


def child_args(args: Sequence[str], no_history: Path) -> list[str]:
    """The command's own arguments for an arm's process: the job's options and reports removed, no history
    read (the job judges), no cache written, one line per finished test."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in FLAG_OPTIONS:
            continue
        if name in VALUE_OPTIONS:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return [*kept, f"--diffaccel-baselines={no_history}", "-p", "no:cacheprovider", "--verbosity=1"]


def mapped(args: Sequence[str], head_top: Path, base_top: Path) -> list[str]:
    """Absolute paths into the head's tree, pointed at the same place in the base's worktree."""
    out = []
    for arg in args:
        path = Path(arg.split("::", 1)[0])
        if path.is_absolute():
            try:
                relative = path.resolve().relative_to(head_top)
            except ValueError:
                out.append(arg)
                continue
            out.append(str(base_top / relative) + arg[len(arg.split("::", 1)[0]) :])
        else:
            out.append(arg)
    return out


def arm_env(arm: Arm, folder: Path) -> dict[str, str]:
    """The arm's own compile caches in the job's folder; the base's tree first on the import path."""
    caches = folder / f"cache-{arm.name}"
    return {
        "TORCHINDUCTOR_CACHE_DIR": str(caches / "inductor"),
        "TRITON_CACHE_DIR": str(caches / "triton"),
        **arm.env,
    }


# ----------------------------------------------------------------------------- one run


def run(
    arm: Arm,
    number: int,
    total: int,
    args: Sequence[str],
    folder: Path,
    only: Sequence[str] | None,
    say: Callable[[str], None],
    collect_only: bool = False,
) -> ArmRun:
    """One run of ``arm`` in a fresh process; its finished tests streamed through ``say``."""
    out = folder / f"{arm.name}-{number}{'-collect' if collect_only else ''}.json"
    env = process_environment(arm, number, total, folder, out, only)
    command = [arm.python, "-m", "pytest", *args, *(["--collect-only", "-q"] if collect_only else [])]
    lines, status, seconds = stream(command, arm.cwd, env, f"{arm.name} run {number}/{total}", say)
    return read(arm.name, number, out, status, seconds, lines)


def process_environment(
    arm: Arm, number: int, total: int, folder: Path, out: Path, only: Sequence[str] | None
) -> dict[str, str]:
    """The environment of one run of ``arm``: the job's as it started (env.started_environment: not what the
    head's conftests set at import), the arm's own caches and import path, and where to write its results."""
    started = started_environment()
    env = {k: v for k, v in started.items() if not k.startswith("PYTEST_DIFFACCEL_RUN")}
    env.update(arm_env(arm, folder))
    env.update(
        {
            ARM_ENV: f"{arm.name} {number}/{total}",
            OUT_ENV: str(out),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if arm.forbid is not None:
        env[FORBID_ENV] = str(arm.forbid)
    if only is not None:
        env[ONLY_ENV] = json.dumps(list(only))
    if "PYTHONPATH" in arm.env and started.get("PYTHONPATH"):
        env["PYTHONPATH"] = arm.env["PYTHONPATH"] + os.pathsep + started["PYTHONPATH"]
    return env


def read(arm: str, number: int, out: Path, status: int, seconds: float, lines: list[str]) -> ArmRun:
    """What a run left: its results file, its summary line, the test it died in."""
    result = ArmRun(arm, number, status, seconds)
    for line in reversed(lines):
        summary = SUMMARY.match(line)
        if summary:
            result.counts = summary.group(1)
            took = SESSION_SECONDS.search(line)
            result.session_seconds = float(took.group(1)) if took else None
            break
    result.tail = "\n".join(line for line in lines[-TAIL_LINES:] if line.strip())
    if out.is_file():
        try:
            data = json.loads(out.read_text(encoding="utf-8"))
        except ValueError:
            data = None
        if isinstance(data, dict):
            result.wrote = True
            result.violations = [str(v) for v in data.get("violations", [])]
            result.python = str(data.get("python", ""))
            result.versions = dict(data.get("versions") or {})
            for payload in data.get("results", []):
                if isinstance(payload, dict):
                    figures = from_payload(payload)
                    result.figures[figures.test_id] = figures
    if result.crashed:
        result.crashed_in = _running(lines)
    return result


def _running(lines: Sequence[str]) -> str:
    """The test that started and never finished, under -v: pytest writes its id before its outcome."""
    started = ""
    for line in lines:
        finished = None if SHORT.match(line) else FINISHED.match(line)
        if finished:
            started = ""
            continue
        head = line.split(" ", 1)[0]
        if "::" in head and not line.startswith(("FAILED", "ERROR", "PASSED", "SKIPPED")):
            started = head
    return started


def job_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="diffaccel-base-"))


def interpreter() -> str:
    return sys.executable
