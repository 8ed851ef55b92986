"""Recording a machine and accepting an intended change of picture, end to end.

``--diffaccel-save-runs N`` streams each run's finished tests and ends each run in one line; its
calibration runs (2..N, A/A runs) report their timing gates and never fail on them, their picture gates
still judge; the last line and the exit status agree. ``--diffaccel-accept=fidelity`` makes a moved
picture the new baseline; a broken one never. Real pytest sessions on tiny-sd; the slowdown is real
extra UNet work, never sleep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_diffaccel import calibration, fidelity, verdict

PROJECT = """
import os

from diffusers import UNet2DConditionModel

_FORWARD = UNet2DConditionModel.forward


def _forward(self, *args, **kwargs):
    # DIFFACCEL_TEST_SLOW_IN_RUN: in that calibration run (PYTEST_DIFFACCEL_RUN=k/N), every UNet (fp32
    # included) does its forward four times: a whole machine slower in one run, for real (against one saved
    # run, the assumed spread worth 4 runs, only beyond about 1.8x is significant)
    if os.environ.get("DIFFACCEL_TEST_SLOW_IN_RUN") == os.environ.get("PYTEST_DIFFACCEL_RUN", "-"):
        for _ in range(3):
            _FORWARD(self, *args, **kwargs)
    return _FORWARD(self, *args, **kwargs)


def pytest_configure(config):
    UNet2DConditionModel.forward = _forward


def pytest_unconfigure(config):
    UNet2DConditionModel.forward = _FORWARD


def pytest_diffaccel_register_techniques(register):
    @register("repainted", min_ssim=0.90)
    def repainted(pipe):
        # DIFFACCEL_TEST_REPAINT: the scheduler's sigmas scaled by 1.05, an intended new look (a new scheduler)
        if os.environ.get("DIFFACCEL_TEST_REPAINT") == "1":
            scheduler = pipe.scheduler
            set_timesteps = scheduler.set_timesteps

            def nudged(*args, **kwargs):
                set_timesteps(*args, **kwargs)
                scheduler.sigmas = scheduler.sigmas * 1.05

            scheduler.set_timesteps = nudged
        # DIFFACCEL_TEST_BREAK_IN_RUN: in that calibration run, the UNet's prediction turns to NaN
        if os.environ.get("DIFFACCEL_TEST_BREAK_IN_RUN") == os.environ.get("PYTEST_DIFFACCEL_RUN", "-"):
            forward = pipe.unet.forward

            def broken(*args, **kwargs):
                out = forward(*args, **kwargs)
                if isinstance(out, tuple):
                    return (out[0] * float("nan"), *out[1:])
                out.sample = out.sample * float("nan")
                return out

            pipe.unet.forward = broken
        return pipe
"""

STEPS = "--diffaccel-steps=2"


@pytest.fixture
def project(user_suite: pytest.Pytester) -> pytest.Pytester:
    user_suite.makeconftest(PROJECT)
    return user_suite


def entries(folder: Path) -> dict:
    (path,) = folder.glob("*.json")
    return json.loads(path.read_text())["entries"]


def last_diffaccel_line(result: pytest.RunResult) -> str:
    """The last line before pytest's own summary line."""
    return [line for line in result.stdout.lines if line.strip() and not line.startswith("=")][-1]


def test_recording_streams_each_run_and_a_calibration_runs_timing_noise_does_not_fail_it(
    project, run_inner, monkeypatch, tmp_path
):
    folder = tmp_path / "b"
    monkeypatch.setenv("DIFFACCEL_TEST_SLOW_IN_RUN", "2/3")  # run 2: fp32 ~3x slower vs the 1-run history
    result = run_inner(
        "--diffaccel-techniques=fp32", f"--diffaccel-baselines={folder}", STEPS, "--diffaccel-fidelity-seeds=1",
        "--diffaccel-save=all", "--diffaccel-save-runs=3",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(
        [
            "diffaccel: recording 3 runs of 1 test (test_speed.py::test_acceleration?fp32?) into *.json: "
            "run 1/3 (this process) took *; runs 2-3 follow, one fresh process each (about * more)*",
            "diffaccel: recording run 2/3 in a fresh process ...",
            "diffaccel:   run 2/3 ?1/1? test_speed.py::test_acceleration?fp32? PASSED (*)",
            "diffaccel: run 2/3: 1 passed* in *; saved 1 to *.json; timing reported only (calibration run): "
            "fp32: latency*",
            "diffaccel:   run 3/3 ?1/1? test_speed.py::test_acceleration?fp32? PASSED (*)",
            "diffaccel: run 3/3: 1 passed* in *; saved 1 to *.json*",
            "recording: 3 runs into *.json, 1 test (test_speed.py::test_acceleration?fp32?)",
            "  run 1/3: 1 passed* in *; saved 1 to *.json",
            "  run 2/3: 1 passed* in *; timing reported only (calibration run): fp32: latency*",
        ]
    )
    assert "FAILED" not in result.stdout.str()
    assert last_diffaccel_line(result).startswith("recorded 3 runs in ")
    assert last_diffaccel_line(result).endswith(": none failed; exit status 0")
    assert result.stdout.lines[-1].startswith("=") and " 1 passed in " in result.stdout.lines[-1]
    (entry,) = entries(folder).values()
    runs = entry["runs"]
    assert len(runs) == 3 and {r["level"] for r in runs} == {0}  # A/A runs: one level
    assert runs[1]["median"] > 1.3 * runs[0]["median"]  # run 2 was really slower, and still saved


def test_a_picture_broken_in_a_calibration_run_names_the_test_and_the_gate_and_fails(
    project, run_inner, monkeypatch, tmp_path
):
    folder = tmp_path / "b"
    monkeypatch.setenv("DIFFACCEL_TEST_BREAK_IN_RUN", "2/2")
    result = run_inner(
        "--diffaccel-techniques=repainted", f"--diffaccel-baselines={folder}", STEPS, "--diffaccel-fidelity-seeds=1",
        "--diffaccel-save=all", "--diffaccel-save-runs=2",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "diffaccel:   run 2/2 ?1/1? test_speed.py::test_acceleration?repainted? FAILED (*)",
            "diffaccel: run 2/2: 1 failed* in *; FAILED test_speed.py::test_acceleration?repainted? (broken gate)",
            "diffaccel:   test_speed.py::test_acceleration?repainted?: broken gate failed: broken image: *",
        ]
    )
    assert last_diffaccel_line(result) == (
        f"recording FAILED (2 runs in {last_diffaccel_line(result).split(' runs in ')[1].split(')')[0]}): "
        "run 2/2: test_speed.py::test_acceleration[repainted] failed the broken gate; exit status 1"
    )
    result.stdout.fnmatch_lines(["=* 1 passed, 1 failed (calibration run 2/2) in *"])
    (entry,) = entries(folder).values()
    assert len(entry["runs"]) == 1  # the broken run was not saved


def test_an_intended_new_picture_is_accepted_with_save_and_accept(project, run_inner, untimed, monkeypatch, tmp_path):
    folder = tmp_path / "b"
    args = ("--diffaccel-techniques=repainted", f"--diffaccel-baselines={folder}", STEPS, untimed)

    alone = run_inner(*args, "--diffaccel-accept=fidelity")
    assert alone.ret == pytest.ExitCode.USAGE_ERROR
    alone.stderr.fnmatch_lines(["*--diffaccel-accept: *needs --diffaccel-save all*"])

    run_inner(*args, "--diffaccel-save=all").assert_outcomes(passed=1)
    (before,) = entries(folder).values()

    monkeypatch.setenv("DIFFACCEL_TEST_REPAINT", "1")  # the intended change: a new look
    moved = run_inner(*args)
    moved.assert_outcomes(failed=1)
    moved.stdout.fnmatch_lines(["*fidelity regression gate failed: SSIM 1.0000 -> 0.9* vs its baseline*"])

    accepted = run_inner(*args, "--diffaccel-save=all", "--diffaccel-accept=fidelity")
    accepted.assert_outcomes(passed=1)
    accepted.stdout.fnmatch_lines(
        [
            "repainted * pass (*new picture accepted)",
            "baselines: 1 written to *",
            "accepted new picture for repainted: SSIM 1.0000 -> 0.9* vs its baseline; "
            "image vs its baseline image SSIM 0.9*",
        ]
    )
    (after,) = entries(folder).values()
    assert after["fidelity"]["images"] != before["fidelity"]["images"]  # the new picture is the baseline
    assert after["fidelity"]["ssim"] < before["fidelity"]["ssim"]
    assert len(after["runs"]) == 2  # the latency history is kept

    run_inner(*args).assert_outcomes(passed=1)  # judged against the new picture


# ----------------------------------------------------------------------------- pure pieces


def test_accepting_passes_a_moved_picture_but_never_a_broken_or_a_floor_failure():
    tight = fidelity.tolerance(None, same_stack=True)
    moved = fidelity.Regression(1.0, 0.97, 0.95, tight)
    base = {"broken": None, "ssim": 0.97, "psnr": 30.0, "min_ssim": 0.9, "regression": moved}

    failing = verdict.decide(verdict.Inputs(**base))
    assert [g.name for g in failing.failures] == ["fidelity regression"]

    accepted = verdict.decide(verdict.Inputs(**base, accept=("fidelity",)))
    assert not accepted.failed and accepted.accepted is not None
    assert accepted.accepted.message == verdict.ACCEPTED + moved.describe()
    assert accepted.headline == "pass (new picture accepted)"

    below_floor = verdict.decide(verdict.Inputs(**{**base, "min_ssim": 0.99}, accept=("fidelity",)))
    assert [g.name for g in below_floor.failures] == ["fidelity"]
    broken = verdict.decide(verdict.Inputs(**{**base, "broken": "NaN/Inf"}, accept=("fidelity",)))
    assert [g.name for g in broken.failures] == ["broken"]

    unmoved = verdict.decide(verdict.Inputs(**{**base, "regression": fidelity.Regression(1.0, 1.0, 1.0, tight)}))
    assert unmoved.accepted is None  # nothing moved: nothing to accept


def test_calibration_runs_report_the_timing_gates_and_keep_those_the_command_reported():
    args = calibration.child_args(["a.py", "--diffaccel-save=all"], ("fidelity regression", "latency"))
    assert args == [
        "a.py",
        "--diffaccel-save=all",
        "--diffaccel-report-only=fidelity-regression,latency,compile-time,cold-start,memory",
        "--verbosity=1",
    ]


def test_a_calibration_runs_output_is_read_into_one_line(tmp_path):
    lines = [
        "collected 3 items",
        "test_other.py::test_plain FAILED                                   [ 33%]",
        "test_speed.py::test_acceleration[fp32] PASSED                      [ 66%]",
        "test_speed.py::test_acceleration[bf16] FAILED                      [100%]",
        f"baselines: 1 written to {tmp_path}/baselines/cpu.json",
        calibration.RESULT
        + json.dumps(
            {
                "failed": [["test_speed.py::test_acceleration[bf16]", "fidelity", "SSIM 0.8 below 0.95"]],
                "reported": [["fp32", ["latency"]]],
            }
        ),
        "FAILED test_other.py::test_plain - AssertionError: assert 1 == 2",
        "FAILED test_speed.py::test_acceleration[bf16] - diffaccel verdict for bf16: FAIL fidelity",
        "===================== 2 failed, 1 passed in 12.34s =====================",
    ]
    run = calibration.parse_run(2, 3, lines, 1, 312.0, tmp_path)
    assert run.line() == (
        "run 2/3: 2 failed, 1 passed in 5 min 12 s; saved 1 to baselines/cpu.json; "
        "timing reported only (calibration run): fp32: latency; "
        "FAILED test_speed.py::test_acceleration[bf16] (fidelity gate), "
        "test_other.py::test_plain (AssertionError: assert 1 == 2)"
    )
    recording = calibration.Recording(3, "baselines/cpu.json", "3 tests", runs=[run], seconds=900.0, status=1)
    assert recording.last_line() == (
        "recording FAILED (3 runs in 15 min 0 s): run 2/3: test_speed.py::test_acceleration[bf16] failed the "
        "fidelity gate, test_other.py::test_plain failed: AssertionError: assert 1 == 2; exit status 1"
    )
    crashed = calibration.parse_run(3, 3, ["ERROR: something went wrong", ""], 4, 2.0, tmp_path)
    assert (
        crashed.failed
        and crashed.line() == "run 3/3: no test summary in 2.0 s; exit status 4: ERROR: something went wrong"
    )
    xdist = calibration.FINISHED.match("[gw1] [ 50%] PASSED test_speed.py::test_acceleration[fp32] ")
    assert xdist is not None and xdist.group("xid") == "test_speed.py::test_acceleration[fp32]"


def test_collecting_a_recording_command_records_nothing(project, run_inner, tmp_path):
    folder = tmp_path / "b"
    collected = run_inner(
        "--diffaccel-techniques=fp32", f"--diffaccel-baselines={folder}", "--diffaccel-save=all",
        "--diffaccel-save-runs=3", "--collect-only",
    )  # fmt: skip
    assert collected.ret == pytest.ExitCode.OK
    assert "recording run 2/3" not in collected.stdout.str()
    assert not folder.exists() or not any(folder.iterdir())
