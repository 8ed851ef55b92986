"""The search engine: screen, compose, prune, halve, within a budget in seconds.

1. Screen fp32 and every single option of the space cheaply (few rounds, one seed), the groups
   that usually move latency most first (PRIORITY), so that a short budget goes to them.
2. Coordinate ascent from the fastest passing candidate: per choice group (the group of the
   fastest single first), swap in each surviving option (or none) and keep the change when it is
   faster beyond the noise; repeat while it improves. Combinations are built lazily, so the cost
   grows with the groups and options, not with the product space.
3. Pruning, after every measurement: an option whose single fails a gate, or that makes every
   candidate holding it slower than the same candidate without it (beyond the noise of both), is
   dropped with the reason and never combined again.
4. Successive halving: the passing candidates (fp32 aside: its ratio is 1 by construction), fastest
   first, are measured again with ``eta`` times the rounds, keeping the best ``1/eta`` at each rung,
   the best single technique always among them; the last rung measures the leader and the best
   single with the full rounds and fidelity seeds. The best passing candidate of the last stage
   that measured both is the recipe (fp32 when nothing beat it beyond the noise).
5. When the budget held back for the final rung was not all spent, another round of 1-4 uses it.

Ranking (result.rank): speed decides only where two candidates differ beyond the noise of both
measurements; within the noise the better picture (higher SSIM) wins. Lossy-by-design techniques
(the floors classes "tiny VAE" and "VAE tiling", whose class floor is a broken-image check, 0.05)
enter the choice only above the search's own picture floor (``SearchConfig.picture_floor``,
``--diffaccel-search-min-ssim``, default 0.9); below it a candidate is "left out", with its SSIM.

The budget: a measurement starts only when its estimated cost (cost.py: from what candidates cost
so far) fits in what is left, less the estimated cost of the final rung while screening. The
measurement itself is a callable (``measure(spec, rounds, seeds)``), so tests drive the engine with
fakes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import floors
from ..techniques.registry import Environment, Registry, Spec
from ..units import fmt_bytes
from ..verdict import Gate
from .cost import CostModel
from .result import (
    FULL,
    MIN_MARGIN,
    PICTURE_FLOOR,
    SCREEN,
    CandidateMeasurement,
    SearchResult,
    Trial,
    failed,
    faster,
    only_below_picture_floor,
    picture,
    rank,
)
from .space import REFERENCE, Choice, Option, choices, compose, spec_text

# Screening order of the choice groups (see _priority); a group not listed comes after, in stage order.
PRIORITY = (
    "denoiser compile",
    "precision",
    "weight quantization",
    "cache",
    "attention kernel",
    "fuse-qkv",
    "tiny-vae",
    "channels-last",
    "compile-vae",
)

MAX_ROUNDS = 3  # screen, ascent and halving again while the budget left allows new measurements
# Classes of floors.json whose floor only catches a broken image (0.05 on the presets): they change the
# picture by design, so the search lets them in only above its own picture floor.
LOSSY_CLASSES = frozenset({floors.TINY_VAE, floors.TILING})
PICTURE_FLOOR_DEFAULT = 0.9

MeasureFn = Callable[[Spec, int, tuple[int, ...]], CandidateMeasurement]
Clock = Callable[[], float]


@dataclass(frozen=True)
class SearchConfig:
    budget_seconds: float
    screen_rounds: int = 2
    full_rounds: int = 8
    screen_seeds: tuple[int, ...] = (0,)
    full_seeds: tuple[int, ...] = (0, 1)
    eta: int = 2  # successive halving: each rung keeps 1/eta of the candidates, with eta x the rounds
    finalists: int = 2  # candidates measured in full, at least (the best single among them)
    min_margin: float = MIN_MARGIN  # the least relative difference taken as real
    picture_floor: float = PICTURE_FLOOR_DEFAULT  # least SSIM of a candidate holding a lossy-by-design part
    max_memory: int | None = None  # bytes; a candidate above it fails the memory gate
    max_passes: int = 3  # coordinate ascent passes over the groups
    first_compile_seconds: float = 30.0  # the guess for the first compiled candidate's set-up

    def rungs(self) -> list[int]:
        """The rounds of each rung after the screen; the last one is the full measurement."""
        rounds, out = self.screen_rounds, []
        while rounds < self.full_rounds:
            rounds = min(self.full_rounds, rounds * max(2, self.eta))
            out.append(rounds)
        return out or [self.full_rounds]


# ----------------------------------------------------------------------------- the search


def lossy_parts(spec: Spec) -> list[str]:
    """The parts of a spec that change the picture by design (LOSSY_CLASSES)."""
    return [p.technique.name for p in spec.parts if floors.CLASS_OF.get(p.technique.name) in LOSSY_CLASSES]


def picture_gate(spec: Spec, m: CandidateMeasurement, floor: float) -> Gate | None:
    """The search's picture floor for a candidate holding a lossy-by-design part; None for the others."""
    lossy = lossy_parts(spec)
    if not lossy or m.ssim is None:
        return None
    if m.ssim < floor:
        shown = f"{m.ssim:.2f}" if round(m.ssim, 2) < floor else f"{m.ssim:.4f}"
        return Gate(PICTURE_FLOOR, False, f"SSIM {shown} below the search's picture floor {floor:.2f}")
    return Gate(
        PICTURE_FLOOR, True, f"SSIM {m.ssim:.4f} >= the search's picture floor {floor:.2f} ({', '.join(lossy)})"
    )


class Search:
    """One search. ``run()`` returns the SearchResult; everything it measured stays in ``trials``."""

    def __init__(
        self,
        registry: Registry,
        environment: Environment,
        measure: MeasureFn,
        config: SearchConfig,
        space: Sequence[str] | None = None,
        clock: Clock = time.monotonic,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.environment = environment
        self.measure = measure
        self.config = config
        self.clock = clock
        self.progress = progress
        self.groups: list[Choice] = choices(registry, environment, space)
        self.trials: list[Trial] = []
        self.by_stage: dict[tuple[str, str], Trial] = {}
        self.latest: dict[str, Trial] = {}
        self.pruned: dict[str, str] = {}
        self.log: list[str] = []
        self.skipped: list[str] = []
        self.costs = CostModel(config.first_compile_seconds)
        self.started = clock()
        self.budget_hit = False
        self._skipped: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ the steps

    def run(self) -> SearchResult:
        self.say("space: " + ("; ".join(_describe(c) for c in self.groups) or "fp32 only"))
        self._prepare()
        decided: str | None = None
        for _ in range(MAX_ROUNDS):  # another round spends what the final rung was held back for and did not use
            before = len(self.trials)
            self.screen()
            self.ascend()
            decided = self.halve()
            if not self.budget_hit or len(self.trials) == before:
                break
            self.say(f"{self.config.budget_seconds - self.elapsed():.0f} s left: another round")
        return self.result(decided)

    def screen(self) -> None:
        """fp32 and every single option, few rounds, one seed."""
        ordered = sorted(self.groups, key=lambda c: _priority(c.group))
        singles: list[tuple[Option, ...]] = [()] + [(o,) for c in ordered for o in c.options]
        for options in singles:
            if not self._pruned(options):
                self.attempt(options, SCREEN, self.config.screen_rounds, self.config.screen_seeds, self._reserve())

    def ascend(self) -> None:
        """Coordinate ascent from the fastest passing candidate, one choice group at a time."""
        incumbent = self._best(self._screened())
        if incumbent is None:
            self.say("ascent: no passing candidate to start from")
            return
        self.say(f"ascent from {incumbent.spec}")
        for _ in range(self.config.max_passes):
            improved = False
            for choice in self._promising_groups():
                for alternative in self._alternatives(choice, incumbent):
                    if alternative is not None and alternative.label in self.pruned:
                        continue  # pruned by a measurement of this pass
                    options = _swap(incumbent.options, choice.group, alternative, self._options())
                    trial = self.attempt(
                        options, SCREEN, self.config.screen_rounds, self.config.screen_seeds, self._reserve()
                    )
                    if trial is not None and self._better(trial, incumbent):
                        self.say(f"ascent: {trial.spec} beats {incumbent.spec}")
                        incumbent, improved = trial, True
            if not improved:
                break

    def halve(self) -> str | None:
        """Successive halving over the passing candidates; returns the stage the choice is made on."""
        screened = self._ranked(self._screened())
        decided = SCREEN if screened else None
        pool = [t for t in screened if t.options]  # fp32 is the reference: measuring it again decides nothing
        rungs = self.config.rungs()
        count = len(pool)
        for index, rounds in enumerate(rungs):
            last = index == len(rungs) - 1
            count = max(self.config.finalists, math.ceil(count / max(2, self.config.eta)))
            if not last and count <= self.config.finalists:
                continue  # few enough already: straight to the full measurement
            stage = FULL if last else f"rung {rounds}"
            seeds = self.config.full_seeds if last else self.config.screen_seeds
            entrants = self._entrants(pool, self.config.finalists if last else count, last)
            if not entrants:
                break
            self.say(f"{stage}: {len(entrants)} of {len(pool)} candidates, {rounds} rounds, {_seeds(seeds)}")
            measured = self._rung(entrants, stage, rounds, seeds, 0.0 if last else self._final_cost(pool))
            if measured is None:
                self.say(f"{stage}: the leader or the best single did not fit the budget; the choice stays on the "
                         f"{decided} measurements")  # fmt: skip
                continue
            passing = self._ranked(measured)
            if not passing:
                self.say(f"{stage}: no candidate passed; the choice stays on the previous stage")
                break
            pool, decided = passing, stage
        return decided

    def _rung(
        self, entrants: list[Trial], stage: str, rounds: int, seeds: tuple[int, ...], reserve: float
    ) -> list[Trial] | None:
        """Measure a rung's entrants: the leader and the best single first, the rest while the budget
        allows. None when the leader or the best single could not be measured: the stage can't decide."""
        single = next((t for t in entrants if len(t.options) == 1), None)
        key = [entrants[0]] + ([single] if single is not None and single is not entrants[0] else [])
        measured = []
        for entrant in key + [t for t in entrants if t not in key]:
            trial = self.attempt(self._of(entrant), stage, rounds, seeds, reserve)
            if trial is None and entrant in key:
                return None
            if trial is not None:
                measured.append(trial)
        return measured

    # ------------------------------------------------------------------ one measurement

    def attempt(
        self, options: tuple[Option, ...], stage: str, rounds: int, seeds: tuple[int, ...], reserve: float
    ) -> Trial | None:
        """Measure one combination at a stage, once; None when it is invalid or does not fit the budget."""
        spec = compose(self.registry, self.environment, options)
        if isinstance(spec, str):
            self.say(f"skip {spec_text(options)}: {spec}")
            return None
        done = self.by_stage.get((spec.name, stage))
        if done is not None:
            return done
        estimate = self.costs.estimate(spec, rounds, len(seeds))
        left = self.config.budget_seconds - self.elapsed()
        if estimate + reserve > left:
            self._skip(spec.name, stage, estimate, reserve, left)
            return None
        started = self.clock()
        try:
            measurement = self.measure(spec, rounds, tuple(seeds))
        except Exception as error:  # the measure callable should report failures; never crash the search
            measurement = failed(spec.name, rounds, seeds, f"{type(error).__name__}: {error}")
        wall = self.clock() - started
        measurement.wall_seconds = measurement.wall_seconds or wall
        self._memory_gate(measurement)
        gate = picture_gate(spec, measurement, self.config.picture_floor)
        if gate is not None:
            measurement.gates.append(gate)
        self.costs.record(spec, measurement, wall)
        trial = Trial(spec.name, tuple(o.label for o in options), stage, measurement)
        self.trials.append(trial)
        self.by_stage[(spec.name, stage)] = trial
        self.latest[spec.name] = trial
        self.say(f"{stage} {spec.name} ({rounds} rounds, {_seeds(seeds)}, {wall:.1f} s): {measurement.describe()}")
        self._prune()
        return trial

    def _memory_gate(self, m: CandidateMeasurement) -> None:
        limit = self.config.max_memory
        if limit is None or m.latency is None:
            return
        if m.peak_memory is None:
            m.gates.append(Gate("memory", True, "peak memory not measured", judged=False))
        elif m.peak_memory > limit:
            m.gates.append(Gate("memory", False, f"peak {fmt_bytes(m.peak_memory)} above the limit {fmt_bytes(limit)}"))
        else:
            m.gates.append(Gate("memory", True, f"peak {fmt_bytes(m.peak_memory)} <= {fmt_bytes(limit)}"))

    def _skip(self, spec: str, stage: str, estimate: float, reserve: float, left: float) -> None:
        self.budget_hit = True
        if (spec, stage) in self._skipped:
            return
        self._skipped.add((spec, stage))
        held = f" + {reserve:.0f} s held for the final rung" if reserve else ""
        line = f"budget: not measuring {spec} ({stage}): ~{estimate:.0f} s{held}, {max(0.0, left):.0f} s left"
        self.skipped.append(line)
        self.say(line)

    # ------------------------------------------------------------------ pruning

    def _prune(self) -> None:
        for option in self._options().values():
            if option.label in self.pruned:
                continue
            why = self._why_pruned(option)
            if why:
                self.pruned[option.label] = why
                self.say(f"prune {option.label}: {why}")

    def _why_pruned(self, option: Option) -> str | None:
        single = self.latest.get(spec_text([option]))
        if single is not None and not single.measurement.passed:
            return "fails on its own: " + "; ".join(single.measurement.failures)
        pairs = self._pairs(option)
        if pairs and all(
            faster(without.measurement, held.measurement, self.config.min_margin) for held, without in pairs
        ):
            shown = ", ".join(
                f"{held.spec} {_times(held.measurement)} vs {without.spec} {_times(without.measurement)}"
                for held, without in pairs
            )
            return f"slower with it than without it in every pair measured ({len(pairs)}): {shown}"
        return None

    def _pairs(self, option: Option) -> list[tuple[Trial, Trial]]:
        """(a candidate holding the option, the same candidate without it), both measured."""
        pairs = []
        for trial in self.latest.values():
            if option.label not in trial.options or trial.measurement.score is None:
                continue
            without = self.latest.get(spec_text(self._resolve(o) for o in trial.options if o != option.label))
            if without is not None and without.measurement.score is not None:
                pairs.append((trial, without))
        return pairs

    # ------------------------------------------------------------------ helpers

    def _prepare(self) -> None:
        prepare = getattr(self.measure, "prepare", None)
        if callable(prepare):
            started = self.clock()
            prepare()
            self.say(f"prepared the fp32 reference in {self.clock() - started:.1f} s")

    def elapsed(self) -> float:
        return self.clock() - self.started

    def say(self, line: str) -> None:
        self.log.append(line)
        if self.progress is not None:
            self.progress(line)

    def _options(self) -> dict[str, Option]:
        return {o.label: o for c in self.groups for o in c.options}

    def _resolve(self, label: str) -> Option:
        return self._options()[label]

    def _of(self, trial: Trial) -> tuple[Option, ...]:
        return tuple(self._resolve(label) for label in trial.options)

    def _pruned(self, options: Sequence[Option]) -> bool:
        return any(o.label in self.pruned for o in options)

    def _screened(self) -> list[Trial]:
        return [t for (_, stage), t in self.by_stage.items() if stage == SCREEN]

    def _ranked(self, trials: list[Trial]) -> list[Trial]:
        """The passing trials without a pruned option, best first (``rank``: speed beyond the noise,
        then the picture)."""
        keep = [
            t
            for t in trials
            if t.measurement.passed
            and t.measurement.score is not None
            and not any(label in self.pruned for label in t.options)
        ]
        return rank(keep, self.config.min_margin)

    def _best(self, trials: list[Trial]) -> Trial | None:
        ranked = self._ranked(trials)
        return ranked[0] if ranked else None

    def _better(self, trial: Trial, incumbent: Trial) -> bool:
        """Faster beyond the noise, or as fast within it with a better picture."""
        new, old, margin = trial.measurement, incumbent.measurement, self.config.min_margin
        if not new.passed:
            return False
        return faster(new, old, margin) or (not faster(old, new, margin) and picture(new) > picture(old))

    def _single(self, option: Option) -> Trial | None:
        return self.by_stage.get((spec_text([option]), SCREEN))

    def _promising_groups(self) -> list[Choice]:
        """Groups with a surviving option, the group of the fastest single first."""

        def best(choice: Choice) -> float:
            scores = [t.measurement.score for o in choice.options if (t := self._single(o)) and t.measurement.passed]
            return min((s for s in scores if s is not None), default=math.inf)

        return sorted((c for c in self.groups if any(o.label not in self.pruned for o in c.options)), key=best)

    def _alternatives(self, choice: Choice, incumbent: Trial) -> list[Option | None]:
        """Other choices of this group for the incumbent: its surviving options whose single passed
        (fastest single first), and none."""
        current = next((o for o in choice.options if o.label in incumbent.options), None)
        viable = [
            o
            for o in choice.options
            if o.label not in self.pruned
            and o != current
            and (t := self._single(o)) is not None
            and t.measurement.passed
        ]
        viable.sort(key=lambda o: self._single(o).measurement.score or math.inf)  # type: ignore[union-attr]
        return [*viable, None] if current is not None else list(viable)

    def _entrants(self, pool: list[Trial], count: int, last: bool) -> list[Trial]:
        pool = [t for t in pool if t.options]
        entrants = list(pool[:count])
        # the best single technique goes through every rung, to the full measurement beside the best combination
        single = next((t for t in pool if len(t.options) == 1), None)
        if single is not None and single not in entrants:
            entrants = [*entrants[: max(1, count - 1)], single] if last else [*entrants, single]
        return entrants

    def _reserve(self) -> float:
        """The final rung's estimated cost, held back while screening."""
        return self._final_cost(self._ranked(self._screened()))

    def _final_cost(self, pool: list[Trial]) -> float:
        total = 0.0
        for trial in self._entrants(pool, self.config.finalists, last=True):
            if (trial.spec, FULL) in self.by_stage:
                continue  # measured in full already (a previous round)
            spec = self.registry.parse(trial.spec)
            total += self.costs.estimate(spec, self.config.full_rounds, len(self.config.full_seeds))
        return total

    def _reference_wins(self, reference: Trial, best: Trial) -> bool:
        """fp32 beats the best of a later stage: comparable across stages only when both are paired ratios."""
        a, b = reference.measurement, best.measurement
        paired = bool(a.ratios and b.ratios)
        return best is not reference and a.passed and paired and faster(a, b, self.config.min_margin)

    def result(self, decided: str | None) -> SearchResult:
        at_stage = [t for (_, stage), t in self.by_stage.items() if stage == decided]
        best = self._best(at_stage)
        reference = self.by_stage.get((REFERENCE, SCREEN))
        if best is not None and reference is not None and self._reference_wins(reference, best):
            self.say(f"no candidate beat fp32 beyond the noise ({best.spec}: {_times(best.measurement)})")
            best, decided = reference, SCREEN
        chosen = best.spec if best is not None else None
        if best is not None:
            self.say(f"chosen: {best.spec} ({decided}): {best.measurement.describe()}")
        else:
            self.say("chosen: none (no candidate passed every gate)")
        left_out = {
            spec: "; ".join(g.message for g in t.measurement.gates if not g.passed)
            for spec, t in self.latest.items()
            if only_below_picture_floor(t.measurement)
        }
        failures = {
            spec: "; ".join(t.measurement.failures)
            for spec, t in self.latest.items()
            if not t.measurement.passed and spec not in left_out
        }
        stop = "budget reached: some measurements were not started" if self.budget_hit else "search complete"
        return SearchResult(
            budget_seconds=self.config.budget_seconds,
            elapsed_seconds=self.elapsed(),
            trials=list(self.trials),
            pruned={label: why for label, why in self.pruned.items() if label not in left_out},
            failures=failures,
            log=list(self.log),
            chosen=chosen,
            decided_on=decided if chosen else None,
            stop_reason=stop,
            space=[_describe(c) for c in self.groups],
            skipped=list(self.skipped),
            left_out=left_out,
            min_margin=self.config.min_margin,
        )


def search(
    registry: Registry,
    environment: Environment,
    measure: MeasureFn,
    config: SearchConfig,
    space: Sequence[str] | None = None,
    clock: Clock = time.monotonic,
    progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """Search the space for the fastest recipe that passes every gate, within ``config.budget_seconds``."""
    return Search(registry, environment, measure, config, space, clock, progress).run()


def _swap(
    options: tuple[str, ...], group: str, alternative: Option | None, known: dict[str, Any]
) -> tuple[Option, ...]:
    kept = [known[label] for label in options if known[label].group != group]
    return tuple(kept + ([alternative] if alternative is not None else []))


def _priority(group: str) -> int:
    """Screening order: the groups that usually move latency most first, so that a short budget
    spends itself on them (the rest follow in stage order)."""
    return PRIORITY.index(group) if group in PRIORITY else len(PRIORITY)


def _describe(choice: Choice) -> str:
    return f"{choice.group}: " + " | ".join(["none", *(o.label for o in choice.options)])


def _seeds(seeds: Sequence[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ",".join(str(s) for s in seeds)


def _times(m: CandidateMeasurement) -> str:
    return f"{m.score:.3f}x of fp32" if m.ratios or m.speedup else f"{m.score:.4g} s"
