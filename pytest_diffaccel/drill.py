"""Fire drill: ``DIFFACCEL_SLOWDOWN="fuse-qkv=30%"`` makes one technique really slower, to see the gate fail.

A CI gate nobody has seen fail is a gate nobody trusts. With this environment variable the plugin
adds real work (never sleep: the tanh of matrix products) to the denoiser's forward of the named
techniques, after they are applied, in every block (confirmations included), calibrated in the
process so that one pipeline call takes about the given fraction longer. The report says so.

    DIFFACCEL_SLOWDOWN="fuse-qkv=30%" pytest examples -k fuse-qkv    # fails the latency gate
    DIFFACCEL_SLOWDOWN="fuse-qkv=30%,bf16=15%" pytest examples

torch is imported inside the functions.
"""

from __future__ import annotations

import os
import time
from typing import Any

ENV = "DIFFACCEL_SLOWDOWN"


class DrillError(ValueError):
    """A malformed DIFFACCEL_SLOWDOWN."""


def parse(text: str | None) -> dict[str, float]:
    """'fuse-qkv=30%,bf16=0.15' -> {'fuse-qkv': 0.30, 'bf16': 0.15}."""
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip():
            raise DrillError(f"{ENV}: {item!r} is not TECHNIQUE=PERCENT (e.g. fuse-qkv=30%)")
        raw = value.strip()
        try:
            fraction = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
        except ValueError:
            raise DrillError(f"{ENV}: {raw!r} is not a percentage (e.g. 30%)") from None
        if fraction <= 0:
            raise DrillError(f"{ENV}: {raw!r} must be above 0")
        out[name.strip()] = fraction
    return out


def requested() -> dict[str, float]:
    return parse(os.environ.get(ENV))


def inject(pipe: Any, fraction: float, call: Any) -> str:
    """Slow ``pipe``'s denoiser forward so that ``call`` takes about ``fraction`` longer; the note for the report."""
    import torch

    from .measure import generate
    from .techniques.components import denoiser_name

    denoiser = getattr(pipe, denoiser_name(pipe))
    forward = denoiser.forward
    calls = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return forward(*args, **kwargs)

    denoiser.forward = counted
    try:
        generate(pipe, call)  # warm
        calls[0] = 0
        started = time.perf_counter()
        generate(pipe, call)
        seconds = time.perf_counter() - started
    finally:
        denoiser.forward = forward
    unit = torch.randn(192, 192, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    x = unit
    for _ in range(100):
        x = torch.tanh(x @ x)
    per_product = (time.perf_counter() - started) / 100
    repeats = max(1, round(fraction * seconds / max(calls[0], 1) / per_product))

    def slower(*args: Any, **kwargs: Any) -> Any:
        y = unit.to(device=_device_of(args, kwargs))
        for _ in range(repeats):
            y = torch.tanh(y @ y)
        return forward(*args, **kwargs)

    denoiser.forward = slower
    return (
        f"fire drill ({ENV}): +{fraction:.0%} of real extra work in the denoiser's forward "
        f"({repeats} matrix products per step)"
    )


def _device_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    for value in (*args, *kwargs.values()):
        device = getattr(value, "device", None)
        if device is not None:
            return device
    return "cpu"
