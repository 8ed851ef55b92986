"""A shared baseline store at a URL, driven against a real S3-compatible server on loopback (moto).

The server runs in a process of its own behind a door (tests/loopback.py): closing the door is "the
store went away", and the server's buckets survive it to be inspected. Every store call here is a real
HTTP request through s3fs/aiobotocore, as a user's CI runner makes against S3.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from loopback import Loopback, loopback

from pytest_diffaccel import baselines
from pytest_diffaccel.baselines import BaselineError
from pytest_diffaccel.history import RunUpdate
from pytest_diffaccel.store import FolderStore, open_store

ROOT = Path(__file__).resolve().parent.parent
HARDWARE = {"cpu": {"vendor": "GenuineIntel", "model_name": "test cpu"}, "cores": 2}
UNTIMED = "--diffaccel-report-only=latency,compile-time,cold-start,memory"
CHEAP = ("--diffaccel-steps=2", "--diffaccel-fidelity-seeds=1", "--diffaccel-max-blocks=1")


def environment(hardware: dict | None = None) -> dict:
    from pytest_diffaccel.fingerprint import hardware_hash

    hardware = hardware or HARDWARE
    return {"hash": hardware_hash(hardware), "hardware": hardware, "software": {"torch": "2.13.0"}}


def run(ratio: float, level: bool = False, keep: int = 10, call: str = "c") -> RunUpdate:
    return RunUpdate({"call": call, "samples": [1.0], "median": 1.0}, {"ratio": ratio, "blocks": []}, keep, level)


@pytest.fixture(scope="module")
def server():
    with loopback() as running:
        yield running


@pytest.fixture
def s3(server: Loopback, monkeypatch: pytest.MonkeyPatch) -> Loopback:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    server.open_door()
    return server


@pytest.fixture
def bucket(s3: Loopback) -> str:
    import boto3

    name = f"perf-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket=name)
    return f"s3://{name}/ci"


def objects(url: str) -> list[str]:
    return sorted(contents(url))


def contents(url: str) -> dict[str, bytes]:
    """Every object under ``url``, read straight from the server (boto3, not the code under test)."""
    import boto3

    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    client = boto3.client("s3")
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for o in listing.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


# ----------------------------------------------------------------------------- the store itself


def test_saved_runs_fold_into_the_history_a_baseline_file_holds(bucket, tmp_path):
    env = environment()
    folder, store = FolderStore(tmp_path), open_store(bucket)
    saves = [
        ({"t::a": run(1.10), "t::b": run(0.50)}, "all", ["t::a", "t::b"]),
        ({"t::a": run(1.12)}, "all", ["t::a"]),
        ({"t::a": run(1.40, level=True)}, "all", ["t::a"]),  # an accepted change: a new level
        ({"t::b": run(0.9), "t::d": run(3.0)}, "missing", ["t::d"]),  # b has an entry: kept as it is
        ({"t::a": run(1.41, keep=3), "t::c": run(2.0, call="other")}, "all", ["t::a", "t::c"]),
    ]
    for updates, mode, written in saves:
        for where in (folder, store):
            located = where.locate("cpu-test", env)
            report = where.save(located, "cpu-test", updates, mode, {"t::a": [b"\x89PNG a"]}, env)
            assert report.written == written
    from_file = folder.locate("cpu-test", env).entries
    from_store = open_store(bucket).locate("cpu-test", env)
    assert from_store.matched and from_store.entries == from_file
    assert [r["ratio"] for r in from_store.entries["t::a"]["runs"]] == [1.12, 1.40, 1.41]  # keep=3
    assert [r["level"] for r in from_store.entries["t::a"]["runs"]] == [0, 1, 1]
    assert [r["ratio"] for r in from_store.entries["t::b"]["runs"]] == [0.50]
    # one immutable object per saved run, the thumbnail once, named by its content
    keys = objects(bucket)
    assert len([k for k in keys if "/runs/" in k]) == 5
    assert len([k for k in keys if "/thumbnails/" in k]) == 1


def _save_one(url: str, ratio: float, start: Any, done: Any) -> None:
    store = open_store(url)
    located = store.locate("cpu-test", environment())
    start.wait(timeout=60)  # every saver read the same (empty) history before any of them writes
    report = store.save(located, "cpu-test", {"t::a": run(ratio), f"t::{ratio}": run(ratio)}, "all", None,
                        environment())  # fmt: skip
    done.put(str(report.path))


def test_runners_saving_at_once_lose_no_run(bucket):
    savers = 6
    context = multiprocessing.get_context("fork")
    start, done = context.Barrier(savers), context.Queue()
    ratios = [1.0 + i / 100 for i in range(savers)]
    processes = [context.Process(target=_save_one, args=(bucket, r, start, done)) for r in ratios]
    for process in processes:
        process.start()
    written = [done.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert len(set(written)) == savers  # six objects, none overwrote another
    entries = open_store(bucket).locate("cpu-test", environment()).entries
    assert sorted(r["ratio"] for r in entries["t::a"]["runs"]) == ratios  # every run in the one history
    assert sorted(entries) == sorted(["t::a", *(f"t::{r}" for r in ratios)])


def test_a_store_that_cant_be_reached_is_an_error_naming_it(s3, bucket):
    with pytest.raises(BaselineError, match=r"s3://perf-nowhere/ci: 'perf-nowhere' does not exist"):
        open_store("s3://perf-nowhere/ci").locate("cpu-test", environment())
    s3.close_door()
    with pytest.raises(BaselineError) as error:
        open_store(bucket).locate("cpu-test", environment())
    assert bucket in str(error.value) and "failed" in str(error.value) and "AWS_ENDPOINT_URL" in str(error.value)


def test_an_object_that_is_not_a_saved_run_is_named(s3, bucket):
    import boto3

    env = environment()
    store = open_store(bucket)
    store.save(store.locate("cpu-test", env), "cpu-test", {"t::a": run(1.0)}, "all", None, env)
    name, prefix = bucket.removeprefix("s3://").split("/", 1)
    key = f"{prefix}/cpu-test/{env['hash']}/runs/zz-broken.json"
    boto3.client("s3").put_object(Bucket=name, Key=key, Body=b"{not json")
    with pytest.raises(BaselineError, match=rf"{bucket}/cpu-test/{env['hash']}/runs/zz-broken.json: not valid JSON"):
        open_store(bucket).locate("cpu-test", env)


def test_move_a_folder_into_the_store_and_back(bucket, tmp_path, capsys):
    from pytest_diffaccel.cli import main

    folder = tmp_path / "committed"
    shutil.copytree(ROOT / "baselines", folder)
    before = {h.label: h for h in FolderStore(folder).histories()}
    fingerprinted = [h for h in before.values() if h.environment is not None]
    assert fingerprinted and len(fingerprinted) < len(before)  # the repo holds one file of schema 2 too
    assert main(["move", str(folder), bucket]) == 0
    out = capsys.readouterr().out
    assert "not moved:" in out and "recorded before environment fingerprints" in out
    moved = open_store(bucket).histories()
    assert [(h.machine, h.environment["hash"], h.entries) for h in moved] == [
        (h.machine, h.environment["hash"], {k: baselines.upgraded(v) for k, v in h.entries.items()})
        for h in fingerprinted
    ]
    # the thumbnails the entries name travelled with them
    assert {k.rsplit("/", 1)[1] for k in objects(bucket) if "/thumbnails/" in k} == baselines.named_files(
        fingerprinted[0].entries
    )
    # a second move into the same store would shadow its history: refused, unless --replace
    assert main(["move", str(folder), bucket]) == 2
    assert "already holds a history" in capsys.readouterr().err
    assert main(["move", str(folder), bucket, "--replace"]) == 0
    assert [h.entries for h in open_store(bucket).histories()] == [h.entries for h in moved]
    # the history command reads the store as it reads a folder: the same table, and the charts
    assert main(["history", str(folder / Path(fingerprinted[0].label).name)]) == 0
    from_folder = capsys.readouterr().out
    assert main(["history", bucket, "--chart", str(tmp_path / "charts.html")]) == 0
    from_store = capsys.readouterr().out
    table = [line for line in from_store.splitlines() if line.startswith("test_")]
    assert len(table) == len(fingerprinted[0].entries) and table == [
        line for line in from_folder.splitlines() if line.startswith("test_")
    ]
    assert (tmp_path / "charts.html").read_text().count('alt="history of') == len(table)
    # and back into an empty folder: the same file, byte for byte, with its thumbnails
    back = tmp_path / "back"
    assert main(["move", bucket, str(back)]) == 0
    for stored in fingerprinted:
        original = Path(stored.label)
        assert json.loads((back / original.name).read_text()) == json.loads(original.read_text())
    assert sorted(p.name for p in (back / "thumbnails").iterdir()) == sorted(baselines.named_files(
        fingerprinted[0].entries))  # fmt: skip


def test_compacting_keeps_every_history_and_a_run_saved_meanwhile(bucket, capsys, monkeypatch):
    from pytest_diffaccel import remote
    from pytest_diffaccel.cli import main

    env = environment()
    store = open_store(bucket)
    for ratio in (1.0, 1.1, 1.2):
        located = store.locate("cpu-test", env)
        store.save(located, "cpu-test", {"t::a": run(ratio), "t::b": run(ratio)}, "all", None, env)
    before = open_store(bucket).locate("cpu-test", env).entries
    # a runner saves while the compaction runs: after it folded the history, before it deletes
    written = remote.RemoteStore.write_snapshot

    def snapshot_then_a_saver(self, *args, **kwargs):
        url = written(self, *args, **kwargs)
        other = open_store(bucket)
        other.save(other.locate("cpu-test", env), "cpu-test", {"t::a": run(1.3)}, "all", None, env)
        return url

    monkeypatch.setattr(remote.RemoteStore, "write_snapshot", snapshot_then_a_saver)
    assert main(["compact", bucket]) == 0
    assert f"compacted {bucket}/cpu-test/{env['hash']}: 3 objects -> 1 snapshot (2 tests)" in capsys.readouterr().out
    assert len([k for k in objects(bucket) if "/runs/" in k]) == 2  # the snapshot and the run saved meanwhile
    after = open_store(bucket).locate("cpu-test", env).entries
    assert after["t::b"] == before["t::b"]
    assert [r["ratio"] for r in after["t::a"]["runs"]] == [1.0, 1.1, 1.2, 1.3]
    monkeypatch.undo()
    assert main(["compact", "not-a-url"]) == 2


def _two_compactions_racing_a_save(url: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """#30 item 3: A reads r1, r2; r3 is saved; B compacts r1-r3 and deletes them; then A writes its snapshot
    (r1 and r2 only) and goes on. Returns what A printed."""
    from pytest_diffaccel import remote

    env = environment()
    for ratio in (1.0, 1.1):
        store = open_store(url)
        store.save(store.locate("cpu-test", env), "cpu-test", {"t::a": run(ratio)}, "all", None, env)
    written = remote.RemoteStore.write_snapshot
    inside = []

    def b_runs_before_a_writes(self, *args, **kwargs):
        if not inside:
            inside.append(True)
            saver = open_store(url)
            saver.save(saver.locate("cpu-test", env), "cpu-test", {"t::a": run(1.2)}, "all", None, env)
            assert any(line.startswith("compacted ") for line in open_store(url).compact())  # B, whole
        return written(self, *args, **kwargs)

    with monkeypatch.context() as patched:  # (the s3 fixture's credentials stay patched)
        patched.setattr(remote.RemoteStore, "write_snapshot", b_runs_before_a_writes)
        lines = open_store(url).compact()  # A
    entries = open_store(url).locate("cpu-test", env).entries
    assert [r["ratio"] for r in entries["t::a"]["runs"]] == [1.0, 1.1, 1.2]  # r3 is not lost
    return lines


def test_two_compactions_racing_a_save_lose_no_run_on_s3(bucket, monkeypatch):
    lines = _two_compactions_racing_a_save(bucket, monkeypatch)
    assert len(lines) == 1 and lines[0].startswith("not compacted ") and "another compaction ran" in lines[0]
    assert len([k for k in objects(bucket) if "/runs/" in k]) == 1  # B's snapshot only: A took its own back


def test_two_compactions_racing_a_save_lose_no_run_on_a_shared_mount(tmp_path, monkeypatch):
    lines = _two_compactions_racing_a_save(f"file://{tmp_path}/mount", monkeypatch)  # no traceback either
    assert "another compaction ran at the same time" in lines[0]
    # objects another compaction deleted first: deleting them again is no error (it was a traceback here)
    store = open_store(f"file://{tmp_path}/mount")
    runs = next((tmp_path / "mount").rglob("runs"))
    kept = sorted(p.name for p in runs.iterdir())
    store._delete(str(runs), ["gone-1.json", "gone-2.json"])
    assert sorted(p.name for p in runs.iterdir()) == kept


def test_a_file_url_is_a_store_on_a_shared_mount(tmp_path):
    env = environment()
    url = f"file://{tmp_path}/mount/diffaccel"
    for ratio in (1.0, 1.1):
        store = open_store(url)
        store.save(store.locate("cpu-test", env), "cpu-test", {"t::a": run(ratio)}, "all", None, env)
    entries = open_store(url).locate("cpu-test", env).entries
    assert [r["ratio"] for r in entries["t::a"]["runs"]] == [1.0, 1.1]
    saved = sorted((tmp_path / "mount" / "diffaccel" / "cpu-test" / env["hash"] / "runs").iterdir())
    assert len(saved) == 2 and not any(p.name.startswith(".") for p in saved)  # atomic: no temp file left


def test_a_bad_store_url_is_a_usage_error(pytester):
    pytester.makepyfile(test_a="def test_a(): pass")
    result = pytester.runpytest_inprocess("--diffaccel-baselines=s3://", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--diffaccel-baselines*'s3://' is not a store URL*"])


# ----------------------------------------------------------------------------- real pytest runs


@pytest.fixture
def suite(user_suite: pytest.Pytester, s3: Loopback) -> pytest.Pytester:
    return user_suite


def test_two_runners_save_at_once_and_the_next_run_is_judged_against_both(suite, bucket, untimed):
    args = ("-p", "no:cacheprovider", "--diffaccel-rounds=3", "--diffaccel-max-rounds=3", "--diffaccel-warmup=1",
            *CHEAP, "--diffaccel-techniques=fp32", untimed, f"--diffaccel-baselines={bucket}")  # fmt: skip
    command = [*suite._getpytestargs(), *args, "--diffaccel-save=all"]
    runners = [suite.popen(command, stdin=subprocess.DEVNULL) for _ in range(2)]
    outputs = [runner.communicate(timeout=300) for runner in runners]
    for runner, (out, err) in zip(runners, outputs, strict=True):
        assert runner.returncode == 0, (out.decode()[-3000:], err.decode()[-3000:])
        assert f"baselines: 1 written to {bucket}/cpu-" in out.decode()
    saved = [k for k in objects(bucket) if "/runs/" in k]
    assert len(saved) == 2
    judged = suite.runpytest_inprocess(*args)
    judged.assert_outcomes(passed=1)
    judged.stdout.fnmatch_lines(
        [f"diffaccel: baselines: {bucket}/cpu-*/* (this environment, 1 tests)", "fp32 *2 runs*"]
    )


def test_an_unreachable_store_stops_the_run_before_any_test(suite, s3, bucket):
    s3.close_door()
    result = suite.runpytest_inprocess("--diffaccel-techniques=fp32", f"--diffaccel-baselines={bucket}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*baseline store {bucket}: * failed (*Could not connect*"])
    assert "passed" not in result.stdout.str()


def test_a_store_that_goes_away_mid_run_keeps_its_history_whole(suite, s3, bucket, untimed, monkeypatch):
    args = (*CHEAP, "--diffaccel-techniques=fp32", untimed, f"--diffaccel-baselines={bucket}",
            "--diffaccel-save=all", "-p", "no:cacheprovider", "--diffaccel-rounds=3",
            "--diffaccel-max-rounds=3")  # fmt: skip
    suite.runpytest_inprocess(*args).assert_outcomes(passed=1)
    before = contents(bucket)
    history = open_store(bucket).locate(*_located_key(bucket)).entries
    # the door closes once the test has run: the run ends, and its save finds the store gone
    suite.makeconftest(
        """
        import os, signal
        def pytest_runtest_logreport(report):
            if report.when == "call":
                os.kill(int(os.environ["DOOR_PID"]), signal.SIGKILL)
        """
    )
    assert s3.door is not None
    monkeypatch.setenv("DOOR_PID", str(s3.door.pid))
    cut = suite.runpytest_inprocess(*args)
    assert cut.ret == pytest.ExitCode.USAGE_ERROR
    cut.assert_outcomes(passed=1)
    cut.stdout.fnmatch_lines([f"baselines NOT saved: baseline store {bucket}: * failed*"])
    s3.open_door()
    assert contents(bucket) == before  # nothing lost, nothing half-written
    assert open_store(bucket).locate(*_located_key(bucket)).entries == history


def _located_key(url: str) -> tuple[str, dict]:
    """The machine key and the environment of the one history of ``url``."""
    (history,) = open_store(url).histories()
    assert history.environment is not None
    return history.machine, history.environment
