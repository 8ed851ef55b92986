"""Stored histories are untrusted input (issue #30): names confined, values validated, bad objects named.

A history is committed by pull requests from anyone and written by every runner of a fleet, so every
reader treats it as a reviewer would: a thumbnail name is a content hash or nothing, a machine key is of
one alphabet, a number is finite and positive where it is judged, and whatever is refused is one line
naming the file or object and what to do. Each test here failed on the code before these rules.
Histories live in a folder or in a ``file://`` store under ``tmp_path`` (the same code as S3's, no server).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_diffaccel import baselines, history, latency, thumbnails
from pytest_diffaccel.baselines import BaselineError
from pytest_diffaccel.cli import main
from pytest_diffaccel.fingerprint import hardware_hash
from pytest_diffaccel.store import FolderStore, open_store

HARDWARE = {"cpu": {"vendor": "GenuineIntel", "model_name": "test cpu"}, "cores": 2}
OTHER_HARDWARE = {"cpu": {"vendor": "AuthenticAMD", "model_name": "other cpu"}, "cores": 8}
TEST = "t.py::test_a[bf16]"
GOOD_PNG = "0123456789abcdef.png"


def environment(hardware: dict | None = None) -> dict:
    hardware = hardware or HARDWARE
    return {"hash": hardware_hash(hardware), "hardware": hardware, "software": {"torch": "2.13.0"}}


def record(ratio: Any = 1.0, level: Any = 0, **more: Any) -> dict:
    return {"level": level, "ratio": ratio, "median": 0.2, "blocks": 1, "recorded": "2026-12-01T12:00:00+00:00", **more}


def entry(runs: list | None = None, **more: Any) -> dict:
    return {"samples": [0.2, 0.21], "median": 0.2, "call": "c", "runs": runs or [record()], **more}


def write_file(folder: Path, entries: dict, machine: str = "cpu-test", env: dict | None = None, name: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{machine}.json")
    path.write_text(baselines.render(machine, entries, env or environment()))
    return path


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def one_line(error: BaseException | str) -> str:
    text = str(error)
    assert "\n" not in text.strip(), text
    return text


# ----------------------------------------------------------------------------- 1: thumbnail names confined


def test_move_never_uploads_a_file_a_baseline_names(tmp_path, capsys):
    """A committed baseline whose entry names a credentials file as its thumbnail: `move` refuses the file,
    naming it, and nothing outside the store's thumbnail prefix is read into the store."""
    secret = tmp_path / "home" / ".aws" / "credentials"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"aws_secret_access_key = SECRET-42")
    folder = tmp_path / "committed"
    path = write_file(folder, {TEST: entry(fidelity={"images": str(secret), "reference": GOOD_PNG, "ssim": 1.0})})
    store = tmp_path / "bucket"
    assert main(["move", str(folder), f"file://{store}/ci"]) == 2
    err = capsys.readouterr().err
    assert f"baseline file {path}" in err and "thumbnail name" in err and "16 hex digits" in err
    one_line(err)
    uploaded = files_under(tmp_path) - files_under(tmp_path / "home") - files_under(folder)
    assert not any(b"SECRET-42" in p.read_bytes() for p in uploaded)
    assert not store.exists() or all(p.parent.name == "thumbnails" or "/runs/" in str(p) for p in files_under(store))


def test_a_plain_read_refuses_a_thumbnail_name_that_is_a_path(tmp_path):
    folder = tmp_path / "b"
    path = write_file(folder, {TEST: entry(fidelity={"images": "/dev/zero", "reference": "../../x.png"})})
    with pytest.raises(BaselineError, match=r"'fidelity' 'images': thumbnail name '/dev/zero' is not a content name"):
        baselines.load(path)
    with pytest.raises(BaselineError) as error:
        baselines.locate(folder, "cpu-test", environment())
    assert str(path) in one_line(error.value) and "fix it" in str(error.value)
    for name in ("/dev/zero", "../cpu-test.json", "thumbnails/../../x.png", "0123456789ABCDEF.png", ""):
        with pytest.raises(BaselineError, match="not a content name"):
            thumbnails.read(folder, name, 1)
    assert thumbnails.read(folder, GOOD_PNG, 1) is None  # a content name that is missing: nothing to compare


def test_a_symlink_named_like_a_thumbnail_is_not_followed(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET")
    (tmp_path / "b" / "thumbnails").mkdir(parents=True)
    (tmp_path / "b" / "thumbnails" / GOOD_PNG).symlink_to(secret)
    assert FolderStore(tmp_path / "b").thumbnail_bytes(GOOD_PNG) is None


# ----------------------------------------------------------------------------- 2: machine keys confined


@pytest.mark.parametrize("machine", ["../../outside", "/abs/outside", "a/b", "UPPER", "..", "cpu test"])
@pytest.mark.parametrize("into", ["store", "folder"])
def test_move_refuses_a_machine_key_that_is_a_path(tmp_path, capsys, machine, into):
    folder = tmp_path / "work" / "committed"
    path = write_file(folder, {TEST: entry()}, machine=machine, name="cpu-test.json")
    destination = f"file://{tmp_path}/work/a/b/store" if into == "store" else str(tmp_path / "work" / "a" / "b" / "out")
    before = files_under(tmp_path)
    assert main(["move", str(folder), destination]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"baseline file {path}" in err and "machine key" in err and "fix it" in err
    assert files_under(tmp_path) == before  # nothing written anywhere


def test_save_into_a_store_refuses_a_machine_key_that_is_a_path(tmp_path):
    store = open_store(f"file://{tmp_path}/store")
    with pytest.raises(BaselineError, match=r"machine key '\.\./x'"):
        store.write_snapshot("../x", environment(), {TEST: entry()})
    assert files_under(tmp_path) == set()


# ----------------------------------------------------------------------------- 4, 5: values validated


@pytest.mark.parametrize(
    ("poison", "message"),
    [
        ("Infinity", "Infinity is not a number JSON allows"),
        ("1e999", "1e999 is out of range"),
        ("NaN", "NaN is not a number JSON allows"),
        ("true", "'ratio' is True, not a finite number above zero"),
        ("-1.0", "'ratio' is -1.0, not a finite number above zero"),
        ("0", "'ratio' is 0, not a finite number above zero"),
    ],
)
def test_a_non_finite_or_non_positive_ratio_in_a_file_is_refused(tmp_path, poison, message):
    path = write_file(tmp_path, {TEST: entry([record(1.0), record(1.01), record(0.99), record(12345.0)])})
    path.write_text(path.read_text().replace("12345.0", poison))
    with pytest.raises(BaselineError, match=message) as error:
        baselines.load(path)
    assert str(path) in one_line(error.value)


def test_an_infinite_ratio_in_a_history_never_judges_a_slowdown_a_pass(tmp_path):
    """One `inf` in the newest level made its mean infinite and a 3x slowdown 'inside max-slowdown'."""
    records = [record(1.0), record(1.01), record(0.99), record(float("inf"))]
    groups = history.levels(records, "ratio")
    assert all(math.isfinite(v) for group in groups for v in group)
    spread = history.spread(groups, "ratio")
    judged = latency.judge([math.log(3.0)], groups[-1], spread, max_slowdown=0.10, alpha=0.01, max_blocks=1)
    assert judged.state == "fail" and judged.regression
    for poison in (float("nan"), True, -1.0, 0.0, 10**400):
        assert history.value({"ratio": poison}, "ratio") is None


def test_samples_and_levels_out_of_range_are_refused(tmp_path):
    cases = {
        "samples": entry(samples=[-1.0, 0.2]),
        "level": entry([record(level=None)]),
        "bool level": entry([record(level=True)]),
        "runs": entry(runs="x"),
        "fidelity": entry(fidelity="x"),
    }
    for what, bad in cases.items():
        path = write_file(tmp_path / what.replace(" ", "-"), {TEST: bad})
        with pytest.raises(BaselineError) as error:
            baselines.load(path)
        assert str(path) in one_line(error.value), what


def _store_object(url_root: Path, body: dict, env: dict | None = None, key: str = "cpu-test", name: str = "") -> Path:
    env = env or environment()
    folder = url_root / key / env["hash"] / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or "20261201T120000000000Z-000000000000.json")
    path.write_text(json.dumps({"schema": 3, "kind": "run", "machine": key, "mode": "all", "environment": env, **body}))
    return path


def test_a_store_record_missing_its_fields_is_a_clear_error(tmp_path):
    path = _store_object(tmp_path / "s", {"tests": {TEST: {"record": record(), "keep": 10, "new_level": False}}})
    with pytest.raises(BaselineError) as error:
        open_store(f"file://{tmp_path}/s").locate("cpu-test", environment())
    text = one_line(error.value)
    assert path.name in text and "missing 'fields'" in text and "delete the object or restore it" in text


@pytest.mark.parametrize(
    "update",
    [
        {"fields": {"samples": [-1.0, float("nan")]}, "record": record(), "keep": 10, "new_level": False},
        {"fields": {"samples": [0.2]}, "record": record(1e-9), "keep": 10, "new_level": False},
        {"fields": {"samples": [0.2]}, "record": record(), "keep": "10", "new_level": False},
        {"fields": {"samples": [0.2]}, "record": record(level=None), "keep": 10, "new_level": 0},
    ],
)
def test_a_store_object_with_values_out_of_range_is_refused(tmp_path, update):
    _store_object(tmp_path / "s", {"tests": {TEST: update}})
    with pytest.raises(BaselineError, match="baseline store object file://"):
        open_store(f"file://{tmp_path}/s").locate("cpu-test", environment())


def test_an_environment_without_hardware_does_not_raise_in_mismatch():
    located = baselines.Located(
        path="x.json",
        entries={},
        environment=environment(),
        others=[baselines.Stored(path="other.json", environment={"hash": "abcdef12"}, tests=1)],
    )
    assert "other.json" in (located.mismatch() or "")
    located.environment = {"hash": "12345678"}
    assert "other.json" in (located.mismatch() or "")


def test_a_store_object_without_hardware_is_refused(tmp_path):
    env = environment()
    bad = {"hash": env["hash"], "software": {}}
    path = _store_object(tmp_path / "s", {"environment": bad, "tests": {}})
    with pytest.raises(BaselineError, match="holds no 'hardware' object") as error:
        open_store(f"file://{tmp_path}/s").locate("cpu-test", env)
    assert path.name in one_line(error.value)


def test_a_usage_error_not_an_internal_error_in_a_pytest_run(user_suite, tmp_path):
    """The record missing its fields, in this run's own history: exit 4 with one line, no INTERNALERROR."""
    from pytest_diffaccel.fingerprint import probe

    env = probe("cpu")
    machine = baselines.machine_key("cpu")
    _store_object(tmp_path / "s", {"tests": {TEST: {"record": record(), "keep": 1, "new_level": False}}}, env, machine)
    result = user_suite.runpytest_inprocess(
        "--collect-only", f"--diffaccel-baselines=file://{tmp_path}/s", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baseline store object file://*: test *missing 'fields'*delete the object*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


# ----------------------------------------------------------------------------- 10: other environments skipped


def test_a_bad_file_of_another_environment_is_skipped_with_a_note(tmp_path):
    mine = environment()
    other = environment(OTHER_HARDWARE)
    path = write_file(tmp_path, {TEST: entry()}, env=other)  # read first: <key>.json
    path.write_text(path.read_text().replace('"ratio": 1.0', '"ratio": Infinity'))
    write_file(tmp_path, {TEST: entry()}, env=mine, name=f"cpu-test-{mine['hash']}.json")
    located = baselines.locate(tmp_path, "cpu-test", mine)
    assert located.matched and TEST in located.entries
    assert len(located.notes) == 1 and str(path) in one_line(located.notes[0]) and "skipped" in located.notes[0]
    # the same file is this environment's: refused
    with pytest.raises(BaselineError, match="Infinity"):
        baselines.locate(tmp_path, "cpu-test", other)


def test_a_bad_object_of_another_environment_is_skipped_with_a_note(tmp_path):
    mine, other = environment(), environment(OTHER_HARDWARE)
    url = f"file://{tmp_path}/s"
    store = open_store(url)
    store.write_snapshot("cpu-test", mine, {TEST: entry()})
    _store_object(tmp_path / "s", {"tests": {TEST: {"keep": 1}}}, other)
    located = open_store(url).locate("cpu-test", mine)
    assert located.matched and TEST in located.entries
    assert len(located.notes) == 1 and other["hash"] in one_line(located.notes[0])
    with pytest.raises(BaselineError, match="missing"):
        open_store(url).locate("cpu-test", other)


def test_a_pytest_run_is_not_stopped_by_another_environments_bad_file(user_suite, tmp_path):
    other = environment(OTHER_HARDWARE)
    machine = baselines.machine_key("cpu")
    write_file(tmp_path / "b", {TEST: entry(samples=[-1.0, 0.2])}, machine=machine, env=other)
    result = user_suite.runpytest_inprocess(
        "--collect-only", f"--diffaccel-baselines={tmp_path / 'b'}", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()


# ----------------------------------------------------------------------------- 11: the smaller ones


TEX = r"t.py::test_a[$\notacommand{x}$]"


def test_a_dollar_in_a_test_id_is_drawn_literally_by_history_chart(tmp_path, capsys):
    write_file(tmp_path / "b", {TEX: entry([record(1.0), record(1.05)])})
    chart = tmp_path / "chart.png"
    assert main(["history", str(tmp_path / "b"), "--chart", str(chart)]) == 0
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_a_dollar_in_a_technique_name_is_drawn_literally_in_the_html_charts():
    from pytest_diffaccel.report import html, series

    view = series.series_points([{"value": 1.0, "level": 0, "recorded": "$\\bad$"}], figure="ratio", title=TEX)
    assert series.chart_png(view).startswith(b"\x89PNG")
    measured = [SimpleNamespace(speedup=1.5, technique=r"$\notacommand$", failed=False)]
    assert (html._speedup_chart(measured) or "").startswith("data:image/png")
    assert series.plain(r"a $x$ \$") == r"a \$x\$ \\$"


def test_the_store_url_is_never_echoed_with_its_credentials(tmp_path):
    pytest.importorskip("s3fs")
    from pytest_diffaccel.remote import RemoteStore

    store = RemoteStore("s3://AKIAEXAMPLE:SECRET-KEY@perf-ci/diffaccel?token=SECRET-TOKEN")
    shown = [store.location, store.url(store._path("cpu-test", "12345678")), str(store._unreachable("x", OSError(
        "GET s3://AKIAEXAMPLE:SECRET-KEY@perf-ci/diffaccel?token=SECRET-TOKEN failed")))]  # fmt: skip
    for text in shown:
        assert "SECRET" not in text and "AKIAEXAMPLE" not in text, text
    assert store.location == "s3://***@perf-ci/diffaccel?token=***"


def test_the_gguf_cache_is_a_private_folder_of_this_user(tmp_path, monkeypatch):
    from pytest_diffaccel.techniques import gguf_quant

    monkeypatch.delenv(gguf_quant.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = gguf_quant.cache_dir()
    assert not str(folder).startswith(tempfile.gettempdir() + "/pytest-diffaccel")
    assert folder.is_relative_to(tmp_path / "cache") and folder.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv(gguf_quant.CACHE_ENV, str(shared))
    with pytest.raises(ValueError, match="may be written by others"):
        gguf_quant.cache_dir()
    if os.getuid() == 0:  # root can hand the folder to another user, as an attacker's pre-made folder is
        shared.chmod(0o700)
        os.chown(shared, 4242, 4242)
        with pytest.raises(ValueError, match="belongs to another user"):
            gguf_quant.cache_dir()


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe not utf-8",
        b'{"machine_info": {}, "commit_info": {}, "benchmarks": [1]}',
        b'{"machine_info": {}, "commit_info": {}, "benchmarks": [{"fullname": "t", "extra_info": null}]}',
        b'{"machine_info": {}, "commit_info": {}, "benchmarks": [{"fullname": "t", "extra_info": {"gates": [{}]}}]}',
        b'{"machine_info": {}, "commit_info": {}, "benchmarks": [], "diffaccel": {"skipped": [1]}}',
    ],
)
def test_merge_names_a_malformed_shard_in_one_line(tmp_path, capsys, content):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"machine_info": {}, "commit_info": {}, "benchmarks": []}))
    bad = tmp_path / "shard-2.json"
    bad.write_bytes(content)
    assert main(["merge", str(good), str(bad)]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"error: {bad}")


def _good_shard(tmp_path: Path) -> Path:
    gate = {"gate": "fidelity", "passed": True, "judged": True, "message": "SSIM 0.99"}
    bench = {"fullname": "t::a", "name": "a", "stats": {"median": 0.1},
             "extra_info": {"technique": "a", "verdict": "pass", "gates": [gate]}}  # fmt: skip
    path = tmp_path / "shard-1.json"
    path.write_text(json.dumps({"machine_info": {}, "commit_info": {}, "benchmarks": [bench]}))
    return path


def test_merge_names_a_report_it_cant_write_and_checks_the_html_extra_before_writing_anything(
    tmp_path, capsys, monkeypatch
):
    shard = _good_shard(tmp_path)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert main(["merge", str(shard), "-o", str(tmp_path / "all.json"), "--markdown", str(folder)]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"error: {folder}: can't be written (") and "the reports before it were written" in err
    # the HTML report without its extra: said before anything is read or written, with the install command
    monkeypatch.setitem(sys.modules, "jinja2", None)
    out = tmp_path / "again.json"
    assert main(["merge", str(shard), "-o", str(out), "--html", str(tmp_path / "all.html")]) == 2
    err = one_line(capsys.readouterr().err)
    assert "needs jinja2" in err and "pip install 'pytest-diffaccel[html]'" in err
    assert not out.exists() and not (tmp_path / "all.html").exists()


# ----------------------------------------------------------------------------- 8: clock skew


def test_a_runner_whose_clock_runs_fast_does_not_reorder_the_history(tmp_path, monkeypatch, capsys):
    """An old-code run saved by a runner whose clock ran an hour fast, then an accepted speed-up saved by
    a runner that had read it: the old run stays in the old level, and the report says the stamps disagree."""
    from pytest_diffaccel import remote
    from pytest_diffaccel.history import RunUpdate

    env = environment()
    url = f"file://{tmp_path}/s"

    def save(ratio: float, new_level: bool = False) -> None:
        store = open_store(url)
        update = RunUpdate({"call": "c", "samples": [0.2]}, {"ratio": ratio, "blocks": []}, 10, new_level)
        store.save(store.locate("cpu-test", env), "cpu-test", {TEST: update}, "all", None, env)

    save(1.0)
    save(1.01)
    clock = remote._object_name
    monkeypatch.setattr(remote, "_object_name", lambda: "2999" + clock()[4:])  # a clock far ahead
    save(0.99)  # the old code, saved by the fast runner
    monkeypatch.setattr(remote, "_object_name", clock)
    save(0.5, new_level=True)  # the accepted speed-up, saved after the runner read the fast one's run
    located = open_store(url).locate("cpu-test", env)
    runs = located.entries[TEST]["runs"]
    assert [(r["ratio"], r["level"]) for r in runs] == [(1.0, 0), (1.01, 0), (0.99, 0), (0.5, 1)]
    assert any("out of the order they were saved in" in note for note in located.notes)
    # and the command a person reads the history with says so too
    assert main(["history", url]) == 0
    shown = capsys.readouterr().out
    assert "note: " in shown and "1 saved run(s) carry a time stamp out of the order they were saved in" in shown


# ----------------------------------------------------------------------------- 6: a save that fails loses no report


def test_a_save_that_fails_keeps_the_reports_and_says_so_in_the_exit_status(user_suite, run_inner, tmp_path):
    """An OSError from the folder save (here: the baselines folder lies under a plain file) was an
    INTERNALERROR at the end of the session, after the timing: nothing saved, no report written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    report = tmp_path / "report.json"
    result = run_inner(
        "--diffaccel-techniques=fp32",
        f"--diffaccel-baselines={blocker / 'baselines'}",
        "--diffaccel-save=all",
        f"--diffaccel-json={report}",
        "--diffaccel-report-only=latency,compile-time,cold-start,memory",
    )
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines([f"baselines NOT saved: *{blocker.name}*"])
    assert json.loads(report.read_text())["benchmarks"], "the run's report is written all the same"


def test_two_snapshots_of_one_moment_fold_the_one_that_holds_more():
    # r2 and r3 were saved from the same read (both claim sequence 2); compaction A read r1, r2, compaction B
    # r1-r3 and deleted them; A's snapshot has the later name: the fold must take B's, which holds r3
    from pytest_diffaccel import remote

    def snapshot(covers: list[str], ratios: list[float]) -> dict:
        runs = [{"ratio": r, "level": 0} for r in ratios]
        return {"kind": "snapshot", "sequence": 2, "covers": covers, "environment": environment(),
                "entries": {"t::a": {"ratio": ratios[-1], "runs": runs}}}  # fmt: skip

    b = ("2026-01-01T00-00-01-b.json", snapshot(["r1", "r2", "r3"], [1.0, 1.1, 1.2]))
    a = ("2026-01-01T00-00-02-a.json", snapshot(["r1", "r2"], [1.0, 1.1]))
    entries, _ = remote.fold([b, a])
    assert [r["ratio"] for r in entries["t::a"]["runs"]] == [1.0, 1.1, 1.2]
    assert remote.rival_snapshots([b, a], a[0], ["r1", "r2"]) == [b[0]]
    assert remote.rival_snapshots([b, a], b[0], ["r1", "r2", "r3"]) == [a[0]]
