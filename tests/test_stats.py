"""Statistics against known distributions and scipy, including the small-sample edge cases."""

import math
import random

import pytest
from scipy import stats as scipy_stats

from pytest_diffaccel import stats


def test_u_distribution_counts_sum_to_the_number_of_arrangements():
    for m, n in [(1, 1), (3, 4), (5, 5), (8, 12)]:
        counts = stats.u_distribution(m, n)
        assert len(counts) == m * n + 1
        assert sum(counts) == math.comb(m + n, m)
        assert counts == tuple(reversed(counts))  # symmetric under the null


def test_smallest_p_value_of_5_against_5_is_1_in_252():
    assert stats.min_p_value(5, 5) == pytest.approx(1 / 252)
    # complete separation reaches it exactly
    assert stats.mann_whitney_greater([2, 3, 4, 5, 6], [0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(1 / 252)
    assert stats.min_p_value(6, 6) == pytest.approx(1 / 924)


@pytest.mark.parametrize(("m", "n", "shift"), [(5, 5, 0.0), (6, 8, 0.05), (8, 8, 0.1), (12, 7, -0.05), (70, 65, 0.02)])
def test_mann_whitney_matches_scipy(m, n, shift):
    rng = random.Random(m * 100 + n)
    a = [rng.gauss(1.0 + shift, 0.05) for _ in range(m)]
    b = [rng.gauss(1.0, 0.05) for _ in range(n)]
    expected = scipy_stats.mannwhitneyu(a, b, alternative="greater").pvalue
    assert stats.mann_whitney_greater(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_mann_whitney_with_ties_uses_the_corrected_normal_approximation():
    a = [1.0, 1.0, 2.0, 3.0, 3.0, 4.0]
    b = [1.0, 2.0, 2.0, 2.0, 3.0, 1.0]
    expected = scipy_stats.mannwhitneyu(a, b, alternative="greater", method="asymptotic").pvalue
    assert stats.mann_whitney_greater(a, b) == pytest.approx(expected, rel=1e-9)


def test_identical_samples_are_not_significant():
    assert stats.mann_whitney_greater([1.0] * 6, [1.0] * 6) > 0.4


def test_null_false_positive_rate_is_at_most_alpha():
    rng = random.Random(7)
    alarms = sum(
        stats.mann_whitney_greater(
            [rng.lognormvariate(0, 0.1) for _ in range(8)], [rng.lognormvariate(0, 0.1) for _ in range(8)]
        )
        < 0.01
        for _ in range(2000)
    )
    assert alarms / 2000 <= 0.015


def test_ratio_interval_covers_the_true_ratio():
    rng = random.Random(3)
    covered = 0
    trials = 400
    for _ in range(trials):
        base = [rng.lognormvariate(0, 0.05) for _ in range(8)]
        cand = [1.10 * rng.lognormvariate(0, 0.05) for _ in range(8)]
        estimate, low, high = stats.ratio_interval(cand, base)
        assert low <= estimate <= high
        covered += low <= 1.10 <= high
    assert covered / trials >= 0.93


def test_ratio_interval_with_too_few_samples_returns_the_full_range():
    estimate, low, high = stats.ratio_interval([2.0, 2.2], [1.0, 1.1])
    assert low == pytest.approx(2.0 / 1.1)
    assert high == pytest.approx(2.2 / 1.0)
    assert low <= estimate <= high


def test_ratio_interval_rejects_non_positive_latencies():
    with pytest.raises(ValueError, match="positive"):
        stats.ratio_interval([0.0, 1.0], [1.0, 1.0])


def test_median_interval_order_statistics():
    assert stats.median_interval(list(range(1, 9))) == (1, 8)  # n=8: P(outside) = 2/256
    assert stats.median_interval(list(range(1, 11))) == (2, 9)
    assert stats.median_interval([5.0]) == (5.0, 5.0)


def test_precise_enough():
    assert stats.precise_enough([1.0, 1.001, 0.999, 1.0, 1.002, 0.998, 1.0, 1.0], 0.005)
    assert not stats.precise_enough([1.0, 1.2, 0.8, 1.1, 0.9, 1.0, 1.3, 0.7], 0.005)
    assert not stats.precise_enough([1.0, 1.0], 0.5)


def test_quantiles_match_numpy():
    import numpy as np

    values = [0.3, 0.1, 0.7, 0.2, 0.9, 0.5]
    assert stats.median(values) == pytest.approx(float(np.median(values)))
    assert stats.iqr(values) == pytest.approx(float(np.percentile(values, 75) - np.percentile(values, 25)))
    assert stats.stddev(values) == pytest.approx(float(np.std(values, ddof=1)))
    with pytest.raises(ValueError):
        stats.median([])
