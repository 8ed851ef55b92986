"""Where the time goes: each timed call split into text encoding, denoising (per step), VAE decode
and the rest.

Marks are taken at component boundaries that lie *outside* any compiled region, so that no
graph breaks and no CUDA graph is split: around ``pipe.encode_prompt``, after each
``pipe.scheduler.step`` (one per denoising step) and around ``pipe.vae.decode``. On CUDA a mark is
an event recorded on the stream (no synchronization; the events are read after the call's own
end event was synchronized); on the CPU it is ``time.perf_counter``.

``compare`` (pure) names the component that moved between a baseline and a candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import stats

COMPONENTS = ("text encoder", "denoiser", "VAE decode", "rest")


class Marks:
    """Timestamps of one call, as CUDA events or host clock readings."""

    def __init__(self, cuda: bool, event_factory: Callable[..., Any] | None = None) -> None:
        self.cuda = cuda
        self.event_factory = event_factory
        self.points: list[tuple[str, Any]] = []

    def mark(self, name: str) -> None:
        if self.cuda:
            factory = self.event_factory
            if factory is None:
                import torch

                factory = torch.cuda.Event
            event = factory(enable_timing=True)
            event.record()
            self.points.append((name, event))
        else:
            self.points.append((name, time.perf_counter()))

    def seconds(self) -> list[tuple[str, float]]:
        """(name, seconds since the first mark); read after the call has been synchronized."""
        if not self.points:
            return []
        first = self.points[0][1]
        if self.cuda:
            return [(name, first.elapsed_time(event) / 1000.0) for name, event in self.points]
        return [(name, value - first) for name, value in self.points]


def split(points: Sequence[tuple[str, float]], total: float) -> dict[str, Any]:
    """Component seconds of one call from its marks ('start', 'text', 'step'..., 'decode-start',
    'decode-end') and the call's total. Pure."""
    at: dict[str, float] = {}
    steps: list[float] = []
    for name, value in points:
        if name == "step":
            steps.append(value)
        else:
            at.setdefault(name, value)
    text = at.get("text-end", 0.0) - at.get("text-start", 0.0) if "text-end" in at else 0.0
    decode = at.get("decode-end", 0.0) - at.get("decode-start", 0.0) if "decode-end" in at else 0.0
    denoise_start = at.get("text-end", at.get("start", 0.0))
    per_step = []
    previous = denoise_start
    for value in steps:
        per_step.append(value - previous)
        previous = value
    denoise = (steps[-1] - denoise_start) if steps else 0.0
    rest = max(0.0, total - text - denoise - decode)
    return {"text encoder": text, "denoiser": denoise, "VAE decode": decode, "rest": rest, "steps": per_step}


class Instrument:
    """Wraps a pipeline's boundary methods while active; ``calls`` collects one Marks per call."""

    def __init__(self, pipe: Any, cuda: bool, event_factory: Callable[..., Any] | None = None) -> None:
        self.pipe = pipe
        self.cuda = cuda
        self.event_factory = event_factory
        self.current: Marks | None = None
        self._restore: list[tuple[Any, str, Any, bool]] = []

    def begin(self) -> None:
        self.current = Marks(self.cuda, self.event_factory)
        self.current.mark("start")

    def end(self) -> Marks | None:
        marks, self.current = self.current, None
        return marks

    def _wrap(self, owner: Any, name: str, before: str | None, after: str | None) -> None:
        if owner is None or not hasattr(owner, name):
            return
        had_instance_attribute = name in vars(owner)
        original = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.current is not None and before:
                self.current.mark(before)
            result = original(*args, **kwargs)
            if self.current is not None and after:
                self.current.mark(after)
            return result

        setattr(owner, name, wrapped)
        self._restore.append((owner, name, original, had_instance_attribute))

    def __enter__(self) -> Instrument:
        self._wrap(self.pipe, "encode_prompt", "text-start", "text-end")
        self._wrap(getattr(self.pipe, "scheduler", None), "step", None, "step")
        self._wrap(getattr(self.pipe, "vae", None), "decode", "decode-start", "decode-end")
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original, had in reversed(self._restore):
            if had:
                setattr(owner, name, original)
            else:
                delattr(owner, name)
        self._restore.clear()


def medians(calls: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Median seconds of each component over the timed calls, plus the median step."""
    if not calls:
        return {}
    out = {c: stats.median([call[c] for call in calls]) for c in COMPONENTS}
    steps = [s for call in calls for s in call.get("steps", ())]
    if steps:
        out["step"] = stats.median(steps)
    return out


def relative(components: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """Each component over the fp32 reference's same component (the machine's speed of the day cancels)."""
    return {k: v / reference[k] for k, v in components.items() if reference.get(k, 0.0) > 1e-9}


def compare(candidate: Mapping[str, float], baseline: Mapping[str, float], threshold: float = 0.05) -> str:
    """'VAE decode 1.42x slower; denoiser unchanged; ...': which component moved. Pure."""
    parts = []
    moved = []
    for component in COMPONENTS:
        new, old = candidate.get(component), baseline.get(component)
        if not new or not old or old < 1e-6:
            continue
        ratio = new / old
        if ratio > 1 + threshold:
            moved.append((ratio, f"{component} {ratio:.2f}x slower"))
        elif ratio < 1 / (1 + threshold):
            moved.append((1 / ratio, f"{component} {1 / ratio:.2f}x faster"))
        else:
            parts.append(f"{component} unchanged")
    moved.sort(reverse=True)
    return "; ".join([text for _, text in moved] + parts)
