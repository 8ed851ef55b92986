"""Caching for transformer pipelines (diffusers' CacheMixin): PAB, FasterCache, First Block Cache,
TaylorSeer, MagCache. Each reuses denoiser computations across steps; on a UNet they fail
(IndexError, permute errors), so they require a transformer denoiser.

The settings are those of the diffusers caching guide, scaled to the call's step count where
the method counts steps.
"""

from __future__ import annotations

from typing import Any

from . import components
from .registry import STAGE_CACHE, ApplyContext, Registry, Requirements

CACHE_SSIM = 0.80


def _steps(ctx: ApplyContext) -> int:
    steps = getattr(ctx.settings, "steps", None) or getattr(ctx.model, "steps", None) or 28
    return int(steps)


def _config(name: str, pipe: Any, ctx: ApplyContext) -> Any:
    from diffusers import hooks

    timestep = lambda: pipe.current_timestep  # noqa: E731 - the guide's callback
    if name == "cache-pab":
        return hooks.PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(100, 800),
            current_timestep_callback=timestep,
        )
    if name == "cache-faster":
        return hooks.FasterCacheConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(-1, 681),
            current_timestep_callback=timestep,
            attention_weight_callback=lambda _: 0.3,
            tensor_format="BCHW",
            is_guidance_distilled=True,
        )
    if name == "cache-first-block":
        return hooks.FirstBlockCacheConfig(threshold=0.2)
    if name == "cache-taylorseer":
        steps = _steps(ctx)
        return hooks.TaylorSeerCacheConfig(
            cache_interval=max(2, steps // 8), disable_cache_before_step=max(1, steps // 10)
        )
    if name == "cache-mag":
        from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

        return hooks.MagCacheConfig(mag_ratios=FLUX_MAG_RATIOS, num_inference_steps=_steps(ctx))
    raise KeyError(name)


CACHES = {
    "cache-pab": (
        "PyramidAttentionBroadcastConfig",
        "Pyramid Attention Broadcast: reuse attention outputs across steps",
    ),
    "cache-faster": ("FasterCacheConfig", "FasterCache: reuse attention and unconditional-branch outputs"),
    "cache-first-block": (
        "FirstBlockCacheConfig",
        "First Block Cache: skip the rest of the model when the first block barely changes",
    ),
    "cache-taylorseer": (
        "TaylorSeerCacheConfig",
        "TaylorSeer: forecast features with a Taylor expansion between full steps",
    ),
    "cache-mag": ("MagCacheConfig", "MagCache: skip steps by residual-magnitude ratios (Flux ratios)"),
}


def _cache_apply(name: str) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        model = components.denoiser(pipe)
        if not hasattr(model, "enable_cache"):
            raise ValueError(
                f"{type(model).__name__} is not a diffusers CacheMixin; caching needs a transformer that is"
            )
        model.enable_cache(_config(name, pipe, ctx))
        return pipe

    return apply


def register_all(registry: Registry) -> None:
    for name, (config_class, description) in CACHES.items():
        registry.register(
            name,
            family="caching",
            builtin=True,
            stage=STAGE_CACHE,
            min_ssim=CACHE_SSIM,
            exclusive="cache",
            default=True,
            requires=Requirements(families=("transformer",), attribute=("diffusers.hooks", config_class)),
            description=description,
        )(_cache_apply(name))
