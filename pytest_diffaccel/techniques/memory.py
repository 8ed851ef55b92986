"""Memory techniques of the diffusers "Reduce memory usage" guide: VAE slicing and tiling,
CPU offloading (model, sequential, group), layerwise fp8 storage.

They trade speed for memory; their verdict is about memory and fidelity, and a slowdown
against fp32 is expected (a ``min_speedup`` gate makes no sense for them).
"""

from __future__ import annotations

from typing import Any

from . import components
from .precision import LOSSLESS_SSIM
from .registry import STAGE_MEMORY, ApplyContext, Registry, Requirements

LAYERWISE_FP8_SSIM = 0.85
OFFLOAD_GROUP = "offloading"
COMPILE_CONFLICT = "offloading hooks move weights at call time, which fullgraph compilation can't trace; drop one"


def _offload_conflicts() -> dict[str, str]:
    return {name: COMPILE_CONFLICT for name in ("compile", "compile-max-autotune", "compile-reduce-overhead")}


def _group_offload(pipe: Any, ctx: ApplyContext, offload_type: str) -> Any:
    import torch

    onload = torch.device(ctx.device)
    kwargs: dict[str, Any] = {
        "onload_device": onload,
        "offload_device": torch.device("cpu"),
        "offload_type": offload_type,
    }
    if offload_type == "block_level":
        kwargs["num_blocks_per_group"] = 1
    if ctx.device == "cuda":
        kwargs["use_stream"] = True
    for name, module in components.modules(pipe):
        if hasattr(module, "enable_group_offload"):
            module.enable_group_offload(**kwargs)
        else:  # transformers text encoders
            from diffusers.hooks import apply_group_offloading

            apply_group_offloading(module, **kwargs)
        ctx.note(f"{name}: group offload ({offload_type})")
    return pipe


def register_all(registry: Registry) -> None:
    register = registry.register
    common = {"family": "memory", "builtin": True, "stage": STAGE_MEMORY}

    @register(
        "vae-slicing",
        min_ssim=LOSSLESS_SSIM,
        default=True,
        description="decode the batch one image at a time (vae.enable_slicing())",
        **common,
    )
    def vae_slicing(pipe: Any) -> Any:
        pipe.vae.enable_slicing()
        return pipe

    @register(
        "vae-tiling",
        min_ssim=0.90,
        default=True,
        description="decode in overlapping tiles (vae.enable_tiling()); tiny presets use tiles small enough to tile",
        **common,
    )
    def vae_tiling(pipe: Any, ctx: ApplyContext) -> Any:
        vae = pipe.vae
        vae.enable_tiling()
        tile = getattr(ctx.model, "vae_tile", None)
        if tile and hasattr(vae, "tile_sample_min_size"):
            # the default tile is the model's sample size, which tiles nothing at a tiny preset's size
            vae.tile_sample_min_size = tile
            vae.tile_latent_min_size = tile // getattr(ctx.model, "vae_scale", 8)
            ctx.note(f"tile {tile} px")
        return pipe

    @register(
        "model-offload",
        min_ssim=LOSSLESS_SSIM,
        requires=Requirements(accelerator=True),
        exclusive=OFFLOAD_GROUP,
        description="enable_model_cpu_offload(): each model moves to the GPU only while it runs",
        **common,
    )
    def model_offload(pipe: Any, ctx: ApplyContext) -> Any:
        pipe.enable_model_cpu_offload(device=ctx.device)
        return pipe

    @register(
        "sequential-offload",
        min_ssim=LOSSLESS_SSIM,
        requires=Requirements(accelerator=True),
        exclusive=OFFLOAD_GROUP,
        conflicts=_offload_conflicts(),
        description="enable_sequential_cpu_offload(): each layer moves to the GPU only while it runs (least memory)",
        **common,
    )
    def sequential_offload(pipe: Any, ctx: ApplyContext) -> Any:
        pipe.enable_sequential_cpu_offload(device=ctx.device)
        return pipe

    @register(
        "group-offload-block",
        min_ssim=LOSSLESS_SSIM,
        exclusive=OFFLOAD_GROUP,
        conflicts=_offload_conflicts(),
        default=True,
        description="enable_group_offload(offload_type='block_level', num_blocks_per_group=1), CUDA streams on GPU",
        **common,
    )
    def group_offload_block(pipe: Any, ctx: ApplyContext) -> Any:
        return _group_offload(pipe, ctx, "block_level")

    @register(
        "group-offload-leaf",
        min_ssim=LOSSLESS_SSIM,
        exclusive=OFFLOAD_GROUP,
        conflicts=_offload_conflicts(),
        default=True,
        description="enable_group_offload(offload_type='leaf_level'), CUDA streams on GPU",
        **common,
    )
    def group_offload_leaf(pipe: Any, ctx: ApplyContext) -> Any:
        return _group_offload(pipe, ctx, "leaf_level")

    @register(
        "layerwise-fp8",
        min_ssim=LAYERWISE_FP8_SSIM,
        default=True,
        description="enable_layerwise_casting(storage_dtype=float8_e4m3fn): fp8 weights in memory, upcast per layer",
        **common,
    )
    def layerwise_fp8(pipe: Any) -> Any:
        import torch

        model = components.denoiser(pipe)
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=model.dtype)
        return pipe
