"""The gates, one by one, with numbers that decide them."""

import math

import pytest

from pytest_diffaccel import latency, verdict
from pytest_diffaccel.history import Spread

HISTORY = [1.00, 1.01, 0.99, 1.00, 1.02, 0.98, 1.01, 0.99]
SPREAD = Spread(sigma=0.015, runs=8, own_dof=7, own=0.015, prior=0.02, machine_tests=4)


def judged(*blocks: float, spread: Spread = SPREAD, max_slowdown: float = 0.10) -> latency.Judgement:
    return latency.judge(
        [math.log(b) for b in blocks],
        [math.log(r) for r in HISTORY],
        spread,
        max_slowdown=max_slowdown,
        alpha=0.0005,
        max_blocks=len(blocks),
    )


def inputs(**changes):
    values = {"broken": None, "ssim": 0.99, "psnr": 40.0, "min_ssim": 0.95}
    values.update(changes)
    return verdict.Inputs(**values)


def test_clean_result_without_baseline_passes_and_says_so():
    v = verdict.decide(inputs())
    assert not v.failed
    assert v.headline == "pass (no baseline)"


def test_broken_image_fails_before_fidelity_is_judged():
    v = verdict.decide(inputs(broken="image has 10 NaN and 0 Inf values", ssim=None))
    assert v.failed
    assert [g.name for g in v.failures] == ["broken"]
    assert "NaN" in v.message()


def test_fidelity_gate_names_ssim_and_threshold():
    v = verdict.decide(inputs(ssim=0.81))
    assert v.headline == "FAIL fidelity"
    assert "SSIM 0.8100" in v.message() and "0.9500" in v.message()


def test_fidelity_fails_even_when_faster():
    v = verdict.decide(inputs(ssim=0.5, latency=judged(0.5)))
    assert [g.name for g in v.failures] == ["fidelity"]
    assert v.latency is not None and v.latency.improvement


def test_confirmed_slowdown_beyond_threshold_fails():
    v = verdict.decide(inputs(latency=judged(1.3, 1.28)))
    assert v.headline == "FAIL latency"
    assert "1.29x slower (2 blocks: 1.30x, 1.28x; 95% CI" in v.message()
    assert "vs 8 runs" in v.message() and "run-to-run spread 1.5%" in v.message()


def test_slowdown_inside_max_slowdown_passes():
    v = verdict.decide(inputs(latency=judged(1.05)))
    assert not v.failed
    assert "inside max-slowdown" in next(g for g in v.gates if g.name == "latency").message


def test_large_but_noisy_change_is_not_significant_and_the_blind_gate_is_named():
    noisy = Spread(sigma=0.25, runs=8, own_dof=7, own=0.25, prior=0.02, machine_tests=4)
    v = verdict.decide(inputs(latency=judged(1.3, 1.3, spread=noisy)))
    assert v.latency is not None and v.latency.ratio > 1.10
    assert not v.failed
    assert any("latency gate nearly blind" in note for note in v.notes)


def test_compile_and_cold_start_figures_are_gates_of_their_own():
    slow_compile = judged(2.0, max_slowdown=0.5)
    v = verdict.decide(inputs(figures=[("compile time", slow_compile), ("cold start", judged(1.1, max_slowdown=0.5))]))
    assert v.headline == "FAIL compile time"
    assert "2.00x slower" in v.message()


def test_memory_gate_uses_tolerance_and_slack():
    ok = verdict.decide(inputs(peak_memory=105, baseline_peak_memory=100, max_memory_increase=0.10))
    assert not ok.failed
    bad = verdict.decide(inputs(peak_memory=120, baseline_peak_memory=100, max_memory_increase=0.10))
    assert bad.headline == "FAIL memory"
    slack = verdict.decide(inputs(peak_memory=120, baseline_peak_memory=100, max_memory_increase=0.10, memory_slack=50))
    assert not slack.failed


def test_min_speedup_gate():
    assert verdict.decide(inputs(speedup=0.9, min_speedup=1.1)).headline == "FAIL speed-up"
    assert not verdict.decide(inputs(speedup=1.5, min_speedup=1.1)).failed
    assert not verdict.decide(inputs(speedup=0.2)).failed  # no gate unless asked


def test_measurement_failures_fail_the_verdict():
    v = verdict.decide(inputs(failures=["recompiled during the timed rounds: ..."]))
    assert v.headline.startswith("FAIL measurement")


def test_sync_gate_only_when_a_ceiling_is_set():
    assert not verdict.decide(inputs(syncs_per_step=6.0)).failed
    failed = verdict.decide(inputs(syncs_per_step=6.0, max_syncs=1))
    assert failed.headline == "FAIL syncs" and "6.0 host-device synchronizations" in failed.message()
    assert not verdict.decide(inputs(syncs_per_step=0.3, max_syncs=1)).failed


def test_latency_message_names_the_component_that_moved():
    v = verdict.decide(inputs(latency=judged(1.4, 1.4), breakdown_note="VAE decode 1.42x slower"))
    assert "VAE decode 1.42x slower" in v.message()


def test_report_only_gates_are_judged_and_shown_but_never_fail():
    v = verdict.decide(inputs(latency=judged(1.3, 1.28), report_only=("latency",)))
    assert not v.failed and v.headline == "pass (latency reported only)"
    gate = next(g for g in v.gates if g.name == "latency")
    assert gate.passed and gate.message.startswith("reported only, not gated: 1.29x slower")
    still = verdict.decide(inputs(ssim=0.5, latency=judged(1.3, 1.28), report_only=("latency",)))
    assert still.headline == "FAIL fidelity"  # the other gates still gate


def test_report_only_names_known_gates():
    from pytest_diffaccel.config import SettingError, parse_gates

    assert parse_gates("latency,compile-time,cold-start", "x") == ("latency", "compile time", "cold start")
    with pytest.raises(SettingError, match="unknown gate"):
        parse_gates("latencyy", "x")
