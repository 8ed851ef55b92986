"""Caching for transformer pipelines (diffusers' CacheMixin): PAB, FasterCache, First Block Cache,
TaylorSeer, MagCache, SeaCache, and the text K/V cache. Each reuses denoiser computations across
steps; on a UNet they fail (IndexError, permute errors), so they require a transformer denoiser.

The settings are those of the diffusers caching guide, scaled to the call's step count where
the method counts steps. SeaCache (diffusers 0.42) gates on the scheduler's position, which only
the Wan and Cosmos 3 pipelines hand to ``cache_context``; on Flux the technique supplies it, and
the packed latents, through SeaCache's generic path (seacache.py). The text K/V cache
(exact) serves NucleusMoE-Image blocks only.
"""

from __future__ import annotations

import contextlib
from typing import Any

from . import components, seacache
from .effects import Probe, call_once, counting, forward_calls, patched
from .precision import LOSSLESS_SSIM
from .registry import STAGE_CACHE, ApplyContext, Effect, Registry, Requirements

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
    if name == "cache-sea":
        callback = seacache.sea_adapter(pipe)
        if callback is not None:
            ctx.note("SeaCache's generic path: the plugin hands it Flux's latents and the scheduler's position")
        return hooks.SeaCacheConfig(raw_vision_callback=callback)
    if name == "cache-text-kv":
        return hooks.TextKVCacheConfig()
    raise KeyError(name)


# ----------------------------------------------------------------------------- SeaCache on Flux

DENOISER_COMPILES = ("compile", "compile-max-autotune", "compile-reduce-overhead", "compile-regional")
SEA_UNTRACEABLE = (
    "SeaCache's gate reads the latents and the scheduler's position on the host in the transformer's and the "
    "first block's calls (the latter marked torch.compiler.disable), which fullgraph compilation can't trace"
)
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
    "cache-sea": (
        "SeaCacheConfig",
        "SeaCache: reuse the block stack's residual while spectrally filtered latents barely change",
    ),
    "cache-text-kv": (
        "TextKVCacheConfig",
        "text K/V cache: the text keys and values computed once per prompt (exact; NucleusMoE-Image blocks)",
    ),
}
NOT_DEFAULT = frozenset({"cache-text-kv"})  # one model family: on every bundled preset it could only fail


# The names diffusers registers each cache's hooks under (diffusers.hooks.<module>._..._HOOK).
HOOK_NAMES = {
    "cache-pab": ("pyramid_attention_broadcast",),
    "cache-faster": ("faster_cache_denoiser", "faster_cache_block"),
    "cache-first-block": ("fbc_leader_block_hook", "fbc_block_hook"),
    "cache-taylorseer": ("taylorseer_cache",),
    "cache-mag": ("mag_cache_leader_block_hook", "mag_cache_block_hook"),
    "cache-sea": ("sea_cache_leader_block", "sea_cache_block"),
    "cache-text-kv": ("text_kv_cache_block",),
}


def cache_hooks(model: Any, names: tuple[str, ...]) -> list[Any]:
    """The hooks of these names in the diffusers hook registries of ``model`` and its submodules."""
    found = []
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hooks = getattr(registry, "hooks", None) or {}
        found += [hook for key, hook in hooks.items() if key in names]
    return found


def _cache_effect(name: str) -> Any:
    def effect(pipe: Any, probe: Probe) -> Effect:
        """Effect: the cache's hooks are registered on the denoiser and, during one call, some hooked
        calls were served from the cache (the hook did not run the module's own forward)."""
        model = components.denoiser(pipe)
        label = components.denoiser_name(pipe)
        names = HOOK_NAMES[name]
        hooks = cache_hooks(model, names)
        if not hooks:
            return Effect(False, f"no {' or '.join(names)} hook registered on the {label}")
        watched = [h for h in hooks if getattr(getattr(h, "fn_ref", None), "original_forward", None) is not None]
        if not watched:
            return Effect(
                True,
                f"effect not checked: {len(hooks)} {names[0]} hooks on the {label}, but this diffusers keeps no "
                "fn_ref.original_forward on them to count what they skip",
                checked=False,
            )
        calls: list[Any] = []
        computed: list[Any] = []
        with contextlib.ExitStack() as stack:
            for hook in watched:
                stack.enter_context(patched(hook.fn_ref, "forward", counting(calls)))
                stack.enter_context(patched(hook.fn_ref, "original_forward", counting(computed)))
            call_once(probe)
        hits = len(calls) - len(computed)
        line = (
            f"{len(hooks)} hooks on the {label}; {hits} of {len(calls)} hooked calls served from the cache in one call"
        )
        if not calls:
            return Effect(False, f"{len(hooks)} hooks on the {label}, never called in one call")
        return Effect(hits > 0, line + ("" if hits else ": the cache never hit"))

    return effect


TEXT_KV_BLOCK = "NucleusMoEImageTransformerBlock"  # the only block diffusers 0.42's text K/V cache hooks


def text_kv_effect(pipe: Any, probe: Probe) -> Effect:
    """Effect: the text K/V hooks sit on the blocks and, during one call, the blocks ran on cached text
    keys and values: their text projection (``encoder_proj``) ran fewer times than they did."""
    model = components.denoiser(pipe)
    label = components.denoiser_name(pipe)
    hooks = cache_hooks(model, HOOK_NAMES["cache-text-kv"])
    if not hooks:
        return Effect(False, f"no text_kv_cache_block hook registered on the {label}")
    blocks = [m for m in model.modules() if type(m).__name__ == TEXT_KV_BLOCK]
    with forward_calls(blocks) as calls, forward_calls([b.encoder_proj for b in blocks]) as projections:
        call_once(probe)
    reused = len(calls) - len(projections)
    line = (
        f"{len(hooks)} hooks on the {label}; text K/V projected {len(projections)} times for "
        f"{len(calls)} block calls in one call"
    )
    if not calls:
        return Effect(False, f"{len(hooks)} hooks on the {label}, never called in one call")
    return Effect(reused > 0, line + ("" if reused > 0 else ": the cache never served"))


def _cache_apply(name: str) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        model = components.denoiser(pipe)
        if not hasattr(model, "enable_cache"):
            raise ValueError(
                f"{type(model).__name__} is not a diffusers CacheMixin; caching needs a transformer that is"
            )
        if name == "cache-text-kv" and not any(type(m).__name__ == TEXT_KV_BLOCK for m in model.modules()):
            raise ValueError(f"diffusers' text K/V cache serves {TEXT_KV_BLOCK}s only; {type(model).__name__} has none")
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
            min_ssim=LOSSLESS_SSIM if name == "cache-text-kv" else CACHE_SSIM,  # the text K/V cache is exact
            exclusive="cache",
            default=name not in NOT_DEFAULT,
            requires=Requirements(families=("transformer",), attribute=("diffusers.hooks", config_class)),
            description=description,
            conflicts=dict.fromkeys(DENOISER_COMPILES, SEA_UNTRACEABLE) if name == "cache-sea" else None,
            effect=text_kv_effect if name == "cache-text-kv" else _cache_effect(name),
        )(_cache_apply(name))
