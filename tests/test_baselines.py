"""Baseline files: atomic, merged, locked, never truncated, corrupt files named and left alone."""

import json
import multiprocessing
import os

import pytest

from pytest_diffaccel import baselines


def entry(median=1.0):
    return {"samples": [median, median * 1.01], "median": median}


def test_missing_file_is_empty(tmp_path):
    assert baselines.load(tmp_path / "none.json") == {}


def test_save_merges_and_never_drops_entries_of_tests_that_did_not_run(tmp_path):
    path = tmp_path / "m.json"
    baselines.save(path, "m", {"t::a": entry(1.0), "t::b": entry(2.0)}, "all")
    report = baselines.save(path, "m", {"t::a": entry(3.0)}, "all")
    assert report.written == ["t::a"]
    data = baselines.load(path)
    assert data["t::a"]["median"] == 3.0 and data["t::b"]["median"] == 2.0


def test_missing_mode_only_adds(tmp_path):
    path = tmp_path / "m.json"
    baselines.save(path, "m", {"t::a": entry(1.0)}, "all")
    report = baselines.save(path, "m", {"t::a": entry(9.0), "t::c": entry(4.0)}, "missing")
    assert report.kept == ["t::a"] and report.written == ["t::c"]
    assert baselines.load(path)["t::a"]["median"] == 1.0


def test_file_is_stable_for_git(tmp_path):
    path = tmp_path / "m.json"
    baselines.save(path, "m", {"t::b": entry(2.0), "t::a": entry(1.0)}, "all")
    text = path.read_text()
    assert text.endswith("\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert json.loads(text)["schema"] == baselines.SCHEMA


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "not a JSON object"),
        (json.dumps({"schema": 99, "entries": {}}), "unknown schema version 99"),
        (json.dumps({"schema": 1, "entries": {"t": {"samples": "x"}}}), "'samples' must be"),
    ],
)
def test_corrupt_file_is_named_refused_and_left_byte_for_byte(tmp_path, content, message):
    path = tmp_path / "m.json"
    path.write_text(content)
    before = path.read_bytes()
    with pytest.raises(baselines.BaselineError, match=message) as error:
        baselines.load(path)
    assert str(path) in str(error.value)
    with pytest.raises(baselines.BaselineError):
        baselines.save(path, "m", {"t::a": entry()}, "all")
    assert path.read_bytes() == before


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "m.json"
    baselines.write_atomic(path, "one\n")
    baselines.write_atomic(path, "two\n")
    assert path.read_text() == "two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def _saver(path, name, count):
    for i in range(count):
        baselines.save(path, "m", {f"{name}::{i}": entry(1.0 + i)}, "all")


def test_concurrent_savers_keep_every_entry(tmp_path):
    path = tmp_path / "m.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_saver, args=(path, f"p{k}", 15)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(baselines.load(path)) == 45


def test_machine_key():
    assert baselines.machine_key("cuda", "NVIDIA H100 80GB HBM3") == "cuda-nvidia-h100-80gb-hbm3"
    assert baselines.machine_key("cpu").startswith("cpu-")
    assert baselines.machine_key("cpu", override="My Runner #1") == "my-runner-1"
    assert os.sep not in baselines.machine_key("cpu")
