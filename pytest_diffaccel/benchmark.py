"""``diffaccel_benchmark(pipe, **call_kwargs)``: measure, compare with the fp32 reference and the baseline, judge."""

from __future__ import annotations

from typing import Any

import pytest

from . import breakdown, fidelity, stats, verdict
from .config import Settings
from .measure import Call, Companion, measure, one_line
from .results import Result
from .session import DiffaccelSession, TechniqueFailed, exclusive_device
from .techniques import Spec
from .units import fmt_bytes

# The CPU's resident-set estimate moves by a few MiB between identical runs.
MEMORY_SLACK = {"cuda": 1 << 20, "cpu": 64 << 20}


def contexts_of(applied: Any) -> list[Any]:
    return list(applied.call_contexts) if applied is not None else []


class Benchmark:
    """The ``diffaccel_benchmark`` fixture's value: call it with the pipeline under test."""

    def __init__(
        self,
        state: DiffaccelSession,
        item: pytest.Item,
        spec: Spec,
        settings: Settings,
        applied: Any = None,
        progress: Any = None,
    ) -> None:
        self.state = state
        self.item = item
        self.spec = spec
        self.settings = settings
        self.applied = applied  # the ApplyContext of diffaccel_pipeline, when used
        self.progress = progress
        self.results: list[Result] = []

    def __call__(self, pipe: Any, **call_kwargs: Any) -> Result:
        call = self.state.call_for(self.settings).with_extra(call_kwargs)
        test_id = self.item.nodeid if not self.results else f"{self.item.nodeid}#{len(self.results) + 1}"
        try:
            return self._run(pipe, call, test_id, call_kwargs)
        finally:
            if self.progress is not None:
                self.progress.close()  # erase the live status before pytest writes the outcome

    def _run(self, pipe: Any, call: Call, test_id: str, call_kwargs: dict[str, Any]) -> Result:
        state, settings, spec = self.state, self.settings, self.spec
        reference = state.reference(call, settings, self.progress)
        contexts = contexts_of(self.applied)
        if state.device == "cuda" and not any(p.technique.name == "tf32" for p in spec.parts):
            from .techniques.precision import tf32

            contexts.insert(0, lambda: tf32(False))
        reuse = spec.is_reference and not contexts_of(self.applied) and not call_kwargs
        # fp32 is the reference itself: not timed twice
        measurement = reference.measurement if reuse else self._measure(pipe, call, contexts)
        if measurement.companion_samples:  # interleaved: side-by-side pairs, drift cancels
            relative = measurement.paired_ratios
            relative_kind = "paired"
            speedup = 1.0 / stats.median(relative)
        else:
            relative = verdict.relative_samples(measurement.samples, reference.median)
            relative_kind = "over the reference median"
            speedup = reference.median / measurement.median

        why_broken = fidelity.broken(measurement.images)
        scores = None if why_broken else fidelity.compare(measurement.images, reference.images)
        overrides = dict(state.info.ssim_overrides)
        min_ssim = settings.min_ssim if settings.min_ssim is not None else spec.min_ssim_for(overrides)
        entry, note = state.baseline_for(test_id, call)
        if settings.compare == "relative":
            candidate_samples = relative
            baseline_samples = list(entry["relative_samples"]) if entry and entry.get("relative_samples") else None
            if entry and baseline_samples is None:
                note = "baseline holds no relative samples (recorded by an older version): re-save it"
        else:
            candidate_samples = measurement.samples
            baseline_samples = list(entry["samples"]) if entry else None
        baseline_peak = entry.get("peak_memory") if entry else None
        if entry and entry.get("memory_kind") not in (None, measurement.memory_kind):
            baseline_peak = None
        components = breakdown.medians(measurement.breakdown)
        moved = breakdown.compare(components, entry["breakdown"]) if entry and entry.get("breakdown") else ""
        decision = verdict.decide(
            verdict.Inputs(
                broken=why_broken,
                ssim=scores.ssim if scores else None,
                psnr=scores.psnr if scores else None,
                min_ssim=min_ssim,
                samples=candidate_samples,
                baseline_samples=baseline_samples,
                max_slowdown=settings.max_slowdown,
                alpha=settings.alpha,
                peak_memory=measurement.peak_memory,
                baseline_peak_memory=baseline_peak,
                max_memory_increase=settings.max_memory_increase,
                memory_slack=MEMORY_SLACK.get(state.device, 0),
                speedup=speedup,
                min_speedup=settings.min_speedup,
                baseline_note=note,
                failures=measurement.failures,
                compare_mode=settings.compare,
                breakdown_note=moved,
                syncs_per_step=measurement.syncs_per_step,
                max_syncs=settings.max_syncs,
            )
        )
        notes = list(self.applied.notes) if self.applied is not None else []
        if reuse:
            notes.append("fp32 is the reference: its measurement is the reference's")
        if measurement.graph_breaks:
            notes.append(f"{measurement.graph_breaks} graph breaks (dynamo)")
        notes += list(decision.notes)
        if state.info.random_weights:
            notes.append("random weights: fidelity says little about real pictures")
        result = Result(
            test_id=test_id,
            technique=spec.name,
            outcome="failed" if decision.failed else "passed",
            samples=measurement.samples,
            warmup=measurement.warmup,
            compile_seconds=measurement.compile_seconds if spec.compiles else None,
            stop_reason=measurement.stop_reason,
            timer=measurement.timer,
            peak_memory=measurement.peak_memory,
            memory_kind=measurement.memory_kind,
            syncs_per_step=measurement.syncs_per_step,
            ssim=scores.ssim if scores else None,
            psnr=scores.psnr if scores else None,
            min_ssim=min_ssim,
            speedup=speedup,
            reference_median=reference.median,
            baseline_note=note,
            verdict=decision,
            notes=notes,
            call=call.describe(),
            model=state.info.name,
            random_weights=state.info.random_weights,
            device=state.device,
            images=measurement.images,
            reference_images=reference.images,
            baseline_samples=baseline_samples,
            relative_samples=relative,
            relative_kind=relative_kind,
            compare_mode=settings.compare,
            breakdown=components,
            graph_breaks=measurement.graph_breaks,
        )
        self.results.append(result)
        for name, value in (
            ("diffaccel_technique", spec.name),
            ("diffaccel_median_s", result.median),
            ("diffaccel_speedup", None if speedup is None else round(speedup, 4)),
            ("diffaccel_ssim", None if result.ssim is None else round(result.ssim, 5)),
            ("diffaccel_peak_memory", result.peak_memory),
            ("diffaccel_verdict", result.headline),
        ):
            self.item.user_properties.append((name, value))
        return result

    def _measure(self, pipe: Any, call: Call, contexts: list[Any]) -> Any:
        settings, spec = self.settings, self.spec
        companion = self._companion() if settings.interleaved else None
        try:
            with exclusive_device(self.state.device):
                return measure(
                    pipe,
                    call,
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
        from .techniques.precision import tf32

        device = self.state.device
        reference = self.state.source().fresh(device, "float32")
        return Companion(
            pipe=reference,
            contexts=[lambda: tf32(False)] if device == "cuda" else [],
            weights_bytes=parameter_bytes(reference) if device == "cuda" else 0,
        )


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
