"""Our statistics conveniences against scipy and numpy, including the small-sample edge cases."""

import math
import random

import pytest
from scipy import stats as scipy_stats

from pytest_diffaccel import stats


@pytest.mark.parametrize(("m", "n", "shift"), [(5, 5, 0.0), (6, 8, 0.05), (8, 8, 0.1), (12, 7, -0.05)])
def test_mann_whitney_is_scipys_exact_test(m, n, shift):
    rng = random.Random(m * 100 + n)
    a = [rng.gauss(1.0 + shift, 0.05) for _ in range(m)]
    b = [rng.gauss(1.0, 0.05) for _ in range(n)]
    expected = scipy_stats.mannwhitneyu(a, b, alternative="greater", method="exact").pvalue
    assert stats.mann_whitney_greater(a, b) == pytest.approx(expected, rel=1e-12)
    # complete separation of 5 against 5 reaches 1 / C(10, 5)
    assert stats.mann_whitney_greater([2, 3, 4, 5, 6], [0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(1 / 252)


def test_trend_matches_scipys_kendall_and_theil_sen():
    values = [1.0, 1.1, 1.05, 1.2, 1.25, 1.3]
    found = stats.trend(values)
    logs = [math.log(v) for v in values]
    assert found.p_value == pytest.approx(scipy_stats.kendalltau(range(6), logs).pvalue)
    slope = scipy_stats.theilslopes(logs, range(6))[0]
    assert found.change == pytest.approx(math.exp(slope * 5) - 1)
    assert stats.trend([1.0, 1.0]).p_value == 1.0  # too short to tell


def test_normal_tails():
    assert stats.normal_sf(0.0) == pytest.approx(0.5)
    assert stats.normal_isf(0.0005) == pytest.approx(3.2905, abs=1e-4)


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
