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
from test_gates import FAULTS as GATE_FAULTS

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
    import hashlib
    import sys
    from pathlib import Path
    from pytest_diffaccel import baselines

    def digest(data):
        return hashlib.sha256(data).hexdigest()

    write_atomic = baselines.write_atomic

    def announced(path, text):  # says which version it is about to write, then writes it
        print("writing", digest(text.encode("utf-8")), flush=True)
        write_atomic(path, text)

    baselines.write_atomic = announced
    path = Path(sys.argv[1])
    print("old", digest(path.read_bytes()), flush=True)
    big = {"samples": [1.0] * 20000, "median": 1.0}
    i = 0
    while True:  # keeps rewriting until killed; each finished save reports the file it left
        i += 1
        baselines.save(path, "m", {f"t::{i % 7}": dict(big, median=float(i))}, "all")
        print("saved", digest(path.read_bytes()), flush=True)
    """
)


def _saver_lines(lines):
    """(the file's version before the saver started, the versions its finished saves left, the
    version it announced last): parsed from the saver's stdout."""
    old, saved, announced = None, [], None
    for line in lines:
        kind, digest = line.split()
        if kind == "old":
            old = digest
        elif kind == "writing":
            announced = digest
        else:
            assert kind == "saved" and digest == announced, line  # a save leaves what it announced
            saved.append(digest)
    return old, saved, announced


def test_killed_save_leaves_the_old_or_the_new_file(tmp_path):
    """SIGKILL a process that keeps saving a large baseline file, right after it announces a write,
    and after several finished saves: the file is the last finished version or the one being
    written, byte for byte, never a mix; a temporary file may be left behind, never the baseline."""
    import hashlib

    path = tmp_path / "m.json"
    baselines.save(path, "m", {"t::keep": {"samples": [1.0], "median": 1.0}}, "all")
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    killed_mid_write = 0
    for delay in (0.0, 0.0, 0.001, 0.003, 0.01):  # after the announcement of a write
        process = subprocess.Popen(
            [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=os.environ
        )
        assert process.stdout is not None
        lines: list[str] = []
        while True:  # wait for 3 finished saves and the announcement of the next write
            line = process.stdout.readline()
            assert line, f"the saver stopped on its own (status {process.wait(30)}) after {lines}"
            lines.append(line)
            _, saved, _ = _saver_lines(lines)
            if len(saved) >= 3 and line.startswith("writing"):
                break
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL  # killed, not finished
        lines += process.stdout.read().splitlines(keepends=True)  # what it said before it died
        process.stdout.close()
        old, saved, announced = _saver_lines(lines)
        assert old is not None and len(saved) >= 3
        finished = lines[-1].startswith("saved")
        killed_mid_write += not finished
        allowed = {saved[-1]} if finished else {saved[-1], announced}  # the last finished or the next one
        assert hashlib.sha256(path.read_bytes()).hexdigest() in allowed
        entries = baselines.load(path)  # parses, and the entry no save touched is still there
        assert "t::keep" in entries and set(entries) <= {"t::keep", *(f"t::{i}" for i in range(7))}
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".m.json.")]
        for name in leftovers:  # a temp file may survive a kill; it is never the baseline
            (tmp_path / name).unlink()
    assert killed_mid_write, "no kill landed between the announcement of a write and its end"


def _report(path):
    """{test id: extra_info} of a JSON report, and its skipped tests with their reasons."""
    data = json.loads(path.read_text())
    results = {bench["fullname"]: bench["extra_info"] for bench in data["benchmarks"]}
    return results, sorted((s["test"], s["reason"]) for s in data["diffaccel"]["skipped"])


def test_xdist_matches_the_serial_run(user_suite: pytest.Pytester, untimed: str, tmp_path):
    """A serial run records the baselines; a run on two pytest-xdist workers against a copy of them gives
    the same tests, skips and verdicts: the same broken picture fails the same gate with the same message,
    the same pictures score the same SSIM; every other result is compared with the run the serial one
    recorded (the workers read its numbers) and judged, and every entry gets the workers' run appended."""
    import shutil

    pytester = user_suite
    pytester.makeconftest(GATE_FAULTS)  # the faults of test_gates.py: black-image among them
    # The timing gates are reported only, and max-slowdown is wide: this is about wiring (every result compared
    # and judged, on the workers too), and a shared CPU's speed of the moment must not fail it nor leave it
    # undecided (3 rounds of one block against one run).
    args = ["-p", "no:cacheprovider", "--diffaccel-rounds=3", "--diffaccel-max-rounds=3", "--diffaccel-warmup=1",
            "--diffaccel-steps=2", "--diffaccel-fidelity-seeds=1", "--diffaccel-max-blocks=1",
            "--diffaccel-max-slowdown=50%", "--diffaccel-techniques=fp32,sdpa-math,channels-last,tf32,black-image",
            untimed, "--diffaccel-save=all"]  # fmt: skip
    recorded = tmp_path / "recorded"
    serial = pytester.runpytest_subprocess(
        *args, f"--diffaccel-baselines={recorded}", f"--diffaccel-json={tmp_path / 'serial.json'}"
    )
    serial.assert_outcomes(passed=3, failed=1, skipped=1)
    serial.stdout.fnmatch_lines(["fp32 *no baseline*"])
    shutil.copytree(recorded, tmp_path / "p")
    parallel = pytester.runpytest_subprocess(
        *args, "-n", "2", f"--diffaccel-json={tmp_path / 'parallel.json'}", f"--diffaccel-baselines={tmp_path / 'p'}"
    )  # fmt: skip
    parallel.assert_outcomes(passed=3, failed=1, skipped=1)
    parallel.stdout.fnmatch_lines(["*= diffaccel =*", "technique*verdict", "*tf32*skipped*"])

    s_results, s_skipped = _report(tmp_path / "serial.json")
    p_results, p_skipped = _report(tmp_path / "parallel.json")
    assert {t: r["technique"] for t, r in p_results.items()} == {t: r["technique"] for t, r in s_results.items()}
    assert sorted(r["technique"] for r in p_results.values()) == ["black-image", "channels-last", "fp32", "sdpa-math"]
    assert p_skipped == s_skipped and len(p_skipped) == 1 and "needs CUDA" in p_skipped[0][1]
    [base] = recorded.glob("*.json")
    [p_file] = (tmp_path / "p").glob("*.json")
    assert p_file.name == base.name
    stored, updated = baselines.load(base), baselines.load(p_file)
    broken = "test_speed.py::test_acceleration[black-image]"
    assert sorted(stored) == sorted(updated) == sorted(set(s_results) - {broken})  # a broken picture is never saved
    for test_id, serial_result in s_results.items():
        result = p_results[test_id]
        if test_id == broken:  # the same verdict, for the same reason, on a worker
            assert result["verdict"] == serial_result["verdict"] and result["verdict"].startswith("FAIL broken")
            assert [g for g in result["gates"] if not g["passed"]] == [
                g for g in serial_result["gates"] if not g["passed"]
            ]
            continue
        assert serial_result["verdict"] == "pass (no baseline)", (test_id, serial_result)
        # judged against the serial run's history: a pass, or (a one-run history on a busy CPU) undecided
        assert result["verdict"].startswith("pass") or result["verdict"] == "undecided", (test_id, result)
        assert "no baseline" not in result["verdict"], (test_id, result)
        assert result["ssim"] == pytest.approx(serial_result["ssim"], abs=1e-4), test_id
        gates = {g["gate"]: g for g in result["gates"]}
        assert gates["latency"]["judged"] and gates["memory"]["judged"], (test_id, gates)
        assert gates["fidelity regression"]["judged"], (test_id, gates)
        assert all(g["passed"] for name, g in gates.items() if name != "latency"), (test_id, gates)
        # the worker judged against the serial run's own numbers, and appended its run to them
        figure = result["baseline"]["judged_on"]
        (run,) = stored[test_id]["runs"]
        assert result["baseline"]["history"] == pytest.approx([run[figure]]), (test_id, result["baseline"])
        assert updated[test_id]["runs"][0] == run and len(updated[test_id]["runs"]) == 2, test_id


def test_merge_shards(tmp_path, capsys):
    from pytest_diffaccel.merge import main

    def shard(name, ids, median=1.0):
        report = {
            "machine_info": {"node": name}, "commit_info": {"id": "abc"}, "datetime": "x", "version": "5",
            "benchmarks": [{"fullname": i, "name": i, "stats": {"median": median}, "extra_info": {"shard": name}}
                           for i in ids],
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
    c = shard("c", ["t::1"], median=2.0)
    # the same test in two shards, without --prefer-last: an error naming both, and no output
    assert main([str(a), str(c), "-o", str(tmp_path / "x.json")]) == 2
    error = capsys.readouterr().err
    assert "t::1" in error and str(a) in error and str(c) in error and "--prefer-last" in error
    assert not (tmp_path / "x.json").exists()
    # with it: the last shard's entry wins, the others stay, every shard is listed
    assert main([str(a), str(c), "-o", str(tmp_path / "x.json"), "--prefer-last"]) == 0
    merged = json.loads((tmp_path / "x.json").read_text())
    by_id = {x["fullname"]: x for x in merged["benchmarks"]}
    assert sorted(by_id) == ["t::1", "t::2"] and len(merged["benchmarks"]) == 2
    assert by_id["t::1"]["stats"]["median"] == 2.0 and by_id["t::1"]["extra_info"]["shard"] == "c"
    assert by_id["t::2"]["extra_info"]["shard"] == "a"
    assert [s["file"] for s in merged["diffaccel"]["shards"]] == [str(a), str(c)]
    # and the order of the inputs decides: c then a keeps a's
    assert main([str(c), str(a), "-o", str(tmp_path / "y.json"), "--prefer-last"]) == 0
    merged = json.loads((tmp_path / "y.json").read_text())
    by_id = {x["fullname"]: x for x in merged["benchmarks"]}
    assert by_id["t::1"]["stats"]["median"] == 1.0 and by_id["t::1"]["extra_info"]["shard"] == "a"
