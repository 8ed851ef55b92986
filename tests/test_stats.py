"""Our statistics against values computed here by other means (hand-worked examples, exact
enumeration of the null distributions) and against published tables, never against the library
call a function wraps: a wrapper that passed the wrong arguments would agree with itself."""

import itertools
import math
import random
from fractions import Fraction

import pytest

from pytest_diffaccel import stats

# ----------------------------------------------------------------------------- descriptive statistics

VALUES = [0.3, 0.1, 0.7, 0.2, 0.9, 0.5]  # sorted: 0.1 0.2 0.3 0.5 0.7 0.9


def test_descriptive_statistics_of_a_hand_worked_example():
    assert stats.median(VALUES) == pytest.approx(0.4)  # (0.3 + 0.5) / 2
    assert stats.median([3.0, 1.0, 2.0]) == 2.0 and isinstance(stats.median([3, 1, 2]), float)
    # linear interpolation between order statistics (Hyndman & Fan's type 7, numpy's default):
    # q=0.25 sits at position 1.25 of 0..5, q=0.75 at 3.75
    assert stats.quantile(VALUES, 0.25) == pytest.approx(0.2 + 0.25 * (0.3 - 0.2))
    assert stats.quantile(VALUES, 0.75) == pytest.approx(0.5 + 0.75 * (0.7 - 0.5))
    assert stats.quantile(VALUES, 0.0) == 0.1 and stats.quantile(VALUES, 1.0) == 0.9
    assert stats.quantile([2.0], 0.3) == 2.0
    assert stats.iqr(VALUES) == pytest.approx(0.65 - 0.225)
    assert stats.mean(VALUES) == pytest.approx(0.45)
    # sample variance: squared deviations 0.1225 + 0.0625 + 0.0225 + 0.0025 + 0.0625 + 0.2025 = 0.475, over n - 1
    assert stats.stddev(VALUES) == pytest.approx(math.sqrt(0.475 / 5))
    assert stats.stddev([1.0]) == 0.0 and stats.stddev([]) == 0.0
    assert stats.geometric_mean([1.0, 4.0, 16.0]) == pytest.approx(4.0)
    assert stats.geometric_mean([0.5, 2.0]) == pytest.approx(1.0)
    for empty in (stats.median, stats.mean, stats.geometric_mean, lambda v: stats.quantile(v, 0.5)):
        with pytest.raises(ValueError):
            empty([])
    with pytest.raises(ValueError, match="positive"):
        stats.geometric_mean([1.0, 0.0])


# ----------------------------------------------------------------------------- Mann-Whitney U, exactly


def exact_u_greater(a: list[float], b: list[float]) -> Fraction:
    """P(U >= u) under the null, counted over every assignment of the pooled ranks to ``a`` (no ties):
    the number of ways to draw len(a) of the ranks 1..N with each rank sum, by dynamic programming."""
    m, n = len(a), len(b)
    pooled = sorted(a + b)
    rank_sum = sum(pooled.index(x) + 1 for x in a)
    ways: dict[tuple[int, int], int] = {(0, 0): 1}  # (ranks drawn, their sum) -> number of ways
    for rank in range(1, m + n + 1):
        for (k, total), count in list(ways.items()):
            if k < m:
                ways[(k + 1, total + rank)] = ways.get((k + 1, total + rank), 0) + count
        # (ranks not drawn keep their state: the dict already holds them)
    at_least = sum(count for (k, total), count in ways.items() if k == m and total >= rank_sum)
    return Fraction(at_least, math.comb(m + n, m))


@pytest.mark.parametrize(("m", "n", "shift"), [(5, 5, 0.0), (6, 8, 0.05), (8, 8, 0.1), (12, 7, -0.05), (4, 9, 0.03)])
def test_mann_whitney_is_the_exact_rank_test(m, n, shift):
    rng = random.Random(m * 100 + n)
    a = [rng.gauss(1.0 + shift, 0.05) for _ in range(m)]
    b = [rng.gauss(1.0, 0.05) for _ in range(n)]
    assert stats.mann_whitney_greater(a, b) == pytest.approx(float(exact_u_greater(a, b)), rel=1e-9)
    # the two-sided p-value doubles the smaller tail (the null distribution of U is symmetric)
    smaller = min(exact_u_greater(a, b), exact_u_greater(b, a))
    assert stats.mann_whitney_two_sided(a, b) == pytest.approx(min(1.0, 2 * float(smaller)), rel=1e-9)


def test_mann_whitney_published_extremes():
    # complete separation of 5 against 5: 1 / C(10, 5); the other way round: certain
    assert stats.mann_whitney_greater([2, 3, 4, 5, 6], [0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(1 / 252)
    assert stats.mann_whitney_greater([0.1, 0.2, 0.3, 0.4, 0.5], [2, 3, 4, 5, 6]) == pytest.approx(1.0)
    assert stats.mann_whitney_two_sided([2, 3, 4, 5, 6], [0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 252)
    with pytest.raises(ValueError):
        stats.mann_whitney_greater([], [1.0])


# ----------------------------------------------------------------------------- trend: Kendall and Theil-Sen


def exact_kendall_two_sided(values: list[float]) -> tuple[float, Fraction]:
    """Kendall's tau of ``values`` against their index and its exact two-sided p-value, counted over the
    n! orderings (the number of inversions of a random permutation; no ties)."""
    n = len(values)
    pairs = list(itertools.combinations(range(n), 2))
    s = sum(1 if values[j] > values[i] else -1 for i, j in pairs)
    counts = [1]  # permutations of 1..k by number of inversions (Mahonian numbers)
    for k in range(2, n + 1):
        grown = [0] * (len(counts) + k - 1)
        for inversions, count in enumerate(counts):
            for extra in range(k):
                grown[inversions + extra] += count
        counts = grown
    total = len(pairs)
    extreme = sum(c for inversions, c in enumerate(counts) if abs(total - 2 * inversions) >= abs(s))
    return s / total, Fraction(extreme, math.factorial(n))


def test_trend_is_kendalls_exact_test_and_the_theil_sen_slope():
    values = [1.0, 1.1, 1.05, 1.2, 1.25, 1.3]  # one discordant pair of 15
    found = stats.trend(values)
    tau, p = exact_kendall_two_sided(values)
    assert tau == pytest.approx(13 / 15) and p == Fraction(12, 720)  # permutations with <= 1 inversion, both ways
    assert found.tau == pytest.approx(tau) and found.p_value == pytest.approx(float(p))
    logs = [math.log(v) for v in values]
    slopes = [(logs[j] - logs[i]) / (j - i) for i, j in itertools.combinations(range(6), 2)]
    slope = sorted(slopes)[len(slopes) // 2]  # 15 slopes: the 8th
    assert found.change == pytest.approx(math.exp(slope * 5) - 1) and found.rounds == 6
    falling = [1.4, 1.3, 1.35, 1.2, 1.1, 1.0, 0.95]
    tau, p = exact_kendall_two_sided(falling)
    found = stats.trend(falling)
    assert tau < 0 and found.tau == pytest.approx(tau) and found.p_value == pytest.approx(float(p)) and found.change < 0
    assert stats.trend([1.0, 1.0]).p_value == 1.0  # too short to tell


# ----------------------------------------------------------------------------- tails: published tables


def test_normal_and_student_tails_match_the_tables():
    assert stats.normal_sf(0.0) == pytest.approx(0.5)
    assert stats.normal_sf(1.959964) == pytest.approx(0.025, abs=1e-7)
    assert stats.normal_sf(-1.644854) == pytest.approx(0.95, abs=1e-7)
    assert stats.normal_isf(0.0005) == pytest.approx(3.290527, abs=1e-6)
    assert stats.normal_isf(0.05) == pytest.approx(1.644854, abs=1e-6)
    # Student's t, two-sided 95% and 99% critical values: 2.776 (4 dof), 3.169 (10 dof)
    assert stats.student_sf(2.776445, 4) == pytest.approx(0.025, abs=1e-6)
    assert stats.student_sf(3.169273, 10) == pytest.approx(0.005, abs=1e-6)
    assert stats.student_sf(0.0, 3) == pytest.approx(0.5)
    assert stats.student_isf(0.025, 4) == pytest.approx(2.776445, abs=1e-6)
    assert stats.student_isf(0.0005, 13) == pytest.approx(4.221, abs=5e-4)  # the gate's alpha, 13 dof (3 decimals)
    assert stats.student_sf(3.290527, math.inf) == pytest.approx(0.0005)  # infinite dof: the normal
    assert stats.student_isf(0.0005, math.inf) == pytest.approx(3.290527)


# ----------------------------------------------------------------------------- the median's interval


def test_median_interval_order_statistics():
    # published: n=8 -> [x(1), x(8)] (coverage 99.2%), n=10 -> [x(2), x(9)] (97.9%)
    assert stats.median_interval(list(range(1, 9))) == (1, 8)
    assert stats.median_interval(list(range(1, 11))) == (2, 9)
    assert stats.median_interval([5.0]) == (5.0, 5.0)
    # every n: the narrowest symmetric interval [x(j), x(n+1-j)] whose tails hold at most 2.5% each
    for n in range(1, 41):
        tail = [Fraction(math.comb(n, i), 2**n) for i in range(n + 1)]
        j = max([k for k in range(1, n // 2 + 1) if sum(tail[:k]) <= Fraction(1, 40)], default=1)
        assert stats.median_interval([float(x) for x in range(1, n + 1)]) == (j, n + 1 - j), n


def test_precise_enough():
    assert stats.precise_enough([1.0, 1.001, 0.999, 1.0, 1.002, 0.998, 1.0, 1.0], 0.005)
    assert not stats.precise_enough([1.0, 1.2, 0.8, 1.1, 0.9, 1.0, 1.3, 0.7], 0.005)
    assert not stats.precise_enough([1.0, 1.0], 0.5)


def test_a_runs_median_error_is_robust_to_one_disturbed_round():
    assert stats.median_log_error([1.0, 1.0]) is None  # too few rounds to say
    assert stats.median_log_error([2.0] * 5) == 0.0
    rounds = [math.exp(0.01 * k) for k in (-3, -2, -1, 0, 1, 2, 3, 0, 1)]
    disturbed = [*rounds[:-1], 50.0]  # a neighbour took the cores for one round
    assert stats.median_log_error(disturbed) < 3 * stats.median_log_error(rounds)  # the standard deviation: 70x
    # 1.4826 MAD is the normal's sigma: the standard error of a median is sqrt(pi/2) sigma / sqrt(n)
    draw = random.Random(3)
    normal = [math.exp(draw.gauss(0, 0.1)) for _ in range(4000)]
    assert stats.median_log_error(normal) == pytest.approx(math.sqrt(math.pi / 2) * 0.1 / math.sqrt(4000), rel=0.05)
