"""The fire drill: DIFFACCEL_SLOWDOWN makes a named technique really slower, and the gate fails."""

from __future__ import annotations

import re

import pytest

from pytest_diffaccel import drill


def test_parse():
    assert drill.parse("fuse-qkv=30%, bf16=0.15") == {"fuse-qkv": pytest.approx(0.30), "bf16": 0.15}
    assert drill.parse("") == {} and drill.parse(None) == {}
    assert drill.parse("attn-backend=native=20%") == {"attn-backend=native": pytest.approx(0.2)}
    for bad, why in (("fuse-qkv", "is not TECHNIQUE=PERCENT"), ("fuse-qkv=lots", "is not a percentage"),
                     ("fuse-qkv=0%", "must be above 0")):  # fmt: skip
        with pytest.raises(drill.DrillError, match=why):
            drill.parse(bad)


@pytest.mark.serial  # judged on the measured speed: run alone, not beside another worker
def test_the_drill_fails_the_gate_and_says_it_is_a_drill(user_suite, run_inner, monkeypatch, tmp_path):
    folder = tmp_path / "b"
    args = ("--diffaccel-techniques", "fuse-qkv", f"--diffaccel-baselines={folder}")
    run_inner(*args, "--diffaccel-save", "all").assert_outcomes(passed=1)
    # against one saved run the spread is the assumed 5%, worth 4 runs (Student's t, 4 dof): only a slowdown
    # well beyond 1.8x is significant; +150% is, with room for the noise of a busy machine
    monkeypatch.setenv("DIFFACCEL_SLOWDOWN", "fuse-qkv=150%,no-such-technique=10%")
    drilled = run_inner(*args, f"--diffaccel-json={tmp_path / 'r.json'}")
    drilled.assert_outcomes(failed=1)
    drilled.stdout.fnmatch_lines(
        [
            "*FIRE DRILL (DIFFACCEL_SLOWDOWN): real extra work injected into fuse-qkv +150%, no-such-technique +10%*",
            "*latency gate failed: relative to the fp32 reference, *x slower (* blocks:*",
            "*fire drill: DIFFACCEL_SLOWDOWN names no-such-technique, which no test of this run applied*",
        ]
    )
    assert "fire drill (DIFFACCEL_SLOWDOWN): +150% of real extra work" in (tmp_path / "r.json").read_text()
    # the drill slows the denoiser only: the breakdown names it, and no other component, as moved
    message = next(line for line in drilled.stdout.lines if "latency gate failed" in line)
    assert re.findall(r"(text encoder|denoiser|VAE decode|rest) [0-9.]+x (?:slower|faster)", message) == ["denoiser"]


def test_a_malformed_drill_is_a_usage_error(user_suite, run_inner, monkeypatch):
    monkeypatch.setenv("DIFFACCEL_SLOWDOWN", "fuse-qkv=a lot")
    result = run_inner("--diffaccel-techniques", "fuse-qkv")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*DIFFACCEL_SLOWDOWN: 'a lot' is not a percentage*"])
