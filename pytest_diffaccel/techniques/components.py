"""Small helpers over a diffusers pipeline's components, shared by the technique families."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any


def denoiser_name(pipe: Any) -> str:
    """'unet' or 'transformer': the attribute that holds the pipeline's denoiser."""
    for name in ("unet", "transformer"):
        if getattr(pipe, name, None) is not None:
            return name
    raise TypeError(f"{type(pipe).__name__} has neither a unet nor a transformer; not a diffusion pipeline")


def denoiser(pipe: Any) -> Any:
    return getattr(pipe, denoiser_name(pipe))


def modules(pipe: Any) -> Iterator[tuple[str, Any]]:
    """(name, torch.nn.Module) for each model component of the pipeline."""
    import torch

    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            yield name, component


def wrap_method(obj: Any, method: str, context: Callable[[], AbstractContextManager[Any]]) -> None:
    """Run ``obj.method`` inside ``context()`` from now on (an instance attribute, so copies are untouched)."""
    original = getattr(obj, method)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with context():
            return original(*args, **kwargs)

    setattr(obj, method, wrapped)


def cast_inputs(obj: Any, method: str, dtype_of: Callable[[], Any]) -> None:
    """Cast the first tensor argument of ``obj.method`` to ``dtype_of()`` (a VAE kept in fp32 under fp16)."""
    original = getattr(obj, method)

    @functools.wraps(original)
    def wrapped(sample: Any, *args: Any, **kwargs: Any) -> Any:
        dtype = dtype_of()
        if hasattr(sample, "dtype") and sample.dtype != dtype:
            sample = sample.to(dtype)
        return original(sample, *args, **kwargs)

    setattr(obj, method, wrapped)


@contextlib.contextmanager
def quiet_casts() -> Iterator[None]:
    """Silence diffusers' 'modules that should be kept in float32' warning for our deliberate casts."""
    logger = logging.getLogger("diffusers.models.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def parameter_bytes(pipe: Any) -> int:
    """Bytes held by the parameters and buffers of every model component (quantized tensors included)."""
    total = 0
    seen: set[int] = set()
    for _, module in modules(pipe):
        for tensor in list(module.parameters()) + list(module.buffers()):
            key = id(tensor)
            if key in seen:
                continue
            seen.add(key)
            total += tensor_bytes(tensor)
    return total


def tensor_bytes(tensor: Any) -> int:
    """Storage bytes of a tensor; tensor subclasses (torchao) are summed over their inner tensors."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None:
        try:
            names, _ = flatten()
            return sum(tensor_bytes(getattr(tensor, name)) for name in names)
        except Exception:
            pass
    return int(tensor.numel()) * int(tensor.element_size())
