"""One test's decision in a base-vs-head job: its gates, from its runs in both arms. Pure: no torch.

Gates, in the order they are judged (the first failure heads the message):
1. the head's own picture gates, which need no history (broken image, fidelity vs the floors,
   not applied, captions): the head arm's runs judged them; a failure in any head run fails;
2. ``picture vs base``: the head's picture against the base's picture of the same seed, within
   the tolerance the base's own runs measured (judge.picture_tolerance);
3. ``latency``: head over base, pair by pair, on the figure the history gate judges: a technique's
   ratio to the interleaved fp32, fp32's own seconds (on one machine in one job the absolute time
   is comparable: a change that slows fp32 and everything with it fails fp32's row); the breakdown
   names what moved;
4. ``compile time`` and ``cold start``, the same rule with ``max-compile-increase``;
5. ``memory``: the head's peak against the base's, with ``max-memory-increase`` and the slack.
A test only in the head is ``new in head: not judged`` (strict mode fails it); report-only gates
pass, reported, as in any run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .. import breakdown
from ..units import fmt_bytes
from ..verdict import Gate, reported_only
from .figures import RunFigures
from .judge import (
    Comparison,
    PairPrior,
    PictureChange,
    compare,
    component_changes,
    component_noise,
    log_differences,
    pair_noise,
)

LATENCY_FIGURES = {"ratio": "relative to the interleaved fp32", "median": "in seconds"}
OTHER_FIGURES = {"compile_seconds": "compile time", "cold_start_seconds": "cold start"}
NEW = "new in head: not judged"


@dataclass(frozen=True)
class Limits:
    """The thresholds of the run, as the history gate has them."""

    max_slowdown: float
    max_compile_increase: float
    max_memory_increase: float
    memory_slack: int
    alpha: float
    report_only: Sequence[str] = ()
    strict: bool = False


@dataclass
class Decision:
    test_id: str
    technique: str
    state: str  # "judged", "new", "skipped", "gone"
    gates: list[Gate] = field(default_factory=list)
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    picture: PictureChange | None = None
    moved: str = ""  # which component moved (breakdown), on a latency regression
    reason: str = ""  # why skipped
    reported: tuple[str, ...] = ()

    @property
    def more(self) -> bool:
        """Not decided yet: more pairs would decide it."""
        return any(c.state == "more" for c in self.comparisons.values())

    @property
    def failed(self) -> bool:
        return any(not g.passed for g in self.gates)

    @property
    def failures(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    @property
    def latency(self) -> Comparison | None:
        """The comparison the table shows: the ratio to the interleaved fp32, else the seconds."""
        return self.comparisons.get("ratio") or self.comparisons.get("median")

    @property
    def headline(self) -> str:
        if self.state == "skipped":
            return "skipped"
        if self.state == "gone":
            return "gone from head"
        failures = self.failures
        if failures:
            return "FAIL " + ", ".join(g.name for g in failures)
        if self.state == "new":
            return NEW
        if self.reported:
            return "pass (" + ", ".join(self.reported) + " reported only)"
        latency = [c for f, c in self.comparisons.items() if f in LATENCY_FIGURES]
        if any(c.undecided for c in latency):
            return "undecided"
        if latency and all(c.improvement for c in latency[:1]):
            return "pass (faster)"
        return "pass"

    def message(self) -> str:
        lines = [f"diffaccel verdict for {self.technique} vs base: {self.headline}"]
        lines += [f"  {g.name} gate failed: {g.message}" for g in self.failures]
        return "\n".join(lines)


def decide(
    test_id: str,
    base: Sequence[RunFigures | None],
    head: Sequence[RunFigures | None],
    priors: Mapping[str, PairPrior],
    picture: PictureChange | None,
    limits: Limits,
    base_label: str,
    can_grow: bool,
    cap: int | None = None,
) -> Decision:
    """The decision for one test from its runs in each arm (one per pair, None where a run lacked it)."""
    measured_head = [h for h in head if h is not None]
    technique = next((h.technique for h in measured_head), test_id)
    if not [b for b in base if b is not None]:
        gates = [Gate("baseline", False, f"{NEW} (--diffaccel-require-baseline)")] if limits.strict else []
        return Decision(test_id, technique, "new", gates=gates)
    if measured_head and all(h.outcome == "skipped" for h in measured_head):
        return Decision(test_id, technique, "skipped", reason=measured_head[0].reason)
    decision = Decision(test_id, technique, "judged", picture=picture)
    decision.gates += _head_gates(measured_head)
    if picture is not None:
        decision.gates.append(Gate("picture vs base", not picture.changed, picture.describe()))
    pairs = measured_pairs((base, head))
    if pairs:
        decision.gates += _latency_gates(decision, pairs, priors, limits, base_label, can_grow, cap)
        decision.gates += _figure_gates(decision, pairs, priors, limits, can_grow)
        decision.gates.append(_memory_gate(pairs, limits))
    decision.gates, decision.reported = reported_only(decision.gates, limits.report_only)
    return decision


def _head_gates(head: Sequence[RunFigures]) -> list[Gate]:
    """The gates the head's runs judged without a history: the first failure of each gate, naming the run."""
    gates: dict[str, Gate] = {}
    for number, run in enumerate(head, 1):
        for name, message in run.picture_failures:
            gates.setdefault(name, Gate(name, False, f"{message} (head run {number})"))
        if run.outcome in ("failed", "error") and not run.picture_failures and not run.measured:
            gates.setdefault("head", Gate("head", False, f"{run.reason or run.outcome} (head run {number})"))
    return list(gates.values())


def _latency_gates(
    decision: Decision,
    pairs: Sequence[tuple[RunFigures, RunFigures]],
    priors: Mapping[str, PairPrior],
    limits: Limits,
    base_label: str,
    can_grow: bool,
    cap: int | None,
) -> list[Gate]:
    failing, passing, undecided = [], [], False
    for figure, words in LATENCY_FIGURES.items():
        # on the figure the history gate judges the test by: a technique's ratio to the interleaved fp32 (the
        # machine's speed of the moment cancels), fp32's seconds (a change that slows fp32 and everything with
        # it). A technique's seconds between two processes scatter 7-30% a pair on this project's CPU, against
        # 6% for its ratio: judged too, they raised a simulated A/A job's false alarms to 4-7% (base-vs-head.md)
        if figure != pairs[-1][1].figure:
            continue
        comparison = _compared(decision, pairs, priors, figure, limits.max_slowdown, limits.alpha, can_grow, cap)
        if comparison is None:
            continue
        text = f"{words}, {comparison.describe()} vs base {base_label}: {comparison.reason}; {comparison.spread_text()}"
        (failing if comparison.regression else passing).append((figure, text))
        undecided = undecided or comparison.undecided
    if failing:
        figure, text = failing[0]
        decision.moved = moved(pairs, figure)
        return [Gate("latency", False, text + (f"; {decision.moved}" if decision.moved else ""))]
    if not passing:
        return []
    if undecided and limits.strict:
        text = next(t for f, t in passing if decision.comparisons[f].undecided)
        return [Gate("latency", False, f"{text} (--diffaccel-require-baseline fails what it can't tell)")]
    return [Gate("latency", True, "; ".join(t for _, t in passing))]


def _compared(
    decision: Decision,
    pairs: Sequence[tuple[RunFigures, RunFigures]],
    priors: Mapping[str, PairPrior],
    figure: str,
    max_slowdown: float,
    alpha: float,
    can_grow: bool,
    cap: int | None,
) -> Comparison | None:
    """The figure judged head over base (judge.compare), kept on the decision; None when no pair measured it."""
    diffs = differences(pairs, figure)
    if not diffs:
        return None
    prior = priors.get(figure, PairPrior(None, 0.0, 0))
    comparison = compare(
        diffs,
        prior,
        figure,
        max_slowdown=max_slowdown,
        alpha=alpha,
        can_grow=can_grow,
        cap=cap,
        noise=rounds_noise(pairs, figure),
    )
    decision.comparisons[figure] = comparison
    return comparison


def moved(pairs: Sequence[tuple[RunFigures, RunFigures]], figure: str) -> str:
    """Which component moved, pair by pair on the figure's footing ('denoiser 1.36x slower (97% of the change)')."""
    base = [b.components for b, _ in pairs]
    head = [h.components for _, h in pairs]
    if not any(base) or not any(head):
        return ""
    changes = component_changes(base, head)
    shares = breakdown.shares_of(dict(pairs[-1][1].components))  # the head's call, as the history gate's run
    return breakdown.compare(
        changes, dict.fromkeys(changes, 1.0), shares=shares, noises=component_noise(base, head), threshold=0.05
    )


def _figure_gates(
    decision: Decision,
    pairs: Sequence[tuple[RunFigures, RunFigures]],
    priors: Mapping[str, PairPrior],
    limits: Limits,
    can_grow: bool,
) -> list[Gate]:
    gates = []
    for figure, name in OTHER_FIGURES.items():
        # never asks for more pairs: one-off figures too noisy to buy runs with
        comparison = _compared(decision, pairs, priors, figure, limits.max_compile_increase, limits.alpha, False, None)
        if comparison is None:
            continue
        text = f"{comparison.describe()} vs base: {comparison.reason}; {comparison.spread_text()}"
        gates.append(Gate(name, not comparison.regression, text))
    return gates


def _memory_gate(pairs: Sequence[tuple[RunFigures, RunFigures]], limits: Limits) -> Gate:
    base = [b.peak_memory for b, _ in pairs if b.peak_memory]
    head = [h.peak_memory for _, h in pairs if h.peak_memory]
    if not base or not head:
        return Gate("memory", True, "no peak memory measured", judged=False)
    then, now = max(base), max(head)
    limit = then * (1.0 + limits.max_memory_increase) + limits.memory_slack
    text = f"peak {fmt_bytes(now)} vs base {fmt_bytes(then)} ({now / then - 1.0:+.1%})"
    if now > limit:
        return Gate("memory", False, f"{text}: beyond the tolerance {limits.max_memory_increase:.0%}")
    return Gate("memory", True, text)


Arms = tuple[Sequence[RunFigures | None], Sequence[RunFigures | None]]  # one test's runs: base's, head's


def differences(pairs: Sequence[tuple[RunFigures, RunFigures]], figure: str) -> list[float]:
    """log(head / base) of ``figure`` in each pair that measured it in both runs."""
    return log_differences([b.value(figure) for b, _ in pairs], [h.value(figure) for _, h in pairs])


def rounds_noise(pairs: Sequence[tuple[RunFigures, RunFigures]], figure: str) -> float | None:
    """What the runs' own rounds left uncertain in a pair's log difference of ``figure`` (judge.pair_noise)."""
    both = [(b, h) for b, h in pairs if b.value(figure) and h.value(figure)]
    return pair_noise([b.error(figure) for b, _ in both], [h.error(figure) for _, h in both])


def measured_pairs(arms: Arms) -> list[tuple[RunFigures, RunFigures]]:
    base, head = arms
    both = [(b, h) for b, h in zip(base, head, strict=True) if b is not None and h is not None]
    return [(b, h) for b, h in both if b.measured and h.measured]


def priors_of(tests: Mapping[str, Arms]) -> dict[str, PairPrior]:
    """The typical pair spread of each figure over the job's tests (judge.pair_prior)."""
    from .judge import pair_prior

    measured = [measured_pairs(arms) for arms in tests.values()]
    return {
        figure: pair_prior(
            [differences(pairs, figure) for pairs in measured], [rounds_noise(pairs, figure) for pairs in measured]
        )
        for figure in (*LATENCY_FIGURES, *OTHER_FIGURES)
    }
