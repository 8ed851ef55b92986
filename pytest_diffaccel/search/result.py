"""What the search measures and what it hands back: measurements, trials, the front, the chosen recipe.

Pure data and small functions, no torch: the plugin's reports and the tests read these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import stats
from ..units import fmt_bytes, fmt_seconds
from ..verdict import Gate

SCREEN = "screen"
SSIM_DIGITS = 3  # the front and the ranking compare SSIM to this many decimals
FULL = "full"
MIN_MARGIN = 0.03  # the least relative latency difference taken as real (SearchConfig.min_margin)
PICTURE_FLOOR = "picture floor"  # the search's gate on lossy-by-design techniques (engine.py)


@dataclass
class CandidateMeasurement:
    """One measurement of one candidate: what ``measure(spec, rounds, seeds)`` returns.

    ``ratios``: each round over the fp32 reference (paired when interleaved), the figure candidates are
    ranked on; without them, ``speedup``; without that, the latency in seconds. ``gates``: the gates a
    test judges (broken, fidelity, effect, measurement failures); the engine adds memory."""

    spec: str
    rounds: int
    seeds: tuple[int, ...]
    latency: float | None  # median seconds per call; None: it failed before it was timed
    samples: list[float] = field(default_factory=list)
    speedup: float | None = None  # vs fp32 (paired when interleaved)
    paired: bool = False
    ratios: list[float] = field(default_factory=list)
    ssim: float | None = None  # lowest over the seeds
    min_ssim: float | None = None
    peak_memory: int | None = None
    gates: list[Gate] = field(default_factory=list)
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.latency is not None and all(g.passed for g in self.gates)

    @property
    def failures(self) -> list[str]:
        return [f"{g.name}: {g.message}" for g in self.gates if not g.passed]

    @property
    def score(self) -> float | None:
        """What the search minimises: the latency over fp32's (paired), or in seconds without a reference."""
        if self.ratios:
            return stats.median(self.ratios)
        if self.speedup:
            return 1.0 / self.speedup
        return self.latency

    @property
    def noise(self) -> float:
        """The relative spread of the ranked figure: half the range for a few rounds, the IQR beyond."""
        values = self.ratios or self.samples
        if len(values) < 2:
            return 0.0
        middle = stats.median(values)
        if middle <= 0:
            return 0.0
        spread = stats.iqr(values) if len(values) >= 6 else (max(values) - min(values)) / 2.0
        return spread / middle

    def describe(self) -> str:
        if self.latency is None:
            return "failed: " + "; ".join(self.failures)
        parts = [fmt_seconds(self.latency)]
        if self.speedup is not None:
            parts.append(f"{self.speedup:.2f}x vs fp32{' (paired)' if self.paired else ''}")
        if self.ssim is not None:
            parts.append(f"SSIM {self.ssim:.4f}")
        if self.peak_memory is not None:
            parts.append(f"peak {fmt_bytes(self.peak_memory)}")
        verdict = "pass" if self.passed else "FAIL " + "; ".join(self.failures)
        return ", ".join(parts) + f": {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "rounds": self.rounds,
            "seeds": list(self.seeds),
            "latency": _round(self.latency),
            "samples": [_round(s) for s in self.samples],
            "speedup": _round(self.speedup),
            "paired": self.paired,
            "ratios": [_round(r) for r in self.ratios],
            "score": _round(self.score),
            "ssim": _round(self.ssim),
            "min_ssim": self.min_ssim,
            "peak_memory": self.peak_memory,
            "gates": [
                {"name": g.name, "passed": g.passed, "message": g.message, "judged": g.judged} for g in self.gates
            ],
            "passed": self.passed,
            "wall_seconds": _round(self.wall_seconds, 3),
            "notes": list(self.notes),
        }


def failed(spec: str, rounds: int, seeds: Sequence[int], reason: str, wall: float = 0.0) -> CandidateMeasurement:
    """A candidate that could not be applied or run: it fails the measurement gate with the reason."""
    return CandidateMeasurement(
        spec=spec,
        rounds=rounds,
        seeds=tuple(seeds),
        latency=None,
        gates=[Gate("measurement", False, reason)],
        wall_seconds=wall,
    )


@dataclass
class Trial:
    """One measurement the search made: the candidate, the stage (screen, rung N, full), the outcome."""

    spec: str
    options: tuple[str, ...]  # the option labels it combines (empty: fp32)
    stage: str
    measurement: CandidateMeasurement

    @property
    def single(self) -> bool:
        return len(self.options) == 1

    def as_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "options": list(self.options), "stage": self.stage, **self.measurement.as_dict()}


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def faster(a: CandidateMeasurement, b: CandidateMeasurement, min_margin: float = MIN_MARGIN) -> bool:
    """``a`` is faster than ``b`` beyond the noise of both (and at least ``min_margin``)."""
    if a.score is None or b.score is None:
        return False
    margin = max(min_margin, a.noise + b.noise)
    return a.score * (1.0 + margin) < b.score


def picture(m: CandidateMeasurement) -> float:
    """The SSIM the ranking compares (to SSIM_DIGITS decimals); -1 when there is none."""
    return round(m.ssim, SSIM_DIGITS) if m.ssim is not None else -1.0


def rank(trials: Sequence[Trial], min_margin: float = MIN_MARGIN) -> list[Trial]:
    """Best first. Speed decides only where it differs beyond the noise of both measurements
    (``faster``); within the noise the better picture (higher SSIM, to SSIM_DIGITS) goes first, and
    the faster only when the pictures are equal. Each place goes to the best picture among the
    candidates left that no other one left is faster than beyond the noise (the fastest always is
    one of them)."""
    pool = sorted(
        trials,
        key=lambda t: (t.measurement.score if t.measurement.score is not None else math.inf, len(t.options), t.spec),
    )
    scores = [t.measurement.score for t in pool]
    noises = [t.measurement.noise for t in pool]

    def beats(i: int, j: int) -> bool:  # faster(), on the figures computed once
        a, b = scores[i], scores[j]
        return a is not None and b is not None and a * (1.0 + max(min_margin, noises[i] + noises[j])) < b

    beaten_by = {j: {i for i in range(len(pool)) if beats(i, j)} for j in range(len(pool))}
    left = list(range(len(pool)))
    ranked: list[Trial] = []
    while left:
        unbeaten = [j for j in left if not beaten_by[j]] or left[:1]
        best = max(unbeaten, key=lambda j: picture(pool[j].measurement))  # the first max: the fastest of them
        ranked.append(pool[best])
        left.remove(best)
        for j in left:
            beaten_by[j].discard(best)
    return ranked


def only_below_picture_floor(m: CandidateMeasurement) -> bool:
    """The candidate fails the search's picture floor and no other gate: left out, not failed."""
    failing = [g for g in m.gates if not g.passed]
    return bool(failing) and all(g.name == PICTURE_FLOOR for g in failing)


def pareto(trials: Sequence[Trial], with_memory: bool = False) -> list[Trial]:
    """The non-dominated trials on (score down, SSIM up[, peak memory down]), fastest first. SSIM is
    compared to 3 decimals: a lossless technique is not on the front for an SSIM of 0.99998 vs 1."""

    def key(t: Trial) -> tuple[float, float, float]:
        m = t.measurement
        memory = float(m.peak_memory) if with_memory and m.peak_memory is not None else 0.0
        ssim = round(m.ssim, SSIM_DIGITS) if m.ssim is not None else 0.0
        return (m.score or float("inf"), -ssim, memory)

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    keys = [key(t) for t in trials]
    front = [t for t, k in zip(trials, keys, strict=True) if not any(dominates(o, k) for o in keys)]
    return sorted(front, key=key)


@dataclass
class SearchResult:
    """Everything the search did and found. ``chosen``: the fastest passing recipe (speed beyond the
    noise first, the better picture within it: ``rank``), a spec string for ``--diffaccel-techniques``
    or a marker (None when no candidate passed)."""

    budget_seconds: float
    elapsed_seconds: float
    trials: list[Trial]
    pruned: dict[str, str]  # option -> why
    failures: dict[str, str]  # spec -> why it failed (latest measurement)
    log: list[str]
    chosen: str | None
    decided_on: str | None  # the stage whose measurements the choice compared
    stop_reason: str
    space: list[str] = field(default_factory=list)  # the choice groups and their options
    skipped: list[str] = field(default_factory=list)  # candidates never tried, and why
    left_out: dict[str, str] = field(default_factory=dict)  # spec -> below the search's picture floor
    min_margin: float = MIN_MARGIN  # the ranking's least latency difference taken as real

    def latest(self) -> dict[str, Trial]:
        """Each candidate's last measurement (the one with the most rounds)."""
        found: dict[str, Trial] = {}
        for trial in self.trials:
            found[trial.spec] = trial
        return found

    @property
    def chosen_trial(self) -> Trial | None:
        if self.chosen is None:
            return None
        return next(t for t in reversed(self.trials) if t.spec == self.chosen and t.stage == self.decided_on)

    def passing(self) -> list[Trial]:
        """The passing candidates, each by its measurement at the stage the choice was decided on when it
        has one (the front then compares what the choice compared), else by its latest."""
        found = self.latest()
        if self.decided_on is not None:
            for trial in self.trials:
                if trial.stage == self.decided_on:
                    found[trial.spec] = trial
        return [t for t in found.values() if t.measurement.passed and t.measurement.score is not None]

    def best_single(self) -> Trial | None:
        """The best passing single technique (fp32 aside), ranked as the choice was (``rank``)."""
        singles = [t for t in self.passing() if "+" not in t.spec and t.spec != "fp32"]
        ranked = rank(singles, self.min_margin)
        return ranked[0] if ranked else None

    def front(self, with_memory: bool = False) -> list[Trial]:
        return pareto(self.passing(), with_memory)

    def as_dict(self) -> dict[str, Any]:
        chosen = self.chosen_trial
        return {
            "chosen": self.chosen,
            "decided_on": self.decided_on,
            "chosen_measurement": chosen.measurement.as_dict() if chosen else None,
            "budget_seconds": round(self.budget_seconds, 3),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "stop_reason": self.stop_reason,
            "space": list(self.space),
            "front": [t.spec for t in self.front()],
            "front_with_memory": [t.spec for t in self.front(with_memory=True)],
            "pruned": dict(self.pruned),
            "failures": dict(self.failures),
            "left_out": dict(self.left_out),
            "skipped": list(self.skipped),
            "trials": [t.as_dict() for t in self.trials],
            "log": list(self.log),
        }

    def _measured(self, trial: Trial) -> str:
        """A trial's figures, and its stage where the choice was decided on another: a candidate the search
        dropped before the full measurement shows its shorter stage's figures, which the choice did not compare
        (a recorded search listed such a candidate at 139.5 ms on the front below a recipe chosen at 143.1 ms)."""
        text = trial.measurement.describe()
        if self.decided_on is None or trial.stage == self.decided_on:
            return text
        return (
            f"{text} ({trial.stage}, {trial.measurement.rounds} rounds: not measured at the {self.decided_on} stage "
            "the recipe was chosen on)"
        )

    def lines(self) -> list[str]:
        """The terminal summary: the recipe, the front, what was pruned and what failed."""
        out = [
            f"diffaccel search: {len(self.trials)} measurements of {len(self.latest())} candidates in "
            f"{self.elapsed_seconds:.0f} s (budget {self.budget_seconds:.0f} s; {self.stop_reason})"
        ]
        chosen = self.chosen_trial
        if chosen is None:
            out.append("  no candidate passed every gate: no recipe")
        else:
            out.append(f"  fastest passing recipe: {self.chosen}")
            out.append(f"    {chosen.measurement.describe()} ({self.decided_on}, {chosen.measurement.rounds} rounds)")
            out.append(f"    use it: --diffaccel-techniques {self.chosen}")
            single = self.best_single()
            if single is not None and single.spec != self.chosen:
                out.append(f"  best single technique: {single.spec}: {self._measured(single)}")
        out.append("  front (latency vs SSIM, passing candidates):")
        out += [f"    {t.spec}: {self._measured(t)}" for t in self.front()]
        if self.pruned:
            out.append("  pruned:")
            out += [f"    {option}: {why}" for option, why in self.pruned.items()]
        if self.failures:
            out.append("  failed:")
            out += [f"    {spec}: {why}" for spec, why in self.failures.items()]
        out += [f"  left out: {spec} ({why})" for spec, why in self.left_out.items()]
        return out
