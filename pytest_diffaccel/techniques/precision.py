"""Precision: fp32 (the reference), bf16, fp16 (with diffusers' VAE upcast), tf32."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import components
from .registry import STAGE_PRECISION, ApplyContext, Registry, Requirements

# Thresholds were set from the noise floor measured on tiny-sd (see README, "How the SSIM thresholds were chosen").
LOSSLESS_SSIM = 0.97
REDUCED_PRECISION_SSIM = 0.93


def _cast(pipe: Any, ctx: ApplyContext, dtype_name: str) -> Any:
    import torch

    dtype = getattr(torch, dtype_name)
    with components.quiet_casts():
        pipe.to(dtype=dtype)
    vae = getattr(pipe, "vae", None)
    if dtype is torch.float16 and vae is not None and getattr(vae.config, "force_upcast", False):
        # fp16 overflows in the SD/SDXL VAE decoder; diffusers keeps such a VAE in fp32.
        vae.to(dtype=torch.float32)
        components.cast_inputs(vae, "decode", lambda: torch.float32)
        components.cast_inputs(vae, "encode", lambda: torch.float32)
        ctx.note("VAE kept in fp32 (force_upcast)")
    return pipe


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Set TF32 for CUDA matmuls and cuDNN convolutions, restoring the previous state on exit."""
    import torch

    matmul = torch.backends.cuda.matmul
    conv = torch.backends.cudnn.conv if hasattr(torch.backends.cudnn, "conv") else None
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        saved = (matmul.fp32_precision, conv.fp32_precision)
        value = "tf32" if enabled else "ieee"
        matmul.fp32_precision = value
        conv.fp32_precision = value
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = saved
    else:  # older torch
        saved_legacy = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
        try:
            yield
        finally:
            matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_legacy


def register_all(registry: Registry) -> None:
    register = registry.register
    common = {"family": "precision", "stage": STAGE_PRECISION, "builtin": True}

    @register(
        "fp32",
        min_ssim=LOSSLESS_SSIM,
        exclusive="precision",
        dtype="float32",
        default=True,
        description="float32 weights and math, TF32 off: the reference itself, timed as a technique",
        **common,
    )
    def fp32(pipe: Any, ctx: ApplyContext) -> Any:
        return _cast(pipe, ctx, "float32")

    @register(
        "bf16",
        min_ssim=REDUCED_PRECISION_SSIM,
        exclusive="precision",
        dtype="bfloat16",
        default=True,
        description="bfloat16 weights (torch_dtype=torch.bfloat16)",
        **common,
    )
    def bf16(pipe: Any, ctx: ApplyContext) -> Any:
        return _cast(pipe, ctx, "bfloat16")

    @register(
        "fp16",
        min_ssim=REDUCED_PRECISION_SSIM,
        exclusive="precision",
        dtype="float16",
        default=True,
        description="float16 weights; a VAE whose config sets force_upcast stays in fp32",
        **common,
    )
    def fp16(pipe: Any, ctx: ApplyContext) -> Any:
        return _cast(pipe, ctx, "float16")

    @register(
        "tf32",
        min_ssim=LOSSLESS_SSIM,
        requires=Requirements(cuda=True, min_capability=(8, 0)),
        default=True,
        description="TensorFloat-32 for CUDA matmuls and convolutions (Ampere and newer)",
        **common,
    )
    def tf32_technique(pipe: Any, ctx: ApplyContext) -> Any:
        ctx.call_contexts.append(lambda: tf32(True))
        return pipe
