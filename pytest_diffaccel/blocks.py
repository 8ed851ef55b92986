"""Blocks: independent measurements of one technique, the unit a run-level verdict is built on.

A block is a pipeline (freshly applied for a confirmation, when the plugin made it), its own
warm-up, and timed rounds interleaved with a fresh fp32 reference (A B B A) when interleaving is
on. Its estimate is the median paired ratio (relative mode) or the median latency (absolute mode,
and fp32, which is judged in seconds). Its rounds are checked for a trend (latency.drifted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import latency, stats
from .config import Settings
from .measure import Call, Companion, Measurement, measure, one_line
from .session import DiffaccelSession, TechniqueFailed, exclusive_device, fp32_contexts, release_memory
from .techniques import Spec
from .units import fmt_bytes, fmt_seconds


@dataclass
class Block:
    measurement: Measurement
    ratios: list[float]  # each round over the fp32 reference: paired, or over the session reference's median
    relative_kind: str  # "paired", "over the reference median", or "" (fp32 itself)
    fresh: bool  # measured on a pipeline applied afresh for this block
    drift: stats.Trend | None = None

    def estimate(self, figure: str) -> float:
        """The block's run-level estimate of ``figure`` ("ratio" or "median")."""
        return stats.median(self.ratios) if figure == "ratio" else self.measurement.median

    @property
    def calls(self) -> int:
        """Pipeline calls this block made: warm-up and timed rounds, the interleaved reference's included."""
        m = self.measurement
        companion = len(m.companion_samples) + 1 if m.companion_samples else 0  # + its warm-up call
        return len(m.warmup) + len(m.samples) + companion

    def speedup(self, reference: Any) -> float | None:
        if self.measurement.companion_samples:
            return 1.0 / stats.median(self.ratios)
        return reference.median / self.measurement.median

    def describe(self, figure: str) -> str:
        value = self.estimate(figure)
        text = f"{value:.3f}x of fp32" if figure == "ratio" else fmt_seconds(value)
        return f"{text} over {len(self.measurement.samples)} rounds"

    def summary(self, figure: str) -> dict[str, Any]:
        return {
            "ratio": round(stats.median(self.ratios), 6) if self.ratios else None,
            "median": round(self.measurement.median, 6),
            "rounds": len(self.measurement.samples),
            "calls": self.calls,
            "fresh": self.fresh,
            "drift": self.drift.describe() if self.drift else None,
            "judged_on": figure,
        }


class BlockMaker:
    """Measures the blocks of one test: block 1 on the pipeline under test, confirmations afresh."""

    def __init__(
        self,
        state: DiffaccelSession,
        spec: Spec,
        settings: Settings,
        call: Call,
        reference: Any,
        progress: Any = None,
    ) -> None:
        self.state = state
        self.spec = spec
        self.settings = settings
        self.call = call
        self.reference = reference
        self.progress = progress
        self.contexts: list[Any] = []

    @property
    def figure(self) -> str:
        return "median" if self.settings.compare == "absolute" or self.spec.is_reference else "ratio"

    def first(self, pipe: Any, contexts: list[Any], reuse: bool) -> Block:
        """Block 1; fp32 reuses the reference's own measurement (it is not timed twice)."""
        self.contexts = self._with_defaults(contexts)
        if reuse:
            return self._block(self.reference.measurement, fresh=False)
        return self._block(self._measure(pipe, self.contexts), fresh=False)

    def another(self, pipe: Any, fixture_pipe: Any, reuse: bool, index: int) -> Block:
        """A confirmation block: a freshly applied pipeline (when the plugin made the one under test),
        a fresh warm-up and a fresh interleaved fp32 reference."""
        if self.progress is not None:
            self.progress(f"confirming (block {index})")
        if reuse:  # fp32: a fresh fp32 pipeline, judged in seconds
            fresh, contexts = self.state.fresh_fp32()
            try:
                return self._block(self._measure(fresh, contexts, interleave=False), fresh=True)
            finally:
                del fresh
                release_memory(self.state.device)
        if fixture_pipe is None or pipe is not fixture_pipe:  # the user's own pipeline: measured again as is
            return self._block(self._measure(pipe, self.contexts), fresh=False)
        fresh, applied = self.state.apply(self.spec, self.settings)
        try:
            return self._block(self._measure(fresh, self._with_defaults(list(applied.call_contexts))), fresh=True)
        finally:
            del fresh
            release_memory(self.state.device)

    # ------------------------------------------------------------------ internals

    def _with_defaults(self, contexts: list[Any]) -> list[Any]:
        """TF32 off on CUDA, as for the fp32 reference, unless the technique is TF32 itself."""
        if any(p.technique.name == "tf32" for p in self.spec.parts):
            return list(contexts)
        return [*fp32_contexts(self.state.device), *contexts]

    def _block(self, measurement: Measurement, fresh: bool) -> Block:
        if measurement.companion_samples:
            ratios, kind = measurement.paired_ratios, "paired"
        elif self.spec.is_reference and measurement is self.reference.measurement:
            ratios, kind = [1.0] * len(measurement.samples), ""
        else:
            ratios = [s / self.reference.median for s in measurement.samples]
            kind = "over the reference median"
        watched = ratios if self.figure == "ratio" else measurement.samples
        drift = latency.drifted(watched, self.settings.max_slowdown)
        return Block(measurement=measurement, ratios=ratios, relative_kind=kind, fresh=fresh, drift=drift)

    def _measure(self, pipe: Any, contexts: list[Any], interleave: bool = True) -> Measurement:
        settings, spec = self.settings, self.spec
        companion = self._companion() if settings.interleaved and interleave else None
        try:
            with exclusive_device(self.state.device):
                return measure(
                    pipe,
                    self.call,
                    contexts=contexts,
                    compiles=spec.compiles,
                    progress=self.progress,
                    companion=companion,
                    **self.state.timing(settings),
                )
        except Exception as error:
            if _is_out_of_memory(error):
                peak = _peak_memory(self.state.device)
                raise TechniqueFailed(
                    f"{spec.name}: out of memory (peak {fmt_bytes(peak)} when it failed): {one_line(error)}"
                ) from None
            raise TechniqueFailed(f"{spec.name}: the call failed: {one_line(error)}") from error
        finally:
            del companion

    def _companion(self) -> Companion:
        """A fresh fp32 reference pipeline, timed in alternation with the technique."""
        from .techniques.components import parameter_bytes

        reference, contexts = self.state.fresh_fp32()
        cuda = self.state.device == "cuda"
        return Companion(pipe=reference, contexts=contexts, weights_bytes=parameter_bytes(reference) if cuda else 0)


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError)


def _peak_memory(device: str) -> int | None:
    """The peak reached before an out-of-memory error: CUDA's allocator peak, or the process RSS."""
    if device == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    from .measure import _rss_bytes

    return _rss_bytes()
