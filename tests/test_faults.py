"""Faults and scale-out: out of memory, library errors, killed saves, foreign machine keys,
pickle-only weights, and pytest-xdist giving the same results as a serial run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pytest_diffaccel import baselines

FAULTS = """
import torch


def pytest_diffaccel_register_techniques(register):
    @register("oom")
    def oom(pipe):
        forward = pipe.unet.forward
        hog = []

        def out_of_memory(*args, **kwargs):
            hog.append(torch.empty(64 << 20, dtype=torch.uint8))  # a real allocation first
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

        pipe.unet.forward = out_of_memory
        return pipe

    @register("bad-quant")
    def bad_quant(pipe):
        raise ValueError("shape '[64, 64, 1, 1]' is invalid for input of size 8192\\nsecond line of the trace")
"""


@pytest.fixture
def project(user_suite: pytest.Pytester) -> pytest.Pytester:
    user_suite.makeconftest(FAULTS)
    return user_suite


def test_out_of_memory_fails_that_test_and_the_next_one_measures(project, run_inner):
    result = run_inner("--diffaccel-techniques=oom,sdpa-math")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*oom: out of memory*peak*OutOfMemoryError: CUDA out of memory*"])
    result.stdout.fnmatch_lines(["sdpa-math *pass*"])


def test_library_error_is_one_line_and_the_rest_go_on(project, run_inner):
    result = run_inner("--diffaccel-techniques=bad-quant,fp32")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1 and outcomes.get("errors", 0) + outcomes.get("failed", 0) == 1
    result.stdout.fnmatch_lines(
        ["*bad-quant: applying bad-quant failed: ValueError: shape '[[]64, 64, 1, 1[]]' is invalid*"]
    )
    assert "second line of the trace" not in result.stdout.str()


def test_baseline_of_another_machine_is_never_compared(project, run_inner, tmp_path):
    folder = tmp_path / "b"
    run_inner(
        "--diffaccel-techniques=fp32",
        f"--diffaccel-baselines={folder}",
        "--diffaccel-save=all",
        "--diffaccel-machine=other-box",
    )
    assert [p.name for p in folder.glob("*.json")] == ["other-box.json"]
    result = run_inner("--diffaccel-techniques=fp32", f"--diffaccel-baselines={folder}")
    result.stdout.fnmatch_lines(["fp32 *no baseline*"])


def test_unknown_schema_is_refused_and_kept(project, run_inner, tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    machine = baselines.machine_key("cpu")
    path = folder / f"{machine}.json"
    path.write_text(json.dumps({"schema": 7, "entries": {}}))
    before = path.read_bytes()
    result = run_inner("--diffaccel-techniques=fp32", f"--diffaccel-baselines={folder}", "--diffaccel-save=all")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown schema version 7*"])
    assert path.read_bytes() == before


def test_pickle_only_weights_are_refused_unless_allowed(project, run_inner, tmp_path):
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    refused = run_inner(f"--diffaccel-model={folder}")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*pickle files only*--diffaccel-allow-pickle*"])
    from pytest_diffaccel.models import model_info

    assert model_info(str(folder), allow_pickle=True).family == "unet"


SAVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pytest_diffaccel import baselines

    path = Path(sys.argv[1])
    big = {"samples": [1.0] * 20000, "median": 1.0}
    i = 0
    while True:  # keeps rewriting until killed
        i += 1
        baselines.save(path, "m", {f"t::{i % 7}": dict(big, median=float(i))}, "all")
        print(i, flush=True)
    """
)


def test_killed_save_leaves_the_old_or_the_new_file(tmp_path):
    path = tmp_path / "m.json"
    baselines.save(path, "m", {"t::keep": {"samples": [1.0], "median": 1.0}}, "all")
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    for delay in (0.05, 0.2, 0.45, 0.8):
        process = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, env=os.environ)
        time.sleep(delay + 0.5)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        entries = baselines.load(path)  # parses: never half written
        assert "t::keep" in entries
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.json.")]
        for name in leftovers:  # a temp file may survive a kill; it is never the baseline
            (tmp_path / name).unlink()


def _summary(path):
    data = json.loads(path.read_text())
    return sorted((b["fullname"], b["extra_info"]["verdict"]) for b in data["benchmarks"]), sorted(
        (s["test"], s["reason"]) for s in data["diffaccel"]["skipped"]
    )


def test_xdist_matches_the_serial_run(user_suite: pytest.Pytester, tmp_path):
    pytester = user_suite
    args = ["-p", "no:cacheprovider", "--diffaccel-rounds=6", "--diffaccel-max-rounds=6",
            "--diffaccel-techniques=fp32,sdpa-math,channels-last,tf32"]  # fmt: skip
    serial = pytester.runpytest_subprocess(
        *args,
        f"--diffaccel-json={tmp_path / 'serial.json'}",
        f"--diffaccel-baselines={tmp_path / 's'}",
        "--diffaccel-save=all",
    )
    parallel = pytester.runpytest_subprocess(
        *args, "-n", "2", f"--diffaccel-json={tmp_path / 'parallel.json'}", f"--diffaccel-baselines={tmp_path / 'p'}",
        "--diffaccel-save=all",
    )  # fmt: skip
    serial.assert_outcomes(passed=3, skipped=1)
    parallel.assert_outcomes(passed=3, skipped=1)
    assert _summary(tmp_path / "serial.json") == _summary(tmp_path / "parallel.json")
    s_entries = baselines.load(next((tmp_path / "s").glob("*.json")))
    p_entries = baselines.load(next((tmp_path / "p").glob("*.json")))
    assert sorted(s_entries) == sorted(p_entries) and len(s_entries) == 3
    parallel.stdout.fnmatch_lines(["*= diffaccel =*", "technique*verdict", "*tf32*skipped*"])


def test_merge_shards(tmp_path):
    from pytest_diffaccel.merge import main

    def shard(name, ids):
        report = {
            "machine_info": {"node": name}, "commit_info": {"id": "abc"}, "datetime": "x", "version": "5",
            "benchmarks": [{"fullname": i, "name": i, "stats": {"median": 1.0}, "extra_info": {}} for i in ids],
            "diffaccel": {"skipped": [{"test": f"{name}::s", "technique": "tf32", "reason": "CUDA"}], "failed": []},
        }  # fmt: skip
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(report))
        return path

    a, b = shard("a", ["t::1", "t::2"]), shard("b", ["t::3"])
    assert main([str(a), str(b), "-o", str(tmp_path / "all.json")]) == 0
    merged = json.loads((tmp_path / "all.json").read_text())
    assert [x["fullname"] for x in merged["benchmarks"]] == ["t::1", "t::2", "t::3"]
    assert [s["file"] for s in merged["diffaccel"]["shards"]] == [str(a), str(b)]
    assert len(merged["diffaccel"]["skipped"]) == 2
    c = shard("c", ["t::1"])
    assert main([str(a), str(c), "-o", str(tmp_path / "x.json")]) == 2  # same test in two shards
    assert main([str(a), str(c), "-o", str(tmp_path / "x.json"), "--prefer-last"]) == 0
