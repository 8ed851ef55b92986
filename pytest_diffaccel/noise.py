"""One starting noise for every precision.

diffusers draws the initial latents (and a stochastic scheduler's step noise) with
``randn_tensor(..., dtype=<the pipeline's dtype>)``. On the CPU, torch 2.11 and older draw a
*different* stream for float16/bfloat16 than for float32 from the same seeded generator
(diffusers issue #11056, pytorch issue #166853): a bf16 pipeline then starts from another
picture than the fp32 reference, and the fidelity gate would blame the technique for the seed.
Measured on tiny-sd with torch 2.11: bf16 SSIM 0.24 and fp16 0.12 against fp32 from the noise
alone on the CPU (0.25 and 0.16 on an H200); with the noise drawn in float32 and cast, 0.989 and
0.9999 (torch 2.13 draws the same stream for every dtype, so there it changes nothing). float64
draws another stream than float32 on every torch: a float64 run (benchmarks/fidelity_floors.py's
fp32-vs-float64 scale) starts from the fp32 noise only through this too.

``float32_noise(pipe)`` makes every ``randn_tensor`` the pipeline and its scheduler call draw in
float32 and cast the result to the dtype asked for, so the reference and every technique start
from the same noise, up to the rounding of the cast. It patches the name ``randn_tensor`` in the
modules that define the pipeline's and the scheduler's classes (and their bases) for the
duration of a call, and restores them after. A custom pipeline that calls ``torch.randn``
itself is not covered: on such a torch, draw its noise in float32 there, or pass ``latents``.

torch is imported inside the functions.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

PATCHED_NAME = "randn_tensor"


def float32_draw(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (diffusers' ``randn_tensor``), drawing half-precision (and float64) noise in float32:
    every precision starts from the fp32 reference's noise."""
    import torch

    if getattr(original, "__diffaccel_float32_draw__", False):
        return original
    signature = inspect.signature(original)
    reduced = (torch.float16, torch.bfloat16, torch.float64)

    def randn_tensor(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        dtype = bound.arguments.get("dtype")
        if dtype not in reduced:
            return original(*args, **kwargs)
        bound.arguments["dtype"] = torch.float32
        return original(*bound.args, **bound.kwargs).to(dtype)

    randn_tensor.__diffaccel_float32_draw__ = True  # type: ignore[attr-defined]
    randn_tensor.__wrapped__ = original  # type: ignore[attr-defined]
    return randn_tensor


def noise_modules(*objects: Any) -> list[Any]:
    """The modules that define the classes of ``objects`` (and their bases) and use ``randn_tensor``."""
    seen: dict[str, Any] = {}
    for obj in objects:
        if obj is None:
            continue
        for cls in type(obj).__mro__:
            module = sys.modules.get(cls.__module__)
            if module is not None and callable(getattr(module, PATCHED_NAME, None)):
                seen.setdefault(module.__name__, module)
    return list(seen.values())


@contextmanager
def float32_noise(pipe: Any) -> Iterator[None]:
    """During the block, ``pipe`` and its scheduler draw float16/bfloat16/float64 noise in float32."""
    modules = noise_modules(pipe, getattr(pipe, "scheduler", None))
    saved = [(module, getattr(module, PATCHED_NAME)) for module in modules]
    for module, original in saved:
        setattr(module, PATCHED_NAME, float32_draw(original))
    try:
        yield
    finally:
        for module, original in reversed(saved):
            setattr(module, PATCHED_NAME, original)
