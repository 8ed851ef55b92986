"""Fidelity floors: measured per class of technique, the committed file the default, a user's own file
through --diffaccel-floors (checked before the run), a bad file a usage error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pytest_diffaccel import floors

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import fidelity_floors


def test_floor_allows_k_times_the_worst_drift_and_never_less_than_the_allowance():
    assert floors.floor_from(0.01, 2.0, 0.002) == pytest.approx(0.98)
    assert floors.floor_from(0.0001, 2.0, 0.002) == pytest.approx(0.998)  # the allowance
    assert floors.floor_from(0.0123456, 2.0, 0.002) == pytest.approx(0.975)  # rounded down, never up
    assert floors.floor_from(0.9, 2.0, 0.002) == 0.05


def test_derive_takes_each_class_worst_clean_technique():
    measured = {"errors": {"bf16": [0.001, 0.004], "fp16": [0.003], "fuse-qkv": [0.0], "int8-dynamic": [0.02]}}
    classes = fidelity_floors.derive(measured)
    assert classes[floors.REDUCED] == {"worst_error": 0.004, "by": "bf16", "floor": pytest.approx(0.992)}
    assert classes[floors.EXACT]["floor"] == pytest.approx(0.998) and classes[floors.EXACT]["by"] == "fuse-qkv"
    assert classes[floors.QUANTIZED]["floor"] == pytest.approx(0.96)


def _write(path: Path, data: object) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_a_model_measured_floor_wins_over_the_default(tmp_path):
    path = _write(
        tmp_path / "f.json",
        {
            "models": {"mine": {"classes": {"reduced precision": {"floor": 0.97}}}},
            "default": {"reduced precision": 0.9},
        },
    )
    assert floors.floor("reduced precision", "mine", path) == 0.97
    assert floors.floor("reduced precision", "other", path) == 0.9
    assert floors.floor("quantized", "mine", path) is None
    table = floors.overrides("mine", path)
    assert table["bf16"] == table["fp16"] == table["tf32"] == 0.97 and "int8-dynamic" not in table


def test_a_default_floor_never_makes_an_unmeasured_models_gate_stricter_than_the_technique_own(tmp_path):
    path = _write(
        tmp_path / "f.json",
        {"models": {"tiny": {"classes": {"exact": {"floor": 0.998}}}}, "default": {"exact": 0.998, "quantized": 0.5}},
    )
    generic = {"fuse-qkv": 0.97, "int8-dynamic": 0.85}
    assert floors.overrides("tiny", path, generic)["fuse-qkv"] == 0.998  # measured on this model: kept
    real = floors.overrides("my/real-model", path, generic)
    assert real["fuse-qkv"] == 0.97 and real["int8-dynamic"] == 0.5  # the lower of the two


def test_the_committed_floors_cover_every_class_a_preset_runs():
    data = floors.load()
    assert data, "pytest_diffaccel/floors.json is missing: run python benchmarks/fidelity_floors.py"
    floors.check_file(floors.FLOORS_FILE)
    for model in fidelity_floors.PRESETS:
        classes = data["models"][model]["classes"]
        assert {floors.EXACT, floors.REDUCED, floors.QUANTIZED} <= set(classes)
        for row in classes.values():  # each floor follows from its measured drift
            assert row["floor"] == floors.floor_from(row["worst_error"], data["k"], data["allowance"])
    for klass, value in data["default"].items():  # the default is the lowest floor over the presets
        assert value == min(e["classes"][klass]["floor"] for e in data["models"].values() if klass in e["classes"])


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "*--diffaccel-floors*missing.json: no such file (make one with benchmarks/fidelity_floors.py*"),
        ("{not json", "*--diffaccel-floors*: not a floors file (Expecting property name*"),
        ({"bf16": 0.9}, "*--diffaccel-floors*: not a floors file (no 'models' or 'default'*"),
        ({"default": {"bfloat": 0.9}}, "*default: unknown class 'bfloat'; known: VAE tiling, cache*"),
        ({"default": {"quantized": 1.5}}, "*default: quantized: floor 1.5 is not an SSIM in (0, 1]*"),
        ({"models": {"m": {"floor": 0.9}}}, "*model 'm' has no 'classes' mapping*"),
    ],
    ids=["missing", "not-json", "no-tables", "unknown-class", "not-ssim", "no-classes"],
)
def test_a_bad_floors_file_is_a_usage_error(user_suite, run_inner, tmp_path, content, message):
    path = tmp_path / ("missing.json" if content is None else "floors.json")
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    result = run_inner("--diffaccel-techniques", "fp32", f"--diffaccel-floors={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_users_floors_file_sets_the_threshold_of_each_class(user_suite, run_inner, tmp_path):
    """bf16 drifts a little from fp32 on tiny-sd (SSIM about 0.98, which its default floor passes): a
    floor of 0.999 for its class, measured on 'the user's model', fails it."""
    path = _write(
        tmp_path / "floors.json", {"models": {"tiny-sd": {"classes": {"reduced precision": {"floor": 0.999}}}}}
    )
    result = run_inner("--diffaccel-techniques", "bf16", f"--diffaccel-floors={path}", "--diffaccel-fidelity-seeds=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*fidelity gate failed: SSIM 0.9* vs the fp32 reference is below the threshold 0.9990*"]
    )
