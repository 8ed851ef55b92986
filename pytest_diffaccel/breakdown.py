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

import math
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


SHARE_OF_CHANGE = 0.25  # a component is named as moved only if it carries this share of the total's change


def noise(calls: Sequence[Mapping[str, Any]], component: str) -> float:
    """The relative spread of one component over a run's calls (scaled MAD over median, a log-ratio scale)."""
    values = [call[component] for call in calls if call.get(component, 0.0) > 0]
    if len(values) < 3:
        return 0.0
    center = stats.median(values)
    mad = stats.median([abs(v - center) for v in values])
    return 1.4826 * mad / center if center > 0 else 0.0


def compare(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float],
    shares: Mapping[str, float] | None = None,
    noises: Mapping[str, float] | None = None,
    threshold: float = 0.05,
) -> str:
    """'denoiser 1.38x slower (94% of the change); text encoder, VAE decode, rest within noise': which
    component moved. Pure.

    ``candidate`` and ``baseline`` are each component's time (seconds, or ratios over the fp32
    reference's same component). A component is named as moved only when (1) its ratio is beyond
    ``threshold`` and beyond twice its own spread over this run's calls (``noises``), and (2) with
    ``shares`` (each component's share of this run's call time), it carries at least a quarter of
    the total's change: a 7 ms text encoder 1.4x slower does not explain a 1.3x slower call."""
    ratios = {}
    for component in COMPONENTS:
        new, old = candidate.get(component), baseline.get(component)
        if new and old and old >= 1e-6:
            ratios[component] = new / old
    contributions = {}
    if shares:
        contributions = {c: shares.get(c, 0.0) * (1.0 - 1.0 / r) for c, r in ratios.items()}
    total_change = sum(abs(v) for v in contributions.values())
    moved, quiet = [], []
    for component, ratio in ratios.items():
        size = ratio if ratio >= 1 else 1.0 / ratio
        beyond = size > 1 + threshold and math.log(size) > 2.0 * (noises or {}).get(component, 0.0)
        carries = not shares or (total_change > 0 and abs(contributions[component]) >= SHARE_OF_CHANGE * total_change)
        if beyond and carries:
            direction = "slower" if ratio >= 1 else "faster"
            share = f" ({abs(contributions[component]) / total_change:.0%} of the change)" if shares else ""
            moved.append((size, f"{component} {size:.2f}x {direction}{share}"))
        else:
            quiet.append(component)
    moved.sort(reverse=True)
    parts = [text for _, text in moved]
    if quiet:
        parts.append(", ".join(quiet) + " within noise")
    return "; ".join(parts)


def shares_of(components: Mapping[str, float]) -> dict[str, float]:
    """Each component's share of the call (seconds over their sum)."""
    total = sum(components.get(c, 0.0) for c in COMPONENTS)
    return {c: components.get(c, 0.0) / total for c in COMPONENTS} if total > 0 else {}
