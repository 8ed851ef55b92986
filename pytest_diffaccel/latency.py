"""The run-level latency rule: confirm before failing, judge against the history's spread. Pure, no torch.

A test measures its technique in *blocks*: fresh pipeline, fresh warm-up, timed rounds interleaved
with a fresh fp32 reference. Each block gives one run-level estimate (the median paired ratio, or
the median latency in absolute mode). The history of earlier runs (history.py) gives the level to
compare with and the run-to-run spread sigma. Like Chromium's Pinpoint, the rule answers one of
three things: pass, fail, or "another": not sure yet, measure an independent block.

1. After block 1: at or below the *suspect* level (half of max-slowdown) above the history's
   mean -> pass; clean techniques pay nothing extra. Beyond it, or when its rounds drifted ->
   another block.
2. With k blocks, d = the mean of the blocks' log differences from the history's mean (their
   median with three: one disturbed block can't carry the verdict), its standard error
   se = sigma * sqrt(1 + 1/n), p = P(T > d / se) with Student's t on the degrees of freedom of sigma
   (history.Spread.dof: the test's own runs plus the runs the machine's prior is worth; sigma is an
   estimate, and a normal test would take it as known and fail a noisy technique several times
   alpha's rate). The blocks of one run share its process and the machine's state of the moment,
   so they are not independent draws of the run-to-run spread: the confirmation buys robustness (a
   majority must agree), not a smaller standard error. Fail only when all three hold: d beyond
   log(1 + max-slowdown), p < alpha, and a majority of the blocks beyond max-slowdown. Two blocks
   that disagree (one beyond max-slowdown, one not) with a block left to spend -> another block.
3. Passing with d below -log(1 + max-slowdown) and significant the other way is "faster".
4. "Can't tell yet" is not a pass: when a majority of the blocks (all of them, with two) agree beyond
   max-slowdown but the history is too short or too noisy to make it significant, the verdict is
   *undecided*, with the number of runs of history that would decide a slowdown of this size at
   this spread (None when no history length would: the spread itself is too wide).

alpha is per test; a matrix of T clean tests raises any false alarm with chance at most
1 - (1 - alpha)^T (``matrix_false_alarm([alpha] * T)``): the default 0.0005 keeps a 20-test matrix under 1%.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import stats
from .history import Spread

SUSPECT_FRACTION = 0.5  # a block beyond half of max-slowdown is confirmed before any verdict


@dataclass(frozen=True)
class Judgement:
    state: str  # "pass", "fail" or "another" (measure an independent block, then judge again)
    ratio: float  # exp(d): the run's estimate over the history's mean
    low: float  # 95% interval of the ratio, from the run-level spread
    high: float
    p_value: float  # one-sided, slower
    blocks: tuple[float, ...]  # each block's ratio to the history's mean
    history_runs: int
    spread: Spread
    max_slowdown: float
    alpha: float
    detectable: float  # the smallest slowdown (ratio) two blocks could fail at, at this spread
    regression: bool = False
    improvement: bool = False
    reason: str = ""
    drifted: tuple[bool, ...] = field(default=())
    undecided: bool = False  # beyond max-slowdown by the blocks, but not significant against this history
    deciding_runs: int | None = None  # runs of history that would make this estimate significant

    def describe(self) -> str:
        direction = "slower" if self.ratio >= 1 else "faster"
        size = self.ratio if self.ratio >= 1 else 1.0 / self.ratio
        blocks = ""
        if len(self.blocks) > 1:
            blocks = f"{len(self.blocks)} blocks: " + ", ".join(f"{b:.2f}x" for b in self.blocks) + "; "
        return (
            f"{size:.2f}x {direction} ({blocks}95% CI {self.low:.2f}-{self.high:.2f}, p={self.p_value:.2g}) "
            f"vs {self.history_runs} run{'s' if self.history_runs != 1 else ''}"
        )

    @property
    def blind(self) -> bool:
        """The spread is so wide that a slowdown well beyond max-slowdown can't be told from noise."""
        return self.detectable > (1.0 + self.max_slowdown) * 1.25


def center(values: Sequence[float]) -> float:
    """The blocks' combined estimate: their mean, their median with three or more (one disturbed block
    can't carry the verdict)."""
    return stats.mean(values) if len(values) <= 2 else stats.median(values)


def deciding_runs(d: float, spread: Spread, alpha: float) -> int | None:
    """The history length n at which an estimate d (log) would be significant at this spread:
    d > t_alpha * sigma * sqrt(1 + 1/n), t_alpha on the degrees of freedom n runs would give (n minus
    the levels so far, plus the runs the prior is worth). None when no length would (d within the
    normal's z_alpha * sigma, the limit of a long history)."""
    sigma = spread.sigma
    z = stats.normal_isf(alpha) * sigma
    if z <= 0 or d <= z:
        return None
    levels = spread.runs - spread.own_dof  # the levels of the history: each costs a degree of freedom
    n = 1
    while d <= stats.student_isf(alpha, max(n - levels, 0) + spread.prior_dof) * sigma * math.sqrt(1.0 + 1.0 / n):
        n = n + 1 if n < 64 else n * 2  # past 64 runs, doubling: the answer is "very many" either way
    return n


def detectable_ratio(spread: Spread, history_runs: int, max_slowdown: float, alpha: float) -> float:
    """The smallest slowdown that blocks exactly at it would fail: beyond max-slowdown and significant
    (the blocks of one run share its noise: their number does not shrink the standard error)."""
    se = spread.sigma * math.sqrt(1.0 + 1.0 / max(history_runs, 1))
    return math.exp(max(math.log1p(max_slowdown), stats.student_isf(alpha, spread.dof) * se))


def judge(
    blocks: Sequence[float],
    history: Sequence[float],
    spread: Spread,
    *,
    max_slowdown: float,
    alpha: float,
    max_blocks: int = 3,
    suspect: float | None = None,
    drifted: Sequence[bool] = (),
) -> Judgement:
    """Judge the candidate's block estimates (logs) against the history's newest level (logs)."""
    if not blocks or not history:
        raise ValueError("judge needs at least one block and one run of history")
    threshold = math.log1p(max_slowdown)
    suspect_level = math.log1p(max_slowdown * SUSPECT_FRACTION if suspect is None else suspect)
    base = stats.mean(history)
    diffs = [b - base for b in blocks]
    d = center(diffs)
    se = spread.sigma * math.sqrt(1.0 + 1.0 / len(history))
    dof = spread.dof
    p_slower = stats.student_sf(d / se, dof) if se > 0 else (0.0 if d > 0 else 1.0)
    p_faster = stats.student_sf(-d / se, dof) if se > 0 else (0.0 if d < 0 else 1.0)
    half_width = stats.student_isf(0.025, dof) * se
    beyond = [x > threshold for x in diffs]
    drift = tuple(bool(x) for x in drifted) + (False,) * (len(blocks) - len(drifted))
    k = len(blocks)
    significant = p_slower < alpha
    majority = 2 * sum(beyond) > k
    fail = d > threshold and significant and majority

    state = "fail" if fail else "pass"
    reason = ""
    if k < max_blocks:
        if k == 1 and (diffs[0] > suspect_level or drift[0]):
            state = "another"
            reason = (
                "block 1 drifted: confirming"
                if drift[0] and diffs[0] <= suspect_level
                else f"block 1 {math.exp(diffs[0]):.2f}x is beyond the suspect level "
                f"{math.exp(suspect_level):.2f}x: confirming"
            )
        elif k >= 2 and any(beyond) and not all(beyond):
            state = "another"
            reason = "the blocks disagree about max-slowdown: one more block"
    # how long a history would decide it: only for a pass beyond max-slowdown, computed once
    deciding = deciding_runs(d, spread, alpha) if state == "pass" and d > threshold else None
    if state == "fail":
        reason = f"beyond max-slowdown {max_slowdown:.0%} and significant (p < alpha {alpha:g})"
    elif state == "pass":
        if d <= threshold:
            reason = f"inside max-slowdown {max_slowdown:.0%}"
        elif not significant and majority:
            decide = (
                f"a history of about {deciding} runs at this spread would decide it"
                if deciding is not None
                else "no history length decides it at this spread: the machine is too noisy for this gate"
            )
            reason = (
                f"undecided: the blocks agree beyond max-slowdown {max_slowdown:.0%}, but a history of "
                f"{len(history)} run{'s' if len(history) != 1 else ''} can't make it significant "
                f"(p={p_slower:.2g} >= alpha {alpha:g}); {decide}"
            )
        elif not significant:
            reason = f"within this machine's run-to-run noise (p={p_slower:.2g} >= alpha {alpha:g})"
        else:
            reason = "only a minority of the blocks beyond max-slowdown"
    return Judgement(
        state=state,
        ratio=math.exp(d),
        low=math.exp(d - half_width),
        high=math.exp(d + half_width),
        p_value=p_slower,
        blocks=tuple(math.exp(x) for x in diffs),
        history_runs=len(history),
        spread=spread,
        max_slowdown=max_slowdown,
        alpha=alpha,
        detectable=detectable_ratio(spread, len(history), max_slowdown, alpha),
        regression=state == "fail",
        improvement=state == "pass" and d < -threshold and p_faster < alpha,
        reason=reason,
        drifted=drift,
        undecided=state == "pass" and d > threshold and majority and not significant,
        deciding_runs=deciding,
    )


def matrix_false_alarm(chances: Iterable[float]) -> float:
    """The chance that a clean run of independent tests raises any latency false alarm, given each test's
    chance of one (at most alpha each under the rule's model: ``[alpha] * T`` gives 1 - (1 - alpha)^T)."""
    return 1.0 - math.prod(1.0 - p for p in chances)


def drifted(values: Sequence[float], max_slowdown: float, p: float = 0.01) -> stats.Trend | None:
    """The block's trend when its rounds drift: a significant monotone trend (Kendall, p < ``p``)
    whose size across the block exceeds half of max-slowdown. None when they don't."""
    found = stats.trend(values)
    if found.p_value < p and abs(found.change) > max_slowdown * SUSPECT_FRACTION:
        return found
    return None


# ----------------------------------------------------------------------------- creeping regressions

CREEP_MIN_RUNS = 4  # runs of the level before a creep can be told from noise
CREEP_TREND_P = 0.05  # the series (level and this run) must rise monotonically: Kendall, two-sided


@dataclass(frozen=True)
class Creep:
    """A series of saves, each within noise, that crept beyond max-slowdown from its anchor."""

    ratio: float  # this run over the anchor (the level's oldest runs)
    saves: int  # saved runs since the anchor
    p_value: float  # this run vs the anchor, with the level's successive-difference spread
    trend_p: float  # Kendall's test of the level's series and this run
    sigma: float

    def describe(self) -> str:
        return (
            f"crept: {self.ratio:.2f}x slower than {self.saves} saves ago (the oldest runs of this level), "
            f"each save within noise; the series rises (Kendall p={self.trend_p:.2g}), the anchor is beyond "
            f"doubt (p={self.p_value:.2g}, successive-difference spread {self.sigma:.1%})"
        )


def successive_spread(values: Sequence[float], prior: float, weight: int) -> tuple[float, int]:
    """The run-to-run spread of a series that may drift, from successive differences (von Neumann):
    a slow trend barely moves it, where the plain standard deviation grows with the trend and blinds
    the gate it feeds. Moderated toward ``prior`` as history.spread does; returns it with its degrees
    of freedom (the series' and the prior's)."""
    n = len(values)
    if n < 2:
        return prior, weight
    mssd = sum((b - a) ** 2 for a, b in itertools.pairwise(values)) / (2.0 * (n - 1))
    dof = n - 1
    return math.sqrt((weight * prior**2 + dof * mssd) / (weight + dof)), dof + weight


def creep(
    level: Sequence[float], now: float, prior: float, *, max_slowdown: float, alpha: float, weight: int = 4
) -> Creep | None:
    """Judge this run (log) against the anchor of its level (logs, oldest first): the mean of its oldest
    runs (a third of them, at least two). A creep needs all three: beyond max-slowdown from the anchor,
    significant at ``alpha`` with the successive-difference spread (Student's t: that spread is itself
    estimated from a handful of runs), and a monotone rise over the level and this run (Kendall
    p < CREEP_TREND_P), so that an anchor that was merely a fast outlier can't fail a run on its own.
    Measured by benchmarks/creep.py (docs/creep.md): on clean histories it adds false alarms at about
    alpha's rate; at +4% a save it catches the drift by the 5th to 10th save."""
    if len(level) < CREEP_MIN_RUNS:
        return None
    anchor = list(level[: max(2, len(level) // 3)])
    d = now - stats.mean(anchor)
    if d <= math.log1p(max_slowdown):
        return None
    sigma, dof = successive_spread([*level, now], prior, weight)
    se = sigma * math.sqrt(1.0 + 1.0 / len(anchor))
    p_value = stats.student_sf(d / se, dof) if se > 0 else 0.0
    found = stats.trend([math.exp(v) for v in (*level, now)])
    if p_value >= alpha or found.tau <= 0 or found.p_value >= CREEP_TREND_P:
        return None
    return Creep(math.exp(d), len(level) - len(anchor) + 1, p_value, found.p_value, sigma)
