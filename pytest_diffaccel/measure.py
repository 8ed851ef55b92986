"""Measurement: warm-up, timed rounds, peak memory, host-device syncs, the images.

Timers (one class per mode behind one small interface):
* ``CudaTimer``: a CUDA event pair around each call; the only synchronization is the one
  that reads the end event, after the call, outside the timed region.
* ``CpuTimer``: ``time.perf_counter`` around each call.

Peak memory:
* CUDA: ``torch.cuda.max_memory_allocated`` over the timed rounds (weights included).
* CPU: the bytes of the pipeline's parameters and buffers plus the peak growth of the
  process's resident set during one untimed call, sampled every millisecond from
  /proc/self/statm (Linux; elsewhere the growth is not measured). Allocator caching makes
  it an estimate: compare it within one machine only.

torch is imported inside the functions.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from . import stats
from .breakdown import Instrument, split
from .callkey import describe_all
from .noise import float32_noise

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Call:
    """The generation call: the same for the reference and every technique of a test."""

    prompts: tuple[str, ...]
    steps: int | None = None
    size: tuple[int, int] | None = None
    seed: int = 0
    batch: int = 1
    guidance: float | None = None
    extra: tuple[tuple[str, str], ...] = ()  # user kwargs, as (name, stable description) for the key (callkey)
    extra_values: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def with_extra(self, kwargs: dict[str, Any]) -> Call:
        if not kwargs:
            return self
        merged = {**self.extra_values, **kwargs}
        return Call(
            prompts=self.prompts,
            steps=self.steps,
            size=self.size,
            seed=self.seed,
            batch=self.batch,
            guidance=self.guidance,
            extra=describe_all(merged),
            extra_values=merged,
        )

    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"prompt": list(self.prompts), "num_images_per_prompt": self.batch}
        if self.steps is not None:
            kwargs["num_inference_steps"] = self.steps
        if self.size is not None:
            kwargs["height"], kwargs["width"] = self.size
        if self.guidance is not None:
            kwargs["guidance_scale"] = self.guidance
        kwargs.update(self.extra_values)
        return kwargs

    def describe(self) -> dict[str, Any]:
        """JSON-able description, stored with baselines: a baseline is only compared for the same call."""
        return {
            "prompts": list(self.prompts),
            "steps": self.steps,
            "size": list(self.size) if self.size else None,
            "seed": self.seed,
            "batch": self.batch,
            "guidance": self.guidance,
            "extra": [list(e) for e in self.extra],
        }

    def key(self) -> str:
        return json.dumps(self.describe(), sort_keys=True)


# ----------------------------------------------------------------------------- timers


class CpuTimer:
    name = "perf_counter"

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result


class CudaTimer:
    """CUDA events around the call; ``event_factory`` is ``torch.cuda.Event`` (replaceable in tests)."""

    name = "cuda events"

    def __init__(self, event_factory: Callable[..., Any] | None = None) -> None:
        if event_factory is None:
            import torch

            event_factory = torch.cuda.Event
        self.event_factory = event_factory

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        start = self.event_factory(enable_timing=True)
        end = self.event_factory(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        end.synchronize()  # the one sync: reading the events, after the timed region
        return start.elapsed_time(end) / 1000.0, result


# ----------------------------------------------------------------------------- memory


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class RssSampler:
    """Peak growth of the resident set while active, sampled by a thread every ``interval`` s."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.start: int | None = None
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.start = _rss_bytes()
        self.peak = self.start
        if self.start is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            value = _rss_bytes()
            if value is not None and (self.peak is None or value > self.peak):
                self.peak = value

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        value = _rss_bytes()
        if value is not None and self.peak is not None and value > self.peak:
            self.peak = value

    @property
    def growth(self) -> int | None:
        if self.start is None or self.peak is None:
            return None
        return max(0, self.peak - self.start)


# ----------------------------------------------------------------------------- the measurement


@dataclass
class Measurement:
    samples: list[float]  # seconds per timed call
    warmup: list[float]  # seconds per warm-up call (the first holds compilation)
    images: Any  # numpy (N, H, W, 3) in [0, 1], from the last timed call
    peak_memory: int | None
    memory_kind: str  # "cuda max allocated" or "cpu params+rss"
    timer: str
    stop_reason: str
    syncs_per_step: float | None = None
    failures: list[str] = field(default_factory=list)
    companion_samples: list[float] = field(default_factory=list)  # interleaved fp32 reference, paired
    breakdown: list[dict[str, Any]] = field(default_factory=list)  # per timed call: breakdown.split
    graph_breaks: int | None = None  # during warm-up and rounds, for compiled techniques

    @property
    def paired_ratios(self) -> list[float]:
        """Each round's latency over the interleaved reference's next to it (drift cancels)."""
        return [s / c for s, c in zip(self.samples, self.companion_samples, strict=False)]

    @property
    def median(self) -> float:
        return stats.median(self.samples)

    @property
    def compile_seconds(self) -> float | None:
        """First warm-up call minus a steady call: compilation and autotuning, roughly."""
        if not self.warmup:
            return None
        steady = self.median
        return max(0.0, self.warmup[0] - steady)


def to_numpy_images(output: Any) -> Any:
    """Pipeline output (tensor NCHW in [0, 1], numpy NHWC, or PIL list) -> numpy NHWC float32."""
    import numpy as np

    images = output.images if hasattr(output, "images") else output[0] if isinstance(output, tuple) else output
    if hasattr(images, "detach"):
        array = images.detach().float().cpu()
        if array.ndim == 4 and array.shape[1] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.permute(0, 2, 3, 1)
        return array.numpy().astype(np.float32)
    if isinstance(images, list):
        return np.stack([np.asarray(img, dtype=np.float32) / 255.0 for img in images])
    return np.asarray(images, dtype=np.float32)


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _recompile_is_error(active: bool) -> Iterator[None]:
    if not active:
        yield
        return
    import torch._dynamo

    with torch._dynamo.config.patch(error_on_recompile=True):
        yield


def count_syncs(run: Callable[[], Any]) -> int:
    """Host-device synchronizations during one call, from torch's sync debug mode (CUDA)."""
    import torch

    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum(1 for w in caught if "synchroniz" in str(w.message).lower())


def is_steady(times: Sequence[float], tolerance: float = 0.10) -> bool:
    """The last two warm-up calls agree within ``tolerance``: compilation and autotuning are done."""
    if len(times) < 2:
        return False
    a, b = times[-2], times[-1]
    return abs(a - b) <= tolerance * min(a, b)


@dataclass
class Companion:
    """A second pipeline timed in alternation with the one under test (the fp32 reference, for
    ``--diffaccel-interleave``): A B B A order, so that the machine's drift cancels in the ratios."""

    pipe: Any
    contexts: Sequence[Callable[[], Any]] = ()
    weights_bytes: int = 0  # subtracted from the CUDA peak: it is resident but not the technique's


def measure(
    pipe: Any,
    call: Call,
    *,
    device: str,
    contexts: Sequence[Callable[[], Any]] = (),
    min_rounds: int = 8,
    max_rounds: int = 30,
    max_time: float = 20.0,
    warmup: int = 1,
    compiles: bool = False,
    precision_target: float = 0.005,
    count_sync: bool = True,
    timer: Any = None,
    progress: Progress | None = None,
    max_warmup: int = 8,
    companion: Companion | None = None,
) -> Measurement:
    """Warm up, then time rounds until the median is precise or the time budget is spent.

    The call contexts (TF32 flags, inductor flags...) are entered around each call, outside the
    timed region, so that a companion pipeline runs under its own.
    """
    import torch

    cuda = device == "cuda"
    if timer is None:
        timer = CudaTimer() if cuda else CpuTimer()
    say = progress or (lambda text: None)
    calls = _Calls(pipe, call, timer, contexts, companion)
    breaks_before = graph_breaks() if compiles else 0
    with torch.inference_mode():
        warm, memory_growth = _warm_up(
            calls, cuda=cuda, compiles=compiles, warmup=warmup, max_warmup=max_warmup, say=say
        )
        if calls.companion is not None:
            say("warming up the fp32 reference")
            calls.partner()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        budget = _Budget(min_rounds, max_rounds, max_time, precision_target)
        rounds = _timed_rounds(calls, pipe, budget, cuda=cuda, compiles=compiles, say=say)
        peak, kind = _peak(pipe, cuda, companion, memory_growth)
        syncs = _syncs_per_step(calls, pipe, call, say) if cuda and count_sync and not rounds.failures else None
    return Measurement(
        samples=rounds.samples,
        warmup=warm,
        images=to_numpy_images(rounds.output) if rounds.output is not None else None,
        peak_memory=peak,
        memory_kind=kind,
        timer=timer.name,
        stop_reason=rounds.stop_reason,
        syncs_per_step=syncs,
        failures=rounds.failures,
        companion_samples=rounds.companion_samples[: len(rounds.samples)],
        breakdown=rounds.breakdowns,
        graph_breaks=graph_breaks() - breaks_before if compiles else None,
    )


def _caller(target: Any, call: Call) -> Callable[[], Any]:
    """One call of ``target`` with the call's arguments and seed."""
    import torch

    def run() -> Any:
        generator = torch.Generator("cpu").manual_seed(call.seed)
        return target(**call.kwargs(), generator=generator, output_type="pt")

    return run


class _Calls:
    """The pipeline under test and its companion, timed one call at a time, each under its own call
    contexts: the same float32 starting noise in every precision first (noise.py), all entered outside
    the timer."""

    def __init__(
        self,
        pipe: Any,
        call: Call,
        timer: Any,
        contexts: Sequence[Callable[[], Any]],
        companion: Companion | None,
    ) -> None:
        self.timer = timer
        self.run = _caller(pipe, call)
        self.contexts: list[Callable[[], Any]] = [lambda: float32_noise(pipe), *contexts]
        self.companion = companion
        self._partner_run: Callable[[], Any] | None = None
        if companion is not None:
            partner = companion.pipe
            self.companion = replace(companion, contexts=[lambda: float32_noise(partner), *companion.contexts])
            self._partner_run = _caller(partner, call)

    def pipe(self) -> tuple[float, Any]:
        """One timed call of the pipeline under test: (seconds, output)."""
        return self._timed(self.run, self.contexts)

    def partner(self) -> float:
        """One timed call of the companion: seconds."""
        assert self.companion is not None and self._partner_run is not None
        return self._timed(self._partner_run, self.companion.contexts)[0]

    def _timed(self, fn: Callable[[], Any], factories: Sequence[Callable[[], Any]]) -> tuple[float, Any]:
        with ExitStack() as stack:
            for factory in factories:
                stack.enter_context(factory())
            return self.timer.time(fn)


def _warm_up(
    calls: _Calls, *, cuda: bool, compiles: bool, warmup: int, max_warmup: int, say: Progress
) -> tuple[list[float], int | None]:
    """The warm-up calls' seconds (compiled techniques until steady) and, on the CPU, the resident-set
    growth of the last one (the one reported)."""
    warm: list[float] = []
    growth: int | None = None
    wanted = max(1, warmup)
    while True:
        say(("compiling" if compiles and not warm else "warming up") + f" (call {len(warm) + 1})")
        if cuda:
            elapsed, _ = calls.pipe()
        else:
            with RssSampler() as sampler:
                elapsed, _ = calls.pipe()
            growth = sampler.growth
        warm.append(elapsed)
        if len(warm) >= wanted and (not compiles or is_steady(warm) or len(warm) >= max_warmup):
            return warm, growth


@dataclass(frozen=True)
class _Budget:
    """When the timed rounds stop: at ``max_rounds``, or from ``min_rounds`` on once the median is known to
    ``precision_target`` or ``max_time`` seconds are spent."""

    min_rounds: int
    max_rounds: int
    max_time: float
    precision_target: float


@dataclass
class _Rounds:
    """What the timed rounds produced."""

    stop_reason: str
    samples: list[float] = field(default_factory=list)
    companion_samples: list[float] = field(default_factory=list)
    breakdowns: list[dict[str, Any]] = field(default_factory=list)  # per timed call: breakdown.split
    output: Any = None  # the last timed call's
    failures: list[str] = field(default_factory=list)


def _timed_rounds(calls: _Calls, pipe: Any, budget: _Budget, *, cuda: bool, compiles: bool, say: Progress) -> _Rounds:
    """Timed rounds, the companion's around them in A B B A order, until ``_stop_reason`` says stop; a
    recompilation fails the measurement with dynamo's reason (and is raised when no round was timed)."""
    rounds = _Rounds(stop_reason=f"max rounds ({budget.max_rounds})")
    samples, partner = rounds.samples, rounds.companion_samples
    interleaved = calls.companion is not None
    started = time.perf_counter()
    try:
        with _gc_paused(), _recompile_is_error(compiles), Instrument(pipe, cuda) as instrument:
            while len(samples) < budget.max_rounds:
                say(f"rounds {len(samples) + 1}/{budget.min_rounds}+")
                if interleaved and len(samples) % 2 == 0:  # A B | B A | A B ...
                    partner.append(calls.partner())
                instrument.begin()
                elapsed, rounds.output = calls.pipe()
                marks = instrument.end()
                samples.append(elapsed)
                if marks is not None:
                    rounds.breakdowns.append(split(marks.seconds(), elapsed))
                if interleaved and len(samples) % 2 == 0:
                    partner.append(calls.partner())
                reason = _stop_reason(rounds, interleaved, budget, started)
                if reason is not None:
                    rounds.stop_reason = reason
                    break
            if interleaved and len(partner) < len(samples):
                partner.append(calls.partner())
    except Exception as error:
        if "recompil" not in str(error).lower():
            raise
        rounds.failures.append("recompiled during the timed rounds: " + one_line(error))
        if not samples:
            raise
    return rounds


def _stop_reason(rounds: _Rounds, interleaved: bool, budget: _Budget, started: float) -> str | None:
    """Why the rounds stop after this one, or None: judged once ``min_rounds`` are timed (and paired, when
    interleaved), the median (of the paired ratios, when interleaved) is precise or the time is spent."""
    samples, partner = rounds.samples, rounds.companion_samples
    if len(samples) < budget.min_rounds or (interleaved and len(partner) != len(samples)):
        return None
    watched = [a / b for a, b in zip(samples, partner, strict=True)] if interleaved else samples
    if stats.precise_enough(watched, budget.precision_target):
        return f"median known to +-{budget.precision_target:.1%}"
    if time.perf_counter() - started > budget.max_time:
        return f"time budget ({budget.max_time:g} s)"
    return None


def _peak(pipe: Any, cuda: bool, companion: Companion | None, growth: int | None) -> tuple[int | None, str]:
    """Peak memory and its kind: CUDA's allocator peak less the companion's weights, or on the CPU the
    pipeline's parameters plus the resident-set growth of a warm-up call."""
    if cuda:
        import torch

        weights = companion.weights_bytes if companion else 0
        return int(torch.cuda.max_memory_allocated()) - weights, "cuda max allocated"
    from .techniques.components import parameter_bytes

    return (parameter_bytes(pipe) + growth if growth is not None else None), "cpu params+rss"


def _syncs_per_step(calls: _Calls, pipe: Any, call: Call, say: Progress) -> float:
    """Host-device synchronizations per denoising step, over one untimed call under its contexts (CUDA)."""
    say("counting host-device syncs")
    steps = call.steps or getattr(getattr(pipe, "scheduler", None), "num_inference_steps", None) or 1
    with ExitStack() as stack:
        for factory in calls.contexts:
            stack.enter_context(factory())
        return count_syncs(calls.run) / steps


def generate(pipe: Any, call: Call, contexts: Sequence[Callable[[], Any]] = (), seed: int | None = None) -> Any:
    """One untimed call of ``pipe`` (images as numpy NHWC), under its call contexts, from the same
    float32 noise as every timed call; ``seed`` replaces the call's own (fidelity seeds)."""
    import torch

    with torch.inference_mode(), ExitStack() as stack:
        stack.enter_context(float32_noise(pipe))
        for factory in contexts:
            stack.enter_context(factory())
        generator = torch.Generator("cpu").manual_seed(call.seed if seed is None else seed)
        return to_numpy_images(pipe(**call.kwargs(), generator=generator, output_type="pt"))


def graph_breaks() -> int:
    """Graph breaks dynamo has counted in this process so far (fullgraph=True turns each into an error)."""
    import torch._dynamo.utils

    return int(sum(torch._dynamo.utils.counters["graph_break"].values()))


def one_line(error: BaseException) -> str:
    """The library's reason in one line: the first non-empty line of the message, with the type."""
    text = str(error).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    name = type(error).__name__
    return f"{name}: {first}" if first else name
