"""Distribution-free statistics for latency samples. Pure Python, no torch, no numpy.

* ``mann_whitney_greater``: one-sided Mann-Whitney U test that the candidate's samples are
  stochastically greater (slower) than the baseline's; exact null distribution when there
  are no ties and the samples are small, normal approximation with tie and continuity
  correction otherwise.
* ``ratio_interval``: Hodges-Lehmann estimate of the ratio candidate/baseline (the shift of
  log latencies) with its exact distribution-free confidence interval.
* ``median_interval``: order-statistic confidence interval of a median, used to stop timing
  once the median is known precisely enough.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default method)."""
    if not values:
        raise ValueError("quantile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def iqr(values: Sequence[float]) -> float:
    return quantile(values, 0.75) - quantile(values, 0.25)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def stddev(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


# ----------------------------------------------------------------------------- Mann-Whitney U

EXACT_LIMIT = 60  # exact null distribution up to this many samples a side


@lru_cache(maxsize=256)
def u_distribution(m: int, n: int) -> tuple[int, ...]:
    """Counts of each U value 0..m*n under the null hypothesis (no ties): the coefficients of the
    Gaussian binomial coefficient [m+n choose m]_q. They sum to C(m+n, m)."""
    if m < 0 or n < 0:
        raise ValueError("sample sizes must be non-negative")
    size = m * n + 1
    coefficients = [0] * size
    coefficients[0] = 1
    for i in range(1, m + 1):
        # multiply by (1 - q^(n+i)) ...
        step = n + i
        for k in range(size - 1, step - 1, -1):
            coefficients[k] -= coefficients[k - step]
        # ... and divide by (1 - q^i): exact, as a running sum with stride i
        for k in range(i, size):
            coefficients[k] += coefficients[k - i]
    return tuple(coefficients)


def u_statistic(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """Pairs where the candidate is greater, ties counting one half."""
    u = 0.0
    for x in candidate:
        for y in baseline:
            if x > y:
                u += 1.0
            elif x == y:
                u += 0.5
    return u


def min_p_value(m: int, n: int) -> float:
    """The smallest one-sided p-value that m against n samples can reach: 1 / C(m+n, m)."""
    return 1.0 / math.comb(m + n, m)


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_greater(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """One-sided p-value for H1: the candidate tends to be greater than the baseline."""
    m, n = len(candidate), len(baseline)
    if m == 0 or n == 0:
        raise ValueError("Mann-Whitney U needs samples on both sides")
    u = u_statistic(candidate, baseline)
    pooled = list(candidate) + list(baseline)
    ties = len(pooled) != len(set(pooled))
    if not ties and max(m, n) <= EXACT_LIMIT:
        counts = u_distribution(m, n)
        start = math.ceil(u)
        return sum(counts[start:]) / math.comb(m + n, m)
    # normal approximation, tie-corrected variance, continuity correction
    total = m + n
    tie_term = 0.0
    for value in set(pooled):
        t = pooled.count(value)
        tie_term += t**3 - t
    variance = m * n / 12.0 * ((total + 1) - tie_term / (total * (total - 1)))
    if variance <= 0:
        return 1.0
    z = (u - m * n / 2.0 - 0.5) / math.sqrt(variance)
    return _normal_sf(z)


# ----------------------------------------------------------------------------- intervals


def _critical_count(m: int, n: int, tail: float) -> int:
    """Largest k with P(U < k) <= tail under the null (exact, or normal for large samples)."""
    if max(m, n) <= EXACT_LIMIT:
        counts = u_distribution(m, n)
        total = math.comb(m + n, m)
        cumulative = 0
        k = 0
        while k < len(counts) and (cumulative + counts[k]) / total <= tail:
            cumulative += counts[k]
            k += 1
        return k
    z = -_inverse_normal_sf(tail)
    mu = m * n / 2.0
    sigma = math.sqrt(m * n * (m + n + 1) / 12.0)
    return max(0, math.floor(mu + z * sigma))


def _inverse_normal_sf(p: float) -> float:
    """z with P(Z > z) = p, by bisection (only used for large samples)."""
    low, high = -10.0, 10.0
    for _ in range(100):
        mid = (low + high) / 2.0
        if _normal_sf(mid) > p:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def ratio_interval(
    candidate: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Hodges-Lehmann ratio candidate/baseline and its confidence interval (estimate, low, high).

    Works on log latencies, so the estimate is the median of all pairwise ratios. The interval
    is exact for a pure shift of the log latencies; with few samples its coverage is at least
    the one asked for (when even the widest interval can't reach it, the range of the pairwise
    ratios is returned).
    """
    if not candidate or not baseline:
        raise ValueError("ratio_interval needs samples on both sides")
    if min(candidate) <= 0 or min(baseline) <= 0:
        raise ValueError("latencies must be positive")
    diffs = sorted(math.log(x) - math.log(y) for x in candidate for y in baseline)
    estimate = math.exp(median(diffs))
    k = _critical_count(len(candidate), len(baseline), (1.0 - confidence) / 2.0)
    k = max(k, 1)
    low = math.exp(diffs[k - 1])
    high = math.exp(diffs[len(diffs) - k])
    return estimate, low, high


def median_interval(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the median from order statistics (binomial)."""
    n = len(samples)
    if n == 0:
        raise ValueError("median_interval of no samples")
    ordered = sorted(samples)
    tail = (1.0 - confidence) / 2.0
    j = 0
    cumulative = 0.0
    while j < n:
        next_cumulative = cumulative + math.comb(n, j) / 2.0**n
        if next_cumulative > tail:
            break
        cumulative = next_cumulative
        j += 1
    j = max(j, 1)
    return ordered[j - 1], ordered[n - j]


def precise_enough(samples: Sequence[float], target: float, confidence: float = 0.95) -> bool:
    """Whether the median's confidence interval is narrower than +-target (relative)."""
    if len(samples) < 3:
        return False
    low, high = median_interval(samples, confidence)
    mid = median(samples)
    return mid > 0 and (high - low) / (2.0 * mid) <= target
