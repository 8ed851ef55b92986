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


def test_matrix_false_alarm_combines_independent_tests():
    """The chance that any of independent tests raises a false alarm: 1 - (1 - alpha)^T for equal chances
    (the default alpha keeps 20 tests under 1% when each test is at alpha: the simulations below check
    that part), the product of the complements for unequal ones."""
    assert latency.matrix_false_alarm([0.0005] * 20) == pytest.approx(1 - 0.9995**20) and 0.0099 < 1 - 0.9995**20 < 0.01
    assert latency.matrix_false_alarm([0.01] * 20) > 0.18
    assert latency.matrix_false_alarm([0.5, 0.5]) == pytest.approx(0.75)
    assert latency.matrix_false_alarm([]) == 0.0


# ----------------------------------------------------------------------------- the rule, simulated
#
# Each simulated run has an offset all of its blocks share (its process, the machine's state of the
# moment: the blocks of one run are not independent draws of the run-to-run noise) and each block a
# little noise of its own; a run in the history is one block of an earlier run, so the history's runs
# scatter with ``sigma``. The gate gets the spread history.spread computes from that history and the
# machine's typical spread (``prior`` x sigma over 6 tests; None: nothing known, the assumed 5%), or,
# with ``known``, sigma itself. A gate that treated a run's blocks as independent, forgot the history's
# own error, moderated the spread wrongly or misread alpha raises several times the false alarms below.


def simulate(
    true_ratio: float,
    *,
    sigma: float,
    history_runs: int,
    prior: float | None = 1.0,
    known: bool = False,
    shared: float = 0.9,
    trials: int = 20000,
    seed: int = 0,
) -> float:
    """The share of ``trials`` simulated runs that the latency gate fails (defaults: max-slowdown 10%,
    alpha 0.0005, up to 3 blocks); ``shared``: the share of the run-to-run variance a run's blocks share."""
    rng = random.Random(seed)
    between, within = sigma * math.sqrt(shared), sigma * math.sqrt(1.0 - shared)
    machine = (None, 0) if prior is None else (prior * sigma, 6)
    failures = 0
    for _ in range(trials):
        runs = [rng.gauss(0.0, between) + rng.gauss(0.0, within) for _ in range(history_runs)]
        if known:
            spread = Spread(sigma=sigma, runs=history_runs, own_dof=history_runs - 1, own=sigma, prior=sigma,
                            machine_tests=6)  # fmt: skip
        else:
            spread = history.spread([runs], "ratio", machine)
        offset = math.log(true_ratio) + rng.gauss(0.0, between)
        blocks: list[float] = []
        while True:
            blocks.append(offset + rng.gauss(0.0, within))
            j = latency.judge(blocks, runs, spread, max_slowdown=0.10, alpha=0.0005, max_blocks=3)
            if j.state != "another":
                failures += j.regression
                break
    return failures / trials


def test_false_alarms_are_alpha_when_the_spread_is_known_even_though_blocks_share_their_run():
    """The rule's own model: a history of 2 runs, the spread known, the blocks of a run sharing all of its
    noise, so a confirmation block repeats block 1. The gate fails a clean run at alpha (0.05%), not more:
    the standard error counts the history's own error (sqrt(1 + 1/n)) and does not shrink with the blocks
    (a gate that divided by the blocks, or dropped the history's error, fails 0.4% here)."""
    rate = simulate(1.0, sigma=0.05, history_runs=2, known=True, shared=1.0, trials=60000)
    assert rate <= 2 * 0.0005, rate


@pytest.mark.parametrize(
    ("history_runs", "prior", "at_most", "why"),
    [
        pytest.param(2, None, 0.002, "the assumed 5% is right; 2 runs barely move it", id="2-runs-assumed"),
        pytest.param(3, None, 0.002, "3 runs' own spread (2 dof) against the assumed (4 runs)", id="3-runs-assumed"),
        pytest.param(3, 2.0, 0.0005, "a quiet test on a noisy machine: the prior errs safe", id="prior-too-high"),
        pytest.param(10, 0.5, 0.01, "a noisy test on a quiet machine: 10 runs correct the prior", id="prior-too-low"),
    ],
)
def test_false_alarms_stay_bounded_when_the_history_is_short_or_the_prior_is_wrong(history_runs, prior, at_most, why):
    """Clean runs of a technique with a 5% run-to-run spread, the spread estimated as the plugin does: its
    own short history moderated toward the machine's spread, which may be wrong for it. Measured with this
    rule: 0.06%, 0.09%, 0%, 0.64%; an unmoderated spread fails 2.5%, 1.5%, 1.5% of the first three, a
    weight of 1 run for the prior 0.3-0.6%, blocks taken as independent 0.4%-2.2%, alpha misread x10
    0.6%-1.6%, the prior counted as 20 runs 1.4% of the last."""
    rate = simulate(1.0, sigma=0.05, history_runs=history_runs, prior=prior)
    assert rate <= at_most, f"{rate:.3%} false alarms: {why}"


def test_detection_with_blocks_that_share_their_run():
    """A technique with a 2.5% run-to-run spread and 10 runs of history: +5% passes (inside max-slowdown),
    +15% and +20% are caught; a 1%-spread technique 6% slower is beyond doubt but inside max-slowdown:
    it passes."""
    assert simulate(1.05, sigma=0.025, history_runs=10, trials=4000) <= 0.05
    assert simulate(1.15, sigma=0.025, history_runs=10, trials=4000) >= 0.93
    assert simulate(1.20, sigma=0.025, history_runs=10, trials=4000) >= 0.99
    assert simulate(1.06, sigma=0.01, history_runs=10, trials=4000) <= 0.01


# each technique's run-to-run spread on the CPU of docs/verdict-quality.md (fp32 first)
MEASURED_SPREADS = (0.109, 0.104, 0.074, 0.069, 0.055, 0.041, 0.038, 0.036, 0.033, 0.032, 0.032, 0.030, 0.027,
                    0.025, 0.024, 0.012, 0.010)  # fmt: skip


@pytest.mark.xfail(
    strict=True,
    reason="known gap: 4% of simulated clean runs fail a test, against a target of 2% (docs/verdict-quality.md). The "
    "machine's median spread (3.3%) is the prior of every test, the noisiest techniques (10-11%) keep an "
    "estimate below their spread, and the normal test ignores that the spread is itself estimated",
)
def test_a_clean_matrix_with_the_measured_spreads_and_10_runs_of_history_fails_at_most_2_runs_in_100():
    """The whole matrix as the plugin judges it: each technique's history of 10 runs, the machine's spread
    the median over the techniques' own (history.machine_spread), blocks sharing 90% of their run's noise."""
    rng = random.Random(0)
    matrix_runs, failed_runs = 2000, 0
    for _ in range(matrix_runs):
        histories = [[rng.gauss(0.0, s) for _ in range(10)] for s in MEASURED_SPREADS]
        machine = history.machine_spread([[runs] for runs in histories])
        failed = False
        for sigma, runs in zip(MEASURED_SPREADS, histories, strict=True):
            spread = history.spread([runs], "ratio", machine)
            offset, blocks = rng.gauss(0.0, sigma * math.sqrt(0.9)), []
            while True:
                blocks.append(offset + rng.gauss(0.0, sigma * math.sqrt(0.1)))
                j = latency.judge(blocks, runs, spread, max_slowdown=0.10, alpha=0.0005, max_blocks=3)
                if j.state != "another":
                    failed = failed or j.regression
                    break
        failed_runs += failed
    assert failed_runs / matrix_runs <= 0.02, f"{failed_runs / matrix_runs:.1%} of clean matrix runs failed a test"


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
