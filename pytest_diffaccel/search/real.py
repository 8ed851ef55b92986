"""The real measurement of a candidate, built on the plugin's own pieces, and the one call the plugin makes.

``real_measure(state, settings, call)``: ``state.apply`` on a fresh pipeline, block 1 of blocks.py
(warm-up, timed rounds interleaved with a fresh fp32 reference when the session interleaves), the
fidelity gates against the session's fp32 reference (``state.reference`` / ``reference_images``,
computed once and shared by every candidate), the effect hook, and the pipeline released after
use. Dynamo is not reset between candidates: the inductor cache and dynamo's compiled code serve
every candidate that compiles the same graph.

torch is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from .. import fidelity
from ..techniques.registry import NOT_CHECKED, Effect, Spec
from ..verdict import Gate, caption_gate
from .engine import SearchConfig, search
from .result import CandidateMeasurement, SearchResult, failed

# (spec, pipe, apply context, run_call) -> [(part label, Effect)]: techniques.effects.check_effects, adapted
EffectHook = Callable[[Spec, Any, Any, Callable[[], Any]], Sequence[tuple[str, Effect]]]
RECOMPILE_LIMIT = 64  # compiled candidates in one process: each variant of a graph is one more entry


def effects_hook(device: str) -> EffectHook:
    """An effect hook running the techniques' own effect checks (techniques/effects.py)."""

    def hook(spec: Spec, pipe: Any, ctx: Any, run_call: Callable[[], Any]) -> Sequence[tuple[str, Effect]]:
        from ..techniques.effects import Probe, check_effects

        return check_effects(spec, pipe, Probe(ctx=ctx, run_call=run_call, device=device))

    return hook


class RealMeasure:
    """``measure(spec, rounds, seeds)`` on the session's model; ``prepare()`` computes the fp32 reference."""

    def __init__(self, state: Any, settings: Any, call: Any, effect: EffectHook | None = None) -> None:
        self.state = state
        self.settings = settings
        self.call = call
        self.effect = effect

    def prepare(self) -> None:
        self.state.reference(self.call, self.settings)

    def __call__(self, spec: Spec, rounds: int, seeds: tuple[int, ...]) -> CandidateMeasurement:
        from ..session import TechniqueFailed, release_memory

        started = time.perf_counter()
        settings = dataclasses.replace(
            self.settings, rounds=rounds, max_rounds=rounds, fidelity_seeds=max(1, len(seeds))
        )
        pipe: Any = None
        try:
            with _recompile_room(spec.compiles):
                pipe, applied = self.state.apply(spec, settings)
                return self._measured(spec, pipe, applied, settings, rounds, seeds, started)
        except TechniqueFailed as error:
            return failed(spec.name, rounds, seeds, str(error), time.perf_counter() - started)
        finally:
            del pipe
            release_memory(self.state.device)

    def _measured(
        self, spec: Spec, pipe: Any, applied: Any, settings: Any, rounds: int, seeds: tuple[int, ...], started: float
    ) -> CandidateMeasurement:
        from ..blocks import BlockMaker

        reference = self.state.reference(self.call, self.settings)
        maker = BlockMaker(self.state, spec, settings, self.call, reference)
        block = maker.first(pipe, list(applied.call_contexts), reuse=False)
        m = block.measurement
        gates = [Gate("measurement", False, f) for f in m.failures]
        ssim, fidelity_gates = self._fidelity(spec, pipe, maker.contexts, m.images, reference.images, seeds)
        gates += fidelity_gates
        gates.append(self._effect(spec, pipe, applied, maker.contexts))
        return CandidateMeasurement(
            spec=spec.name,
            rounds=rounds,
            seeds=tuple(seeds),
            latency=m.median,
            samples=list(m.samples),
            speedup=block.speedup(reference),
            paired=bool(m.companion_samples),
            ratios=list(block.ratios),
            ssim=ssim,
            min_ssim=self.state.min_ssim(spec, self.settings),
            peak_memory=m.peak_memory,
            gates=gates,
            wall_seconds=time.perf_counter() - started,
            notes=list(applied.notes),
        )

    def _fidelity(
        self, spec: Spec, pipe: Any, contexts: list[Any], images: Any, reference: Any, seeds: Sequence[int]
    ) -> tuple[float | None, list[Gate]]:
        """Broken and fidelity gates over the call's seed (the timed rounds' images) and the other seeds."""
        from ..measure import generate

        seeded = [(self.call.seed, images, reference)]
        extra = [s for s in seeds if s != self.call.seed]
        if extra and not fidelity.broken(images):
            references = self.state.reference_images(self.call, extra)
            seeded += [(s, generate(pipe, self.call, contexts, seed=s), references[s]) for s in extra]
        worst, why = fidelity.over_seeds(seeded)
        if worst is None:
            return None, [Gate("broken", False, str(why))]
        threshold = self.state.min_ssim(spec, self.settings)
        shown = f"SSIM {worst.ssim:.4f} vs fp32 over {len(seeded)} seed(s)"
        gates = [
            Gate("broken", True, "images are finite and not constant"),
            Gate(
                "fidelity",
                worst.ssim >= threshold,
                f"{shown} {'>=' if worst.ssim >= threshold else '<'} {threshold:.4f}",
            ),
        ]
        check = self.state.caption_check(self.call, seeded, spec)
        return worst.ssim, gates if check is None else [*gates, caption_gate(check)]

    def _effect(self, spec: Spec, pipe: Any, applied: Any, contexts: list[Any]) -> Gate:
        if self.effect is None:
            return Gate("effect", True, NOT_CHECKED, judged=False)
        try:
            effects = list(self.effect(spec, pipe, applied, _run_call(pipe, self.call, contexts)))
        except Exception as error:
            return Gate("effect", False, f"the effect check raised {type(error).__name__}: {error}")
        absent = [f"{label}: {e.line}" for label, e in effects if not e.applied]
        if absent:
            return Gate("effect", False, "not applied: " + "; ".join(absent))
        checked = [f"{label}: {e.line}" for label, e in effects if e.checked]
        return Gate("effect", True, "; ".join(checked) or NOT_CHECKED, judged=bool(checked))


def real_measure(state: Any, settings: Any, call: Any, effect: EffectHook | None = None) -> RealMeasure:
    """The measure callable of a real search on the session's model (see RealMeasure)."""
    return RealMeasure(state, settings, call, effect)


def config_for(
    settings: Any, call: Any, budget_seconds: float, max_memory: int | None = None, **overrides: Any
) -> SearchConfig:
    """The search's settings from the session's: full measurements take the session's rounds and
    fidelity seeds; screens take two rounds and the call's seed; the picture floor of lossy-by-design
    techniques is ``--diffaccel-search-min-ssim`` (default 0.9)."""
    values: dict[str, Any] = {
        "budget_seconds": budget_seconds,
        "screen_rounds": min(2, settings.rounds),
        "full_rounds": settings.rounds,
        "screen_seeds": (call.seed,),
        "full_seeds": tuple(call.seed + i for i in range(max(1, settings.fidelity_seeds))),
        "max_memory": max_memory,
        "picture_floor": float(settings.search_min_ssim),
    }
    return SearchConfig(**{**values, **overrides})


def run_search(
    state: Any,
    settings: Any,
    budget_seconds: float,
    space: Sequence[str] | None = None,
    max_memory: int | None = None,
    progress: Callable[[str], None] | None = None,
    effect: EffectHook | None = None,
    **overrides: Any,
) -> SearchResult:
    """The plugin's one call: search the session's model for the fastest passing recipe."""
    call = state.call_for(settings)
    config = config_for(settings, call, budget_seconds, max_memory, **overrides)
    measure = real_measure(state, settings, call, effect)
    return search(state.registry, state.environment(), measure, config, space, progress=progress)


def _run_call(pipe: Any, call: Any, contexts: Sequence[Callable[[], Any]]) -> Callable[[], Any]:
    """One untimed call of the pipeline under its call contexts (an effect probe), returning its output."""

    def run() -> Any:
        import torch

        from ..noise import float32_noise

        with torch.inference_mode(), ExitStack() as stack:
            stack.enter_context(float32_noise(pipe))
            for factory in contexts:
                stack.enter_context(factory())
            generator = torch.Generator("cpu").manual_seed(call.seed)
            return pipe(**call.kwargs(), generator=generator, output_type="pt")

    return run


@contextmanager
def _recompile_room(compiles: bool) -> Iterator[None]:
    """Room in dynamo's recompile limit for the compiled candidates of one process (each compiled
    variant of the denoiser's graph is one more cache entry; past the limit dynamo runs it eagerly)."""
    if not compiles:
        yield
        return
    import torch._dynamo

    config = torch._dynamo.config
    if getattr(config, "recompile_limit", RECOMPILE_LIMIT) >= RECOMPILE_LIMIT:
        yield
        return
    with config.patch(recompile_limit=RECOMPILE_LIMIT):
        yield
