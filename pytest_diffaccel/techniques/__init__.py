"""Techniques: the registry and the built-in families (one module each)."""

from __future__ import annotations

from .registry import (
    ApplyContext,
    Effect,
    EffectFn,
    Environment,
    Part,
    Registry,
    Requirements,
    Spec,
    SpecError,
    Technique,
    unmet,
)

PRESETS = {
    "diffusion-fast": (
        "bf16+sdpa-flash+fuse-qkv+channels-last+int8-dynamic+compile-max-autotune+compile-vae",
        "the diffusion-fast recipe: bf16, SDPA flash, fused QKV, channels-last, int8 dynamic quantization, "
        "max-autotune compile of the UNet and the VAE decode",
    ),
    "flux-fast": (
        "bf16+fuse-qkv+float8-dynamic+compile",
        "in the spirit of flux-fast: bf16, fused QKV, float8 dynamic quantization, compile of the transformer",
    ),
}


def builtin_registry() -> Registry:
    """A registry holding every built-in technique and preset."""
    from . import (
        attention,
        bnb,
        cachedit,
        caching,
        compilation,
        gguf_quant,
        memory,
        precision,
        quantization,
        quanto,
        structure,
    )

    registry = Registry()
    for family in (
        precision, attention, structure, quantization, quanto, gguf_quant, bnb, compilation, memory, caching, cachedit,
    ):  # fmt: skip
        family.register_all(registry)
    for name, (spec, description) in PRESETS.items():
        registry.preset(name, spec, description)
    return registry


__all__ = [
    "PRESETS",
    "ApplyContext",
    "Effect",
    "EffectFn",
    "Environment",
    "Part",
    "Registry",
    "Requirements",
    "Spec",
    "SpecError",
    "Technique",
    "builtin_registry",
    "unmet",
]
