"""Fidelity vs the technique's own baseline: SSIM then and now, the picture then and now, a tolerance
measured from the fp32 reference's own drift; thumbnails stored beside the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pytest_diffaccel import fidelity, thumbnails

NUDGE = """
import os


def pytest_diffaccel_register_techniques(register):
    @register("nudged", min_ssim=0.90)
    def nudged(pipe):
        # DIFFACCEL_TEST_NUDGE: the scheduler's sigmas scaled by 1.05 ("1") or by the factor given, a setting
        # nudged by an upgrade
        nudge = os.environ.get("DIFFACCEL_TEST_NUDGE")
        if nudge:
            factor = 1.05 if nudge == "1" else float(nudge)
            scheduler = pipe.scheduler
            set_timesteps = scheduler.set_timesteps

            def nudged_timesteps(*args, **kwargs):
                set_timesteps(*args, **kwargs)
                scheduler.sigmas = scheduler.sigmas * factor

            scheduler.set_timesteps = nudged_timesteps
        return pipe
"""


@pytest.fixture
def project(user_suite: pytest.Pytester) -> pytest.Pytester:
    user_suite.makeconftest(NUDGE)
    return user_suite


# one recording for the module (conftest.recorded), with two fidelity seeds: the baseline stores each seed's picture
SEEDS = "--diffaccel-fidelity-seeds=2"


def test_a_nudged_exact_technique_fails_against_its_baseline_and_the_unchanged_rerun_passes(
    project, run_inner, recorded, untimed, monkeypatch
):
    folder = recorded("--diffaccel-techniques", "fp32,nudged", untimed, SEEDS)
    args = ("--diffaccel-techniques", "fp32,nudged", f"--diffaccel-baselines={folder}", untimed, SEEDS)
    entries = json.loads(next(folder.glob("cpu-*.json")).read_text())["entries"]
    stored = entries["test_speed.py::test_acceleration[nudged]"]["fidelity"]
    assert stored["ssim"] == pytest.approx(1.0) and stored["seeds"] == [0, 1] and len(stored["per_seed"]) == 2
    assert (folder / "thumbnails" / stored["images"]).is_file()
    assert (folder / "thumbnails" / stored["reference"]).is_file()

    unchanged = run_inner(*args)
    unchanged.assert_outcomes(passed=2)

    monkeypatch.setenv("DIFFACCEL_TEST_NUDGE", "1")
    nudged = run_inner(*args)
    nudged.assert_outcomes(passed=1, failed=1)
    nudged.stdout.fnmatch_lines(
        [
            "*fidelity regression gate failed: SSIM 1.0000 -> 0.9* vs its baseline; image vs its baseline image "
            "SSIM 0.9*(tolerance 0.002: the fp32 reference did not move)*",
        ]
    )
    assert "fidelity gate failed" not in nudged.stdout.str()  # the absolute floor (0.90) alone would pass it


SLIGHT = "1.002"  # a nudge whose picture stays within the tight 0.002 of SSIM of the stored one


def test_runs_that_gave_the_identical_picture_catch_a_move_the_tight_tolerance_let_pass(
    project, run_inner, recorded, untimed, monkeypatch
):
    """#29 item 5, the history's half: a second recorded run gives the very picture of the first, so the
    history's pictures are identical on this stack and a slight move fails (it passed at 0.002)."""
    import re

    folder = recorded("--diffaccel-techniques", "fp32,nudged", untimed, SEEDS)
    args = ("--diffaccel-techniques", "nudged", f"--diffaccel-baselines={folder}", untimed, SEEDS)
    run_inner(*args, "--diffaccel-save=all").assert_outcomes(passed=1)
    monkeypatch.setenv("DIFFACCEL_TEST_NUDGE", SLIGHT)
    moved = run_inner(*args)
    moved.assert_outcomes(failed=1)
    moved.stdout.fnmatch_lines(
        ["*fidelity regression gate failed: *image vs its baseline image SSIM 0.99*(tolerance 1e-06: the history's "
         "2 runs on this stack gave identical pictures)*"]
    )  # fmt: skip
    ssim = float(re.search(r"image vs its baseline image SSIM (\d\.\d+)", moved.stdout.str()).group(1))
    assert 1.0 - ssim < fidelity.TIGHT_TOLERANCE  # what the tight tolerance alone let pass


def test_a_failed_fidelity_regression_is_not_saved(project, run_inner, recorded, untimed, monkeypatch):
    folder = recorded("--diffaccel-techniques", "fp32,nudged", untimed, SEEDS)
    args = ("--diffaccel-techniques", "nudged", f"--diffaccel-baselines={folder}", untimed, SEEDS)
    path = next(folder.glob("cpu-*.json"))
    before = path.read_bytes()
    thumbs = sorted(p.name for p in (folder / "thumbnails").iterdir())
    monkeypatch.setenv("DIFFACCEL_TEST_NUDGE", "1")
    run_inner(*args, "--diffaccel-save", "all").assert_outcomes(failed=1)
    assert path.read_bytes() == before
    assert sorted(p.name for p in (folder / "thumbnails").iterdir()) == thumbs


def test_a_lost_stored_picture_is_said_and_strict_mode_fails_it(project, run_inner, recorded, untimed):
    # #30 item 9: the thumbnail the history names is gone (a garbage collection, a move that skipped it): the
    # picture-moved check was silently off; now the gate says it could not compare, and strict mode fails it
    folder = recorded("--diffaccel-techniques", "fp32,nudged", untimed, SEEDS)
    entries = json.loads(next(folder.glob("cpu-*.json")).read_text())["entries"]
    name = entries["test_speed.py::test_acceleration[nudged]"]["fidelity"]["images"]
    (folder / "thumbnails" / name).unlink()
    strict = ("--diffaccel-require-baseline", "--diffaccel-report-only=latency,compile-time,cold-start,memory")
    result = run_inner("--diffaccel-techniques", "nudged", f"--diffaccel-baselines={folder}", SEEDS, *strict)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*fidelity regression gate failed: *image not compared: its stored picture {name} could not be read*"
         "--diffaccel-require-baseline fails what it can't compare*"]
    )  # fmt: skip


def test_a_lost_stored_picture_passes_with_a_note_outside_strict_mode():
    from pytest_diffaccel import verdict

    lost = fidelity.Regression(
        1.0, 1.0, None, fidelity.tolerance(None, True), unread="its stored picture x.png could not be read"
    )
    inputs = verdict.Inputs(broken=None, ssim=1.0, psnr=None, min_ssim=0.9, regression=lost)
    (gate,) = verdict._regression_gates(inputs)
    assert gate.passed and "image not compared: its stored picture x.png could not be read" in gate.message
    (strict,) = verdict._regression_gates(verdict.Inputs(broken=None, ssim=1.0, psnr=None, min_ssim=0.9,
                                                         regression=lost, require_baseline=True))  # fmt: skip
    assert not strict.passed


# ----------------------------------------------------------------------------- pure pieces


def test_tolerance_is_measured_from_the_references_drift():
    assert fidelity.tolerance(None, same_stack=True).value == fidelity.TIGHT_TOLERANCE
    assert fidelity.tolerance(0.0, same_stack=False).value == fidelity.TIGHT_TOLERANCE
    moved = fidelity.tolerance(0.01, same_stack=False)
    assert moved.value == pytest.approx(0.03) and "3x the fp32 reference's own drift 0.0100" in moved.basis
    assumed = fidelity.tolerance(None, same_stack=False)
    assert assumed.value == fidelity.ASSUMED_TOLERANCE and "assumed" in assumed.basis


def test_a_history_whose_runs_gave_the_stored_picture_itself_leaves_no_room():
    """#29 item 5: on a deterministic stack every recorded run gives the identical picture, and the 0.002 of
    SSIM the gate allowed let a real change (SSIM 0.9985) pass; two runs of evidence allow only float rounding."""
    stack, other = {"torch": "2.13.0"}, {"torch": "2.12.0"}
    stored, another = "0123456789abcdef.png", "fedcba9876543210.png"
    runs = [{"level": 0, "versions": stack, "picture": stored} for _ in range(3)]
    assert fidelity.identical_pictures(runs, stored, stack) == 3
    exact = fidelity.tolerance(0.0, same_stack=True, identical_runs=3)
    assert exact.value == fidelity.IDENTICAL_TOLERANCE and "3 runs on this stack gave identical pictures" in exact.basis
    assert fidelity.Regression(1.0, 1.0, 0.9985, exact).failed
    assert not fidelity.Regression(1.0, 1.0, 0.9985, fidelity.tolerance(0.0, same_stack=True)).failed  # as before
    # runs whose pictures varied, runs of another stack, an older level, one run alone: the measured tolerances
    assert fidelity.identical_pictures([*runs, {"level": 0, "versions": stack, "picture": another}], stored, stack) == 0
    assert fidelity.identical_pictures([{**r, "versions": other} for r in runs], stored, stack) == 0
    assert fidelity.identical_pictures([*runs, {"level": 1, "versions": stack, "picture": stored}], stored, stack) == 1
    assert fidelity.identical_pictures([{"level": 0, "versions": stack}], stored, stack) == 0  # recorded before
    assert fidelity.tolerance(0.0, same_stack=True, identical_runs=1).value == fidelity.TIGHT_TOLERANCE
    assert fidelity.tolerance(0.01, same_stack=False, identical_runs=3).value == pytest.approx(0.03)


def test_regression_names_what_moved():
    tight = fidelity.tolerance(None, same_stack=True)
    dropped = fidelity.Regression(1.0, 0.9681, 0.95, tight)
    assert dropped.failed and dropped.describe().startswith("SSIM 1.0000 -> 0.9681 vs its baseline")
    assert "(tolerance 0.002: same versions and device)" in dropped.describe()
    still = fidelity.Regression(0.63, 0.63, 0.9999, tight)
    assert not still.failed
    moved_only = fidelity.Regression(0.63, 0.63, 0.95, tight)  # same SSIM, another picture
    assert moved_only.failed and moved_only.image_moved and not moved_only.dropped


def test_thumbnails_round_trip_reduce_and_are_named_by_content(tmp_path: Path):
    rng = np.random.default_rng(0)
    small = rng.random((2, 64, 64, 3))
    data = thumbnails.encode(small)
    back = thumbnails.decode(data, 2)
    assert back.shape == (2, 64, 64, 3)
    assert np.abs(back - small).max() <= 0.5 / 255 + 1e-9  # lossless at 8 bits
    large = rng.random((1, 512, 256, 3))
    assert thumbnails.reduce(large).shape == (1, 128, 64, 3)
    name = thumbnails.write(tmp_path, data)
    assert name == thumbnails.name_of(data) and thumbnails.read(tmp_path, name, 2).shape == (2, 64, 64, 3)
    other = thumbnails.write(tmp_path, thumbnails.encode(large))
    assert thumbnails.collect(tmp_path, [name]) == [other]
    assert thumbnails.read(tmp_path, other, 1) is None
