"""Compilation and memory layout: torch.compile modes, regional compile, the VAE decode, channels-last.

Every compile uses ``fullgraph=True``: a graph break is the technique's failure, with dynamo's
reason in the message, because a broken graph silently gives away most of the speed-up.
"""

from __future__ import annotations

from typing import Any

from . import components
from .precision import LOSSLESS_SSIM
from .registry import STAGE_COMPILE, STAGE_LAYOUT, ApplyContext, Registry, Requirements

# The inductor flags of the diffusers "Accelerate inference" guide for max-autotune.
GUIDE_INDUCTOR_FLAGS: dict[str, bool] = {
    "conv_1x1_as_mm": True,
    "coordinate_descent_tuning": True,
    "epilogue_fusion": False,
    "coordinate_descent_check_all_directions": True,
}

COMPILE_MODES = {
    "compile": (None, Requirements(), "torch.compile of the denoiser, default mode"),
    "compile-max-autotune": (
        "max-autotune",
        Requirements(),
        "torch.compile(mode='max-autotune') of the denoiser with the guide's inductor flags",
    ),
    "compile-reduce-overhead": (
        "reduce-overhead",
        Requirements(cuda=True),
        "torch.compile(mode='reduce-overhead') of the denoiser: CUDA graphs",
    ),
}


def compile_mode_of(ctx: ApplyContext) -> str | None:
    """The mode of the denoiser compile in the same spec (the VAE decode follows it)."""
    spec = getattr(ctx, "spec", None)
    for part in getattr(spec, "parts", ()):
        entry = COMPILE_MODES.get(part.technique.name)
        if entry is not None:
            return entry[0]
    return None


def _inductor_flags(mode: str | None) -> Any:
    import torch._inductor.config as inductor_config

    if mode == "max-autotune":
        return inductor_config.patch(GUIDE_INDUCTOR_FLAGS)
    from contextlib import nullcontext

    return nullcontext()


def _compile_apply(mode: str | None) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        model = components.denoiser(pipe)
        kwargs: dict[str, Any] = {"fullgraph": True}
        if mode:
            kwargs["mode"] = mode
        model.compile(**kwargs)
        if mode == "max-autotune":
            # Compilation happens at the first call: the flags must hold then, and only then.
            ctx.call_contexts.append(lambda: _inductor_flags(mode))
            ctx.note("inductor: " + ", ".join(f"{k}={v}" for k, v in GUIDE_INDUCTOR_FLAGS.items()))
        return pipe

    return apply


def register_all(registry: Registry) -> None:
    register = registry.register
    common = {"family": "compile", "builtin": True, "min_ssim": LOSSLESS_SSIM, "compiles": True}
    for name, (mode, requires, description) in COMPILE_MODES.items():
        register(
            name,
            requires=requires,
            stage=STAGE_COMPILE,
            exclusive="denoiser compile",
            default=name == "compile",
            description=description + " (fullgraph=True)",
            **common,
        )(_compile_apply(mode))

    @register(
        "compile-regional",
        stage=STAGE_COMPILE,
        exclusive="denoiser compile",
        description="compile_repeated_blocks(fullgraph=True): compiles the repeated block once, fast cold start",
        **common,
    )
    def compile_regional(pipe: Any) -> Any:
        model = components.denoiser(pipe)
        if not getattr(model, "_repeated_blocks", None):
            raise ValueError(f"{type(model).__name__} declares no _repeated_blocks; use 'compile' instead")
        model.compile_repeated_blocks(fullgraph=True)
        return pipe

    @register(
        "compile-vae",
        stage=STAGE_COMPILE + 1,
        description="torch.compile of the VAE decode (fullgraph=True), in the mode of the denoiser compile",
        **common,
    )
    def compile_vae(pipe: Any, ctx: ApplyContext) -> Any:
        import torch

        mode = compile_mode_of(ctx)
        kwargs: dict[str, Any] = {"fullgraph": True}
        if mode:
            kwargs["mode"] = mode
        pipe.vae.decode = torch.compile(pipe.vae.decode, **kwargs)
        if mode == "max-autotune" and not any(p.technique.name == "compile-max-autotune" for p in ctx.spec.parts):
            ctx.call_contexts.append(lambda: _inductor_flags(mode))
        return pipe

    @register(
        "channels-last",
        family="compile",
        builtin=True,
        min_ssim=LOSSLESS_SSIM,
        stage=STAGE_LAYOUT,
        default=True,
        families=("unet",),
        description="channels_last memory format for the UNet and the VAE",
    )
    def channels_last(pipe: Any) -> Any:
        import torch

        components.denoiser(pipe).to(memory_format=torch.channels_last)
        if getattr(pipe, "vae", None) is not None:
            pipe.vae.to(memory_format=torch.channels_last)
        return pipe
