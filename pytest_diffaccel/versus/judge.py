"""Judging the head against the base, pair by pair. Pure: no torch, no numpy at import.

Each pair holds one run of each arm, measured back to back on the same machine in the same job.
A test's figure (its ratio to the interleaved fp32, its median in seconds, its compile time...)
gives one log difference per pair, head over base; the pairs are the independent draws of the
machine's noise, the rounds inside a run are not. The rule is the history gate's, on pairs:

- the pair spread of each test is moderated toward the spread expected of it (empirical Bayes,
  ``stats.variance_prior``, the same fit the history gate uses), and judged with Student's t on the
  degrees of freedom of the moderated spread; until three tests have a spread of their own an
  assumed spread stands in, worth ``PRIOR_WEIGHT`` pairs. The spread expected of a test is not one
  typical figure for all: a pair's log difference holds what the two processes differ by (the
  between-run variance, alike for the job's tests) plus what each run's own rounds left uncertain
  (measured in the run: a technique whose rounds scatter, like fp16 emulated on a CPU without it, had
  pairs twice as wide as the typical test's, and judged at the typical spread it raised most of a
  simulated A/A job's false alarms). Two pairs cannot tell such a test's spread by themselves; its
  rounds can. This is a random-effects model (the within-run variance known, DerSimonian-Laird's
  moment estimate of the between-run one) with limma's moderation on top (its covariate-dependent
  prior, as limma-trend's);
- fail: the mean difference is beyond ``max-slowdown`` and significant (p < alpha);
- faster: beyond ``max-slowdown`` the other way and significant;
- not yet decided: beyond max-slowdown but not significant, or beyond half of it with the 95%
  interval reaching past it (on a figure precise enough to settle it at the cap). Such a test gets more
  pairs (``job.py``), and only such a test; at the cap it is *undecided*, which passes unless the run
  is strict (``--diffaccel-require-baseline``).

The pictures: every head run's picture against every base run's picture of the same seed, on the
same machine. The tolerance is measured, not chosen: the base arm's runs against each other say
how far the same code's picture moves on this machine (identical pictures, on a deterministic CPU
stack, allow only what the SSIM of identical images allows).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .. import stats

# A pair's log difference when no three tests of the job have a spread of their own yet: twice a
# run's typical spread (history.FALLBACK_SPREAD), since a pair holds two runs' noise. An assumption,
# worth PRIOR_WEIGHT pairs, and said so in the message.
FALLBACK_PAIR_SPREAD = {"ratio": 0.07, "median": 0.07, "compile_seconds": 0.28, "cold_start_seconds": 0.28}
PRIOR_WEIGHT = 4.0
MIN_PRIOR_TESTS = 3
SUSPECT_FRACTION = 0.5  # beyond half of max-slowdown, with the interval past it: more pairs
GROW_PRECISION = 1.5  # near max-slowdown buys pairs only if 1.5x max-slowdown is decidable at the cap

IDENTICAL_SSIM = 1e-6  # 1 - SSIM of identical pictures is 0 up to float rounding (below 1e-12 in skimage)
PICTURE_WIDEN = 2.0  # the head may move twice as far as the base's own runs moved apart
ONE_RUN_TOLERANCE = 0.002  # one base run: no evidence of its own; the history gate's tight tolerance
BETWEEN_FLOOR = 0.1  # the between-run variance is at least this share of the tests' mean pair variance
# What the typical spread counts as, at most, in pairs. A job's own pairs (one degree of freedom each at the
# start) can't tell its tests apart, and their fit reached the history's cap of 20 in every job; the three real
# A/A jobs' pairs pooled per test (6 to 14 a test) fit 9.8 on the ratio and 8.5 on seconds on this project's
# CPU (benchmarks/base_vs_head.py, docs/base-vs-head.md): at 20, the typical spread held fp16 (pairs 2.4x as
# wide) to too narrow a spread, and a simulated A/A job failed 2.7% of the time; at 8, 1.2%.
MAX_PAIR_PRIOR_DOF = 8.0
MAX_PAIRS_FACTOR = 5  # the cap: five times the pairs a job starts with (docs/base-vs-head.md: what 3 missed)
CONFIRM_FACTOR = 2  # a test fails on twice the starting pairs at least: the pairs after the first confirm


@dataclass(frozen=True)
class PairPrior:
    """The spread expected of a pair's log difference over the job's tests, and what it is worth.

    A test's expected variance is ``scale * (between + noise)``: ``between`` the variance two processes
    add (alike for the tests), ``noise`` the test's own rounds' variance of the two runs' estimates
    (judge.pair_noise), ``scale`` what the fit found the two together under- or overstate."""

    sigma: float | None  # the typical test's expected spread; None: fewer than MIN_PRIOR_TESTS tests with a spread
    dof: float
    tests: int
    between: float = 0.0  # the between-run variance (DerSimonian-Laird's moment estimate over the tests)
    scale: float = 1.0
    noise: float = 0.0  # the typical test's rounds' variance (stands in for a test whose runs did not measure it)

    def expected(self, noise: float | None) -> float:
        """The spread expected of a test whose two runs' rounds left ``noise`` (a variance) uncertain."""
        if self.sigma is None:
            raise ValueError("no prior fitted")
        if noise is None:
            return self.sigma
        return math.sqrt(self.scale * (self.between + noise))


def pair_prior(differences: Iterable[Sequence[float]], noises: Iterable[float | None] | None = None) -> PairPrior:
    """Fit the expected pair spread over the tests that have two pairs or more; ``noises``: each test's
    rounds' variance per pair (``pair_noise``; None where its runs did not measure one)."""
    tests = list(differences)
    given = list(noises) if noises is not None else [None] * len(tests)
    own = []
    for diffs, noise in zip(tests, given, strict=True):
        if len(diffs) >= 2:
            variance = statistics.variance(diffs)
            if variance > 0:
                own.append((variance, float(len(diffs) - 1), noise))
    if len(own) < MIN_PRIOR_TESTS:
        return PairPrior(None, 0.0, len(own))
    return fit_prior(own, MAX_PAIR_PRIOR_DOF)


def fit_prior(own: Sequence[tuple[float, float, float | None]], max_dof: float) -> PairPrior:
    """The prior from each test's (pair variance, its degrees of freedom, its rounds' noise or None): the
    between-run variance (DerSimonian-Laird's moment estimate, floored), then limma's fit of what the two
    together under- or overstate and how many pairs the expectation is worth (at most ``max_dof``)."""
    known = [n for _, _, n in own if n is not None]
    typical_noise = stats.mean(known) if known else 0.0
    rows = [(v, d, typical_noise if n is None else n) for v, d, n in own]
    total = sum(d for _, d, _ in rows)
    spread = sum(d * v for v, d, _ in rows) / total
    # what the pairs scatter by beyond their runs' own rounds; floored, so that a test whose rounds measured
    # no scatter is never expected to have none
    between = max(sum(d * (v - n) for v, d, n in rows) / total, BETWEEN_FLOOR * spread)
    scale, dof = stats.variance_prior(
        [v / (between + n) for v, _, n in rows], [d for _, d, _ in rows], max_dof=max_dof
    )
    return PairPrior(
        math.sqrt(scale * (between + typical_noise)), dof, len(own), between=between, scale=scale, noise=typical_noise
    )


def pair_noise(base: Sequence[float | None], head: Sequence[float | None]) -> float | None:
    """A test's rounds' variance per pair: the mean over its pairs of the two runs' squared standard errors
    (``RunFigures.error``); None when no pair's runs both measured one."""
    each = [b * b + h * h for b, h in zip(base, head, strict=True) if b is not None and h is not None]
    return stats.mean(each) if each else None


@dataclass(frozen=True)
class Comparison:
    """One figure of one test, head against base."""

    figure: str  # "ratio", "median", "compile_seconds", "cold_start_seconds"
    state: str  # "pass", "fail", or "more" (not decided yet: measure more pairs)
    ratio: float  # head over base: exp of the pairs' mean log difference
    low: float  # its 95% interval
    high: float
    p_value: float  # one-sided, slower
    pairs: tuple[float, ...]  # each pair's head over base
    sigma: float  # the moderated spread of one pair's log difference
    dof: float
    prior_tests: int  # tests behind the typical spread; 0: assumed
    max_slowdown: float
    alpha: float
    regression: bool = False
    improvement: bool = False
    undecided: bool = False  # beyond max-slowdown, not significant, though the cap's pairs could have decided it
    reason: str = ""
    expected: float = 0.0  # the spread expected of this test (its rounds' scatter included) before its own pairs

    @property
    def slower(self) -> bool:
        return self.ratio >= 1.0

    def size(self) -> str:
        """'1.31x slower', '1.02x faster'."""
        size = self.ratio if self.ratio >= 1 else 1.0 / self.ratio
        return f"{size:.2f}x {'slower' if self.ratio >= 1 else 'faster'}"

    def describe(self) -> str:
        n = len(self.pairs)
        each = "" if n < 2 else ": " + ", ".join(f"{p:.2f}x" for p in self.pairs[:6]) + (", ..." if n > 6 else "")
        return (
            f"{self.size()} ({n} pair{'s' if n != 1 else ''}{each}; 95% CI {self.low:.2f}-{self.high:.2f}, "
            f"p={self.p_value:.2g})"
        )

    def spread_text(self) -> str:
        if self.prior_tests:
            return (
                f"pair spread {self.sigma:.1%} (expected {self.expected:.1%} from its rounds and the job's "
                f"{self.prior_tests} tests; Student's t, {self.dof:.0f} dof)"
            )
        return f"pair spread assumed {self.sigma:.1%} (fewer than {MIN_PRIOR_TESTS} tests with 2 pairs)"


def compare(
    differences: Sequence[float],
    prior: PairPrior,
    figure: str,
    *,
    max_slowdown: float,
    alpha: float,
    can_grow: bool,
    cap: int | None = None,
    noise: float | None = None,
) -> Comparison:
    """Judge one test's log differences (head over base, one per pair); ``cap``: the pairs it may grow to;
    ``noise``: its rounds' variance per pair (``pair_noise``), which sets the spread expected of it.

    More pairs are asked for where they could decide: every estimate beyond max-slowdown that is not yet
    significant, and one near max-slowdown (beyond half of it, the interval past it) on a figure whose
    typical spread could tell 1.5x max-slowdown from none at the cap. A near figure too noisy for that
    (seconds on a busy machine) is judged on the pairs it has, and buys no runs."""
    if not differences:
        raise ValueError("compare needs at least one pair")
    n = len(differences)
    d = stats.mean(differences)
    own_dof = n - 1
    own = statistics.variance(differences) if n >= 2 else 0.0
    if prior.sigma is not None:
        typical, weight = prior.expected(noise), prior.dof
    else:
        typical, weight = max(FALLBACK_PAIR_SPREAD.get(figure, 0.07), math.sqrt(noise or 0.0)), PRIOR_WEIGHT
    sigma = math.sqrt((weight * typical**2 + own_dof * own) / (weight + own_dof))
    dof = weight + own_dof
    se = sigma / math.sqrt(n)
    p_slower = stats.student_sf(d / se, dof) if se > 0 else (0.0 if d > 0 else 1.0)
    p_faster = stats.student_sf(-d / se, dof) if se > 0 else (0.0 if d < 0 else 1.0)
    half = stats.student_isf(0.025, dof) * se
    threshold = math.log1p(max_slowdown)
    suspect = math.log1p(max_slowdown * SUSPECT_FRACTION)
    significant = d > threshold and p_slower < alpha
    # confirmation, as the history gate confirms a suspect block: a test significant on the starting pairs fails
    # only once the pairs after them agree (twice the starting pairs, all judged together); two pairs that
    # happen to agree can't tell a test whose pairs scatter more than its job's tests (fp16 emulated on a CPU)
    confirm_at = CONFIRM_FACTOR * max(1, (cap or 0) // MAX_PAIRS_FACTOR) if cap else 0
    confirming = significant and can_grow and n < confirm_at
    regression = significant and not confirming
    grown = max(cap or n, n)
    quantile_at_cap = stats.student_isf(alpha, weight + grown - 1)
    at_cap = quantile_at_cap * sigma / math.sqrt(grown)
    beyond_open = d > threshold and not significant
    near_open = suspect < d <= threshold and d + half > threshold
    # beyond max-slowdown and not significant: always more pairs (a spread inflated by two unlucky pairs
    # must not close the question); near it: more pairs when the typical spread could tell 1.5x max-slowdown
    # at the cap (a figure too noisy for that, seconds on a busy machine, buys no runs)
    typical_at_cap = quantile_at_cap * typical / math.sqrt(grown)
    open_question = beyond_open or (near_open and typical_at_cap <= GROW_PRECISION * threshold)
    state, undecided = "pass", False
    if regression:
        state = "fail"
        reason = f"beyond max-slowdown {max_slowdown:.0%} and significant (p < alpha {alpha:g})"
    elif confirming:
        state = "more"
        reason = (
            f"beyond max-slowdown {max_slowdown:.0%} and significant after {n} pair{'s' if n != 1 else ''}: "
            f"confirming with more pairs (a failure needs {confirm_at})"
        )
    elif open_question and can_grow:
        state = "more"
        reason = f"not decided after {n} pair{'s' if n != 1 else ''}: more pairs"
    elif beyond_open and d > at_cap:
        undecided = True
        reason = (
            f"undecided after {n} pair{'s' if n != 1 else ''}: beyond max-slowdown {max_slowdown:.0%} but not "
            f"significant (p={p_slower:.2g} >= alpha {alpha:g}) at this pair spread"
        )
    elif beyond_open:
        reason = (
            f"within this figure's pair noise: beyond max-slowdown {max_slowdown:.0%} but not significant "
            f"(p={p_slower:.2g}), and {max(cap or n, n)} pairs at this spread could not decide it"
        )
    elif d <= threshold:
        reason = f"inside max-slowdown {max_slowdown:.0%}"
    else:  # pragma: no cover - open_question covers every d beyond the threshold that is not a regression
        reason = ""
    return Comparison(
        figure=figure,
        state=state,
        ratio=math.exp(d),
        low=math.exp(d - half),
        high=math.exp(d + half),
        p_value=p_slower,
        pairs=tuple(math.exp(x) for x in differences),
        sigma=sigma,
        dof=dof,
        prior_tests=prior.tests if prior.sigma is not None else 0,
        expected=typical,
        max_slowdown=max_slowdown,
        alpha=alpha,
        regression=regression,
        improvement=d < -threshold and p_faster < alpha,
        undecided=undecided,
        reason=reason,
    )


def log_differences(base: Sequence[float | None], head: Sequence[float | None]) -> list[float]:
    """log(head / base) of each pair whose two runs both measured the figure."""
    return [
        math.log(h / b)
        for b, h in zip(base, head, strict=True)
        if b is not None and h is not None and b > 0 and h > 0 and math.isfinite(b) and math.isfinite(h)
    ]


# ----------------------------------------------------------------------------- components


def component_changes(base: Sequence[Mapping[str, float]], head: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each component's change, head over base: the geometric mean over the pairs of its per-pair ratio.
    The components of each run are on that run's own footing (over its interleaved fp32, or seconds),
    so a slowdown placed all in one component reads at its true size there."""
    changes: dict[str, float] = {}
    names = {k for run in (*base, *head) for k in run}
    for name in sorted(names):
        logs = [
            math.log(h[name] / b[name])
            for b, h in zip(base, head, strict=True)
            if b.get(name, 0.0) > 0 and h.get(name, 0.0) > 0
        ]
        if logs:
            changes[name] = math.exp(stats.mean(logs))
    return changes


def component_noise(base: Sequence[Mapping[str, float]], head: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The standard error of each component's mean log change over the pairs (0 with one pair)."""
    noises: dict[str, float] = {}
    names = {k for run in (*base, *head) for k in run}
    for name in names:
        logs = [
            math.log(h[name] / b[name])
            for b, h in zip(base, head, strict=True)
            if b.get(name, 0.0) > 0 and h.get(name, 0.0) > 0
        ]
        noises[name] = statistics.stdev(logs) / math.sqrt(len(logs)) if len(logs) >= 2 else 0.0
    return noises


# ----------------------------------------------------------------------------- pictures


@dataclass(frozen=True)
class PictureTolerance:
    value: float  # how far 1 - SSIM of a head picture against a base picture may go
    basis: str  # what it was derived from, for the message


def picture_tolerance(between_base_runs: Sequence[float], runs: int) -> PictureTolerance:
    """The same-machine tolerance from the SSIMs of the base arm's ``runs`` runs' pictures against each other."""
    if not between_base_runs:
        return PictureTolerance(
            ONE_RUN_TOLERANCE, f"one base run: no run of its own to measure by, {ONE_RUN_TOLERANCE:g} assumed"
        )
    moved = max(0.0, 1.0 - min(between_base_runs))
    if moved <= IDENTICAL_SSIM:
        return PictureTolerance(IDENTICAL_SSIM, f"the base's {runs} runs gave identical pictures")
    return PictureTolerance(
        PICTURE_WIDEN * moved, f"{PICTURE_WIDEN:g}x the base's {runs} runs' own variation (1 - SSIM {moved:.2g})"
    )


@dataclass(frozen=True)
class PictureChange:
    ssim: float  # the worst SSIM of a head picture against a base picture of the same seed
    tolerance: PictureTolerance

    @property
    def changed(self) -> bool:
        return 1.0 - self.ssim > self.tolerance.value

    def describe(self) -> str:
        verb = "changed" if self.changed else "unchanged"
        return (
            f"picture {verb} vs base: SSIM {self.ssim:.4f} against the base's picture of the same seed "
            f"(tolerance {self.tolerance.value:.2g}: {self.tolerance.basis})"
        )
