"""Statistics for latency samples and run-level estimates. No torch; numpy and scipy imported on first use.

Library code does the arithmetic: the standard library's ``statistics`` and ``math`` (descriptive
statistics, the normal distribution: the latency gate needs it on every judgement and its simulations
millions of times), numpy (quantiles) and ``scipy.stats`` (the rank tests, Student's t, binomial
quantiles). This module keeps only small conveniences and the shapes our decisions need:

* ``median``/``quantile``/``iqr``/``mean``/``geometric_mean``/``stddev``: plain descriptive statistics
  (``statistics``; ``quantile`` is numpy's linear interpolation), raising ValueError on no values;
  ``median_log_error``: how precisely a run's rounds fix its median (a robust standard error);
* ``median_interval``/``precise_enough``: the order-statistic (binomial) interval of a median,
  used to stop timing rounds once a block's median is known well enough;
* ``mann_whitney_greater``/``mann_whitney_two_sided``: scipy's U test (exact for small samples
  without ties), kept for the rules we compare ourselves with (asv, the round-level rule);
* ``trend``: Kendall's tau and the Theil-Sen slope of a series, to tell a block whose rounds
  drift from one that is merely noisy;
* ``normal_sf``/``normal_isf``/``student_sf``/``student_isf``: tail probabilities of the standard normal and
  of Student's t (infinite degrees of freedom: the normal);
* ``variance_prior``: the empirical-Bayes prior of many tests' variances (Smyth's moderated t, as limma
  fits it): their typical variance and how many runs of evidence it is worth.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default method)."""
    if not values:
        raise ValueError("quantile of no values")
    import numpy

    return float(numpy.quantile(values, q))


def iqr(values: Sequence[float]) -> float:
    return quantile(values, 0.75) - quantile(values, 0.25)


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return statistics.fmean(values)


def geometric_mean(values: Sequence[float]) -> float:
    """The geometric mean of positive values (latencies, ratios)."""
    if not values:
        raise ValueError("geometric mean of no values")
    log_ratios(values)  # ValueError for a value that is not positive, as the other log-scale helpers
    return statistics.geometric_mean(values)


def median_log_error(values: Sequence[float]) -> float | None:
    """The standard error of log(median) of positive values (a run's rounds): the normal's efficiency of
    the median (sqrt(pi / 2)) times a robust spread of the logs (1.4826 MAD: one disturbed round can't
    inflate it) over sqrt(n). None for fewer than three values: a spread needs some."""
    if len(values) < 3:
        return None
    logs = log_ratios(values)
    centre = statistics.median(logs)
    mad = statistics.median([abs(x - centre) for x in logs])
    return math.sqrt(math.pi / 2.0) * 1.4826 * mad / math.sqrt(len(logs))


def stddev(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    return statistics.stdev(values)


def log_ratios(values: Sequence[float]) -> list[float]:
    if any(v <= 0 for v in values):
        raise ValueError("latencies and ratios must be positive")
    return [math.log(v) for v in values]


# ----------------------------------------------------------------------------- normal tails


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z (the complementary error function: exact far into the tail)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_isf(p: float) -> float:
    """z with P(Z > z) = p (the standard library's inverse normal, Wichura's AS241), for 0 < p < 1."""
    return 0.0 - statistics.NormalDist().inv_cdf(p)


def student_sf(t: float, dof: float) -> float:
    """P(T > t) for Student's t with ``dof`` degrees of freedom (a spread estimated from few runs);
    the normal's for infinite ``dof`` (a spread taken as known)."""
    if math.isinf(dof):
        return normal_sf(t)
    from scipy.special import stdtr  # the t distribution's cdf itself: scipy.stats' wrapper costs about 30x more a call

    return float(stdtr(dof, -t))


def student_isf(p: float, dof: float) -> float:
    """t with P(T > t) = p for Student's t with ``dof`` degrees of freedom (the normal's for infinite ``dof``)."""
    if math.isinf(dof):
        return normal_isf(p)
    from scipy.special import stdtrit

    return -float(stdtrit(dof, p))


# ----------------------------------------------------------------------------- many tests' variances

MAX_PRIOR_DOF = 20.0  # the typical variance counts as at most this many runs, however alike the tests are


def variance_prior(
    variances: Sequence[float], dofs: Sequence[float], max_dof: float = MAX_PRIOR_DOF
) -> tuple[float, float]:
    """The typical variance s0^2 of many tests and its degrees of freedom d0, from each test's own
    variance and its degrees of freedom (Smyth 2004, "Linear models and empirical Bayes methods for
    assessing differential expression", section 6: the moments of log s^2; limma's ``fitFDist``).
    Tests that scatter alike give a large d0 (their typical variance says much about each of them),
    tests as different as a CPU's techniques a small one (it says little): moderating each test's
    variance with weight d0, ``(d0 s0^2 + d s^2) / (d0 + d)``, and judging with Student's t on
    ``d0 + d`` degrees of freedom keeps the false-alarm rate at alpha in both cases. d0 is at most
    ``max_dof`` (``MAX_PRIOR_DOF`` unless given), so that one test much noisier than alike others keeps a say in
    its own spread."""
    pairs = [(v, d) for v, d in zip(variances, dofs, strict=True) if v > 0 and d > 0]
    if len(pairs) < 2:
        raise ValueError("variance_prior needs at least two tests with a positive variance")
    from scipy.special import digamma, polygamma

    centred = [math.log(v) - float(digamma(d / 2.0)) + math.log(d / 2.0) for v, d in pairs]
    typical = mean(centred)
    excess = statistics.variance(centred) - mean([float(polygamma(1, d / 2.0)) for _, d in pairs])
    prior_dof = max_dof if excess <= 0 else min(2.0 * trigamma_inverse(excess), max_dof)
    variance = math.exp(typical + float(digamma(prior_dof / 2.0)) - math.log(prior_dof / 2.0))
    return variance, prior_dof


def trigamma_inverse(y: float) -> float:
    """x with trigamma(x) = y, for y > 0 (Newton's method from 0.5 + 1/y, as limma's ``trigammaInverse``)."""
    if y <= 0:
        raise ValueError("trigamma_inverse needs a positive value")
    if y > 1e7:
        return 1.0 / math.sqrt(y)
    if y < 1e-6:
        return 1.0 / y
    from scipy.special import polygamma

    x = 0.5 + 1.0 / y
    for _ in range(50):
        tri = float(polygamma(1, x))
        step = tri * (1.0 - tri / y) / float(polygamma(2, x))
        x += step
        if -step / x < 1e-8:
            break
    return x


# ----------------------------------------------------------------------------- rank tests (scipy)


def mann_whitney_greater(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """One-sided p-value that the candidate tends to be greater (slower) than the baseline."""
    if not candidate or not baseline:
        raise ValueError("Mann-Whitney U needs samples on both sides")
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(candidate, baseline, alternative="greater", method="auto").pvalue)


def mann_whitney_two_sided(a: Sequence[float], b: Sequence[float]) -> float:
    if not a or not b:
        raise ValueError("Mann-Whitney U needs samples on both sides")
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(a, b, alternative="two-sided", method="auto").pvalue)


# ----------------------------------------------------------------------------- a block's median


def median_interval(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the median from order statistics (binomial, scipy's quantiles)."""
    n = len(samples)
    if n == 0:
        raise ValueError("median_interval of no samples")
    from scipy.stats import binom

    ordered = sorted(samples)
    tail = (1.0 - confidence) / 2.0
    # the largest j with P(Bin(n, 1/2) < j) <= tail; the interval is [x_(j), x_(n+1-j)]
    k = int(binom.ppf(tail, n, 0.5))  # the smallest k with P(Bin(n, 1/2) <= k) >= tail
    j = max(k + 1 if binom.cdf(k, n, 0.5) <= tail else k, 1)
    return ordered[j - 1], ordered[n - j]


def precise_enough(samples: Sequence[float], target: float, confidence: float = 0.95) -> bool:
    """Whether the median's confidence interval is narrower than +-target (relative)."""
    if len(samples) < 3:
        return False
    low, high = median_interval(samples, confidence)
    mid = median(samples)
    return mid > 0 and (high - low) / (2.0 * mid) <= target


# ----------------------------------------------------------------------------- drift within a block


@dataclass(frozen=True)
class Trend:
    """A monotone trend across a block's rounds: Kendall's tau against the round index (p-value,
    two-sided, exact for small series without ties) and the Theil-Sen slope of the log values,
    expressed as the change from the first round to the last."""

    tau: float
    p_value: float
    change: float  # exp(slope * (n - 1)) - 1: +0.37 means the last round is 37% above the first
    rounds: int

    def describe(self) -> str:
        kendall = f"Kendall tau {self.tau:+.2f}, p={self.p_value:.2g}"
        return f"{self.change:+.0%} from the first round to the last ({kendall})"


def trend(values: Sequence[float]) -> Trend:
    """The trend of positive values (latencies or ratios) over their order."""
    n = len(values)
    if n < 3:
        return Trend(tau=0.0, p_value=1.0, change=0.0, rounds=n)
    from scipy.stats import kendalltau, theilslopes

    logs = log_ratios(values)
    index = list(range(n))
    result = kendalltau(index, logs)
    tau = 0.0 if math.isnan(result.statistic) else float(result.statistic)
    p_value = 1.0 if math.isnan(result.pvalue) else float(result.pvalue)
    slope = float(theilslopes(logs, index)[0])
    return Trend(tau=tau, p_value=p_value, change=math.exp(slope * (n - 1)) - 1.0, rounds=n)
