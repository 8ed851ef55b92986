"""Precision: fp32 (the reference), bf16, fp16 (with diffusers' VAE upcast), tf32."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import components
from .effects import Probe, call_once, counting, millions, patched
from .registry import STAGE_PRECISION, ApplyContext, Effect, Registry, Requirements

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


def _kept_in_fp32(module: Any) -> tuple[str, ...]:
    """Module name fragments a library keeps in fp32 whatever the load dtype (T5's ``wo``)."""
    return tuple(getattr(module, "_keep_in_fp32_modules", None) or ())


def dtype_effect(dtype_name: str) -> Any:
    """Effect: the floating parameters of every model component are in ``dtype_name``
    (fp16: a VAE whose config sets force_upcast stays fp32; float8 storage of layerwise casting
    and modules a library keeps in fp32 are left out)."""

    def effect(pipe: Any) -> Effect:
        import torch

        expected = getattr(torch, dtype_name)
        storage = {d for d in (getattr(torch, n, None) for n in ("float8_e4m3fn", "float8_e5m2")) if d is not None}
        seen: list[str] = []
        wrong: list[str] = []
        for name, module in components.modules(pipe):
            want = expected
            if name == "vae" and expected is torch.float16 and getattr(module.config, "force_upcast", False):
                want = torch.float32
            keep = _kept_in_fp32(module)
            total = off = 0
            found: dict[str, int] = {}
            for pname, param in module.named_parameters():
                if not param.is_floating_point() or param.dtype in storage:
                    continue
                if keep and param.dtype is torch.float32 and any(k in pname.split(".") for k in keep):
                    continue
                total += param.numel()
                if param.dtype is not want:
                    off += param.numel()
                    found[str(param.dtype).removeprefix("torch.")] = 1
            if not total:
                continue
            short = str(want).removeprefix("torch.")
            if off:
                wrong.append(f"{name}: {millions(off)} of {millions(total)} parameters {', '.join(found)}, not {short}")
            else:
                seen.append(name if want is expected else f"{name} {short} (force_upcast)")
        if not seen and not wrong:
            return Effect(False, "no floating-point parameters found in the pipeline's models")
        if wrong:
            return Effect(False, "; ".join(wrong))
        return Effect(True, f"parameters {dtype_name}: " + ", ".join(seen))

    return effect


def tf32_on() -> bool:
    """TF32 is on for CUDA matmuls and cuDNN convolutions (torch's current API or the older flags)."""
    import torch

    matmul = torch.backends.cuda.matmul
    conv = getattr(torch.backends.cudnn, "conv", None)
    try:
        return bool(matmul.fp32_precision == "tf32" and conv is not None and conv.fp32_precision == "tf32")
    except (AttributeError, RuntimeError):
        return bool(matmul.allow_tf32 and torch.backends.cudnn.allow_tf32)


def tf32_effect(pipe: Any, probe: Probe) -> Effect:
    """Effect: TF32 is on inside every denoiser call of one probe call."""
    name = components.denoiser_name(pipe)
    states: list[bool] = []
    with patched(components.denoiser(pipe), "forward", counting(states, lambda *a, **k: tf32_on())):
        call_once(probe)
    if not states:
        return Effect(False, f"the {name} was not called in one probe call")
    on = sum(states)
    line = f"TF32 on (matmul and cuDNN conv) in {on}/{len(states)} {name} calls of one call"
    return Effect(on == len(states), line)


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
        effect=dtype_effect("float32"),
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
        effect=dtype_effect("bfloat16"),
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
        effect=dtype_effect("float16"),
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
        effect=tf32_effect,
        **common,
    )
    def tf32_technique(pipe: Any, ctx: ApplyContext) -> Any:
        ctx.call_contexts.append(lambda: tf32(True))
        return pipe
