"""What a measurement will cost: the search's estimate, from what the measurements so far cost.

No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import stats
from ..techniques.registry import Spec
from .result import CandidateMeasurement

REPEAT_FRACTION = 0.25  # a compiled candidate measured again, before any was: this much of its first set-up


@dataclass
class Cost:
    setup: float  # apply, warm-up, compile: what does not scale with the rounds
    per_round: float  # one timed round (and its interleaved reference)
    per_seed: float  # one more fidelity seed
    repeated: bool = False  # measured more than once


@dataclass
class CostModel:
    """What a measurement will cost, from what the measurements so far cost (wall clock).

    The set-up (apply, warm-up, compilation) of a candidate measured before is its last one, except
    for a compiled candidate measured once: measured again, dynamo and the inductor cache serve its
    graph, so it costs what repeated compiled measurements cost so far or, before any, the larger of
    an uncompiled set-up and ``REPEAT_FRACTION`` of its first set-up. A new candidate costs the
    largest first set-up of its kind (compiled or not; ``first_compile_seconds`` before any compiled
    one) and the median per-round cost seen (one stalled measurement must not end the search)."""

    first_compile_seconds: float
    latest: dict[str, Cost] = field(default_factory=dict)
    first_setups: list[tuple[bool, float]] = field(default_factory=list)  # (compiles, set-up) of first measurements
    repeat_setups: list[float] = field(default_factory=list)  # set-ups of compiled candidates measured again

    def record(self, spec: Spec, m: CandidateMeasurement, wall: float) -> None:
        call = m.latency or 0.0
        per_round = call * (1.0 + (m.speedup or 1.0)) if m.paired else call  # the reference call ~ call x speed-up
        per_seed = 2.0 * call
        extra_seeds = max(0, len(m.seeds) - 1)
        setup = max(0.0, wall - m.rounds * per_round - extra_seeds * per_seed)
        if spec.name not in self.latest:
            self.first_setups.append((spec.compiles, setup))
        elif spec.compiles:
            self.repeat_setups.append(setup)
        self.latest[spec.name] = Cost(setup, per_round, per_seed, repeated=spec.name in self.latest)

    def estimate(self, spec: Spec, rounds: int, seeds: int) -> float:
        known = self.latest.get(spec.name)
        if known is not None:
            cost, setup = known, self._known_setup(spec, known)
        else:
            costs = list(self.latest.values())
            cost = Cost(
                0.0,
                stats.median([c.per_round for c in costs]) if costs else 0.0,
                stats.median([c.per_seed for c in costs]) if costs else 0.0,
            )
            setup = self._new_setup(spec.compiles)
        return setup + rounds * cost.per_round + max(0, seeds - 1) * cost.per_seed

    def _known_setup(self, spec: Spec, known: Cost) -> float:
        if not spec.compiles or known.repeated:
            return known.setup
        if self.repeat_setups:
            return max(self.repeat_setups)
        uncompiled = max((s for c, s in self.first_setups if not c), default=0.0)
        return max(uncompiled, REPEAT_FRACTION * known.setup)

    def _new_setup(self, compiles: bool) -> float:
        same = [s for c, s in self.first_setups if c == compiles]
        if same:
            return max(same)
        seen = max((s for _, s in self.first_setups), default=0.0)
        return max(self.first_compile_seconds, seen) if compiles and self.first_setups else seen
