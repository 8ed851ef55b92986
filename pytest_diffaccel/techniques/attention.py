"""Attention: the SDPA backends, diffusers' attention dispatch backends, xFormers, attention slicing."""

from __future__ import annotations

from typing import Any

from . import components
from .precision import LOSSLESS_SSIM
from .registry import STAGE_ATTENTION, ApplyContext, Registry, Requirements

SDPA_BACKENDS = {
    "sdpa-flash": ("FLASH_ATTENTION", Requirements(), "FlashAttention kernel of scaled_dot_product_attention"),
    "sdpa-efficient": (
        "EFFICIENT_ATTENTION",
        Requirements(cuda=True),
        "memory-efficient (xFormers-style) kernel of scaled_dot_product_attention",
    ),
    "sdpa-math": ("MATH", Requirements(), "the reference math kernel of scaled_dot_product_attention"),
    "sdpa-cudnn": (
        "CUDNN_ATTENTION",
        Requirements(cuda=True, min_capability=(8, 0)),
        "cuDNN kernel of scaled_dot_product_attention",
    ),
}


def _sdpa_apply(backend_name: str) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, backend_name)
        # Only the denoiser is constrained: the text encoder's masked attention and the VAE's
        # single 512-wide head (flash takes at most 256) may have no kernel in the chosen backend.
        components.wrap_method(components.denoiser(pipe), "forward", lambda: sdpa_kernel([backend]))
        return pipe

    return apply


def register_all(registry: Registry) -> None:
    register = registry.register
    common = {"family": "attention", "stage": STAGE_ATTENTION, "builtin": True, "min_ssim": LOSSLESS_SSIM}
    for name, (backend, requires, description) in SDPA_BACKENDS.items():
        register(
            name,
            requires=requires,
            exclusive="attention kernel",
            default=True,
            description=f"{description} (torch.nn.attention.sdpa_kernel around the denoiser)",
            **common,
        )(_sdpa_apply(backend))

    @register(
        "attn-backend",
        argument="required",
        argument_help="a diffusers attention backend, e.g. attn-backend=_native_flash or attn-backend=flash",
        exclusive="attention kernel",
        requires=Requirements(attribute=("diffusers.models.attention_dispatch", "AttentionBackendName")),
        description="diffusers' set_attention_backend(...) on the denoiser (transformer models use its dispatcher)",
        **common,
    )
    def attn_backend(pipe: Any, ctx: ApplyContext) -> Any:
        from diffusers.models.attention_dispatch import AttentionBackendName

        known = [b.value for b in AttentionBackendName]
        if ctx.argument not in known:
            raise ValueError(f"attn-backend={ctx.argument}: unknown backend; diffusers knows {', '.join(known)}")
        model = components.denoiser(pipe)
        if not hasattr(model, "set_attention_backend"):
            raise ValueError(f"{type(model).__name__} has no set_attention_backend; upgrade diffusers")
        model.set_attention_backend(ctx.argument)
        return pipe

    @register(
        "xformers",
        requires=Requirements(cuda=True, packages=(("xformers", "0.0.20"),)),
        exclusive="attention kernel",
        default=True,
        description="xFormers memory-efficient attention (enable_xformers_memory_efficient_attention)",
        **common,
    )
    def xformers(pipe: Any) -> Any:
        pipe.enable_xformers_memory_efficient_attention()
        return pipe

    @register(
        "attention-slicing",
        exclusive="attention kernel",
        default=True,
        description="attention computed in slices (enable_attention_slicing): less memory, usually slower",
        **common,
    )
    def attention_slicing(pipe: Any) -> Any:
        pipe.enable_attention_slicing()
        return pipe
