"""The run-level latency rule and the run history: pure functions, checked against their model."""

from __future__ import annotations

import math
import random

import pytest

from pytest_diffaccel import history, latency
from pytest_diffaccel.history import Spread

SPREAD_2 = Spread(sigma=0.02, runs=10, own_dof=9, own=0.02, prior=0.02, machine_tests=5)


def logs(*ratios: float) -> list[float]:
    return [math.log(r) for r in ratios]


def judge(blocks, runs=(1.0,) * 10, spread=SPREAD_2, **kwargs):
    kwargs.setdefault("max_slowdown", 0.10)
    kwargs.setdefault("alpha", 0.0005)
    return latency.judge(logs(*blocks), logs(*runs), spread, **kwargs)


# ----------------------------------------------------------------------------- the rule


def test_a_clean_block_passes_alone():
    j = judge([1.01])
    assert j.state == "pass" and len(j.blocks) == 1 and not j.regression


def test_a_block_beyond_the_suspect_level_asks_for_a_confirmation():
    assert judge([1.06]).state == "another"  # beyond half of max-slowdown
    assert judge([1.04]).state == "pass"
    assert judge([1.06], max_blocks=1).state == "pass"  # no confirmation allowed: judged alone, inside 10%


def test_two_blocks_beyond_max_slowdown_and_significant_fail():
    j = judge([1.20, 1.18])
    assert j.state == "fail" and j.regression
    assert j.blocks == pytest.approx((1.20, 1.18))
    assert "2 blocks: 1.20x, 1.18x" in j.describe()
    assert "beyond max-slowdown 10% and significant" in j.reason


def test_a_confirmation_that_comes_back_clean_passes():
    j = judge([1.25, 1.01], max_blocks=2)  # disagree, no third block allowed: the majority is not beyond
    assert j.state == "pass" and "minority" in j.reason
    assert judge([1.25, 1.01]).state == "another"  # with a third block to spend


def test_three_blocks_take_the_majority_and_the_median():
    assert judge([1.25, 1.01, 1.22]).state == "fail"
    j = judge([1.25, 1.01, 1.02])
    assert j.state == "pass"
    assert j.ratio == pytest.approx(1.02)  # the median of three: one disturbed block can't carry it


def test_a_slowdown_inside_the_machine_noise_passes_and_says_the_gate_is_blind():
    noisy = Spread(sigma=0.15, runs=10, own_dof=9, own=0.15, prior=0.03, machine_tests=5)
    j = judge([1.25, 1.22], spread=noisy)
    assert j.state == "pass" and j.undecided and "too noisy" in j.reason  # can't tell is not a pass
    assert j.blind and j.detectable > 1.4
    inside = judge([1.08, 1.05], spread=noisy)
    assert inside.state == "pass" and not inside.undecided and "inside max-slowdown" in inside.reason


def test_a_short_history_uses_the_assumed_spread_and_says_so():
    spread = history.spread([logs(1.0)], "ratio")
    assert spread.assumed and spread.describe() == "history of 1 run: spread assumed 5.0%"
    assert judge([1.15, 1.15], runs=(1.0,), spread=spread).state == "pass"  # 5% assumed: 15% is not enough
    assert judge([1.35, 1.35], runs=(1.0,), spread=spread).state == "fail"


def test_faster_is_reported_as_an_improvement():
    j = judge([0.7])
    assert j.state == "pass" and j.improvement and "faster" in j.describe()


def test_drift_in_block_one_asks_for_a_confirmation():
    assert judge([1.0], drifted=[True]).state == "another"


def test_matrix_false_alarm_at_the_default_alpha_stays_under_one_percent_for_twenty_tests():
    assert latency.matrix_false_alarm(0.0005, 20) < 0.01
    assert latency.matrix_false_alarm(0.01, 20) > 0.18


def test_false_alarms_and_detection_under_the_rules_own_model():
    """Simulated runs with normal run-to-run noise of 2.5% (what the quiet techniques show here):
    A/A false alarms stay below alpha, +15% is caught almost always, +5% almost never."""
    rng = random.Random(0)
    sigma = 0.025

    def run(true_ratio: float) -> bool:
        runs = [math.exp(rng.gauss(0, sigma)) for _ in range(10)]
        groups = [[math.log(r) for r in runs]]
        spread = history.spread(groups, "ratio", (sigma, 5))
        blocks: list[float] = []
        while True:
            blocks.append(true_ratio * math.exp(rng.gauss(0, sigma)))
            j = latency.judge(
                [math.log(b) for b in blocks], groups[0], spread, max_slowdown=0.10, alpha=0.0005, max_blocks=3
            )
            if j.state != "another":
                return j.regression

    trials = 4000
    assert sum(run(1.0) for _ in range(trials)) / trials <= 0.0005
    assert sum(run(1.05) for _ in range(trials)) / trials <= 0.05
    assert sum(run(1.15) for _ in range(trials)) / trials >= 0.95
    assert sum(run(1.20) for _ in range(trials)) / trials >= 0.99


def test_drifting_rounds_are_told_from_noisy_ones():
    rising = [1.07, 1.12, 1.18, 1.22, 1.28, 1.33, 1.40, 1.47]  # the stored run of the issue
    found = latency.drifted(rising, 0.10)
    assert found is not None and found.change > 0.3 and found.p_value < 0.01
    rng = random.Random(1)
    noisy = [1.0 + rng.gauss(0, 0.03) for _ in range(8)]
    assert latency.drifted(noisy, 0.10) is None
    small = [1.00, 1.002, 1.004, 1.006, 1.008, 1.01, 1.012, 1.014]  # a trend, but too small to matter
    assert latency.drifted(small, 0.10) is None


# ----------------------------------------------------------------------------- the history


def test_a_schema_1_entry_reads_as_one_run():
    entry = {"samples": [0.3, 0.32, 0.31], "relative_samples": [1.0, 1.1, 1.2], "relative_kind": "paired"}
    (record,) = history.runs_of(entry)
    assert record["median"] == pytest.approx(0.31) and record["ratio"] == pytest.approx(1.1)
    assert record["upgraded_from_schema"] == 1
    upgraded = history.upgraded(entry)
    assert upgraded["samples"] == entry["samples"] and upgraded["runs"] == [record]


def test_levels_pool_the_spread_inside_each_level_only():
    runs = [{"level": 0, "ratio": r} for r in (1.0, 1.02, 0.98)] + [{"level": 1, "ratio": r} for r in (1.5, 1.53)]
    groups = history.levels(runs, "ratio")
    assert len(groups) == 2 and len(groups[-1]) == 2
    sigma, dof = history.within_level(groups)
    assert dof == 3 and sigma < 0.03  # the change of level adds nothing to the spread


def test_spread_is_moderated_toward_the_machine():
    own = [logs(1.0, 1.1, 0.9, 1.05, 0.95)]  # about 8% on its own
    alone = history.spread(own, "ratio")
    machine = history.spread(own, "ratio", (0.02, 6))
    assert machine.sigma < alone.sigma and machine.machine_tests == 6
    assert "moderated toward the machine's typical 2.0% over 6 tests" in machine.describe()


def test_machine_spread_is_the_median_over_tests_with_a_history():
    quiet = [logs(1.0, 1.01, 0.99)]
    noisy = [logs(1.0, 1.3, 0.7)]
    short = [logs(1.0)]
    sigma, tests = history.machine_spread([quiet, quiet, noisy, short])
    assert tests == 3 and sigma == pytest.approx(history.within_level(quiet)[0])
    assert history.machine_spread([quiet, noisy]) == (None, 2)


def test_appended_keeps_the_newest_runs_and_counts_levels():
    runs: list[dict] = []
    for i in range(12):
        runs = history.appended(runs, {"ratio": 1.0 + i / 100}, keep=10, new_level=False)
    assert len(runs) == 10 and runs[0]["ratio"] == pytest.approx(1.02)
    runs = history.appended(runs, {"ratio": 1.5}, keep=10, new_level=True)
    assert runs[-1]["level"] == 1 and runs[-2]["level"] == 0


def test_merger_starts_a_new_history_for_another_call():
    old = {"call": {"steps": 8}, "model": "tiny-sd", "runs": [{"level": 0, "ratio": 1.0}]}
    same = history.merger({"call": {"steps": 8}, "model": "tiny-sd"}, {"ratio": 1.1}, keep=10, new_level=False)(old)
    assert len(same["runs"]) == 2
    other = history.merger({"call": {"steps": 4}, "model": "tiny-sd"}, {"ratio": 1.1}, keep=10, new_level=False)(old)
    assert len(other["runs"]) == 1
