"""Structural changes: fused QKV projections and model swaps (tiny VAE, distilled denoiser)."""

from __future__ import annotations

from typing import Any

from . import components
from .precision import LOSSLESS_SSIM
from .registry import STAGE_FUSE, STAGE_SWAP, ApplyContext, Registry

TINY_VAE_SSIM = 0.55  # the bundled tiny VAE scores 0.63 on tiny-sd (README)
DISTILLED_SSIM = 0.30  # a distilled model draws its own picture; the gate only catches broken ones


def _dtype_of(pipe: Any) -> Any:
    return components.denoiser(pipe).dtype


def register_all(registry: Registry) -> None:
    register = registry.register

    @register(
        "fuse-qkv",
        family="structure",
        builtin=True,
        stage=STAGE_FUSE,
        min_ssim=LOSSLESS_SSIM,
        default=True,
        conflicts={
            "attention-slicing": "fused QKV installs its own attention processor, which slicing would replace",
            "xformers": "fused QKV installs its own attention processor, which xFormers would replace",
        },
        description="fuse_qkv_projections(): one matmul for Q, K and V (denoiser and AutoencoderKL VAE)",
    )
    def fuse_qkv(pipe: Any, ctx: ApplyContext) -> Any:
        from diffusers import AutoencoderKL

        vae_fusable = isinstance(getattr(pipe, "vae", None), AutoencoderKL)
        if hasattr(pipe, "fuse_qkv_projections") and components.denoiser_name(pipe) == "unet":
            pipe.fuse_qkv_projections(unet=True, vae=vae_fusable)
        else:  # transformer pipelines: the models carry the method
            components.denoiser(pipe).fuse_qkv_projections()
            if vae_fusable:
                pipe.vae.fuse_qkv_projections()
        if not vae_fusable:
            ctx.note("VAE not fused (not an AutoencoderKL)")
        return pipe

    @register(
        "tiny-vae",
        family="structure",
        builtin=True,
        stage=STAGE_SWAP,
        min_ssim=TINY_VAE_SSIM,
        default=True,
        argument="optional",
        argument_help="an AutoencoderTiny repository or folder, e.g. tiny-vae=madebyollin/taesdxl; "
        "the bundled one is used for the tiny presets",
        description="swap the VAE for an AutoencoderTiny (TAESD): much faster decode, slightly different image",
    )
    def tiny_vae(pipe: Any, ctx: ApplyContext) -> Any:
        from diffusers import AutoencoderTiny

        source = ctx.argument or getattr(ctx.model, "tiny_vae", None)
        if source is None:
            raise ValueError(
                "tiny-vae: this model has no bundled tiny VAE; name one, e.g. tiny-vae=madebyollin/taesdxl "
                "(SDXL) or tiny-vae=madebyollin/taesd (SD 1.x)"
            )
        vae = AutoencoderTiny.from_pretrained(str(source), torch_dtype=_dtype_of(pipe), use_safetensors=True)
        pipe.vae = vae.to(ctx.device)
        ctx.note(f"VAE: AutoencoderTiny from {source if ctx.argument else 'the bundled preset'}")
        return pipe

    @register(
        "distilled",
        family="structure",
        builtin=True,
        stage=STAGE_SWAP,
        min_ssim=DISTILLED_SSIM,
        argument="required",
        argument_help="a repository or folder holding a distilled denoiser of the same family, "
        "e.g. distilled=nota-ai/bk-sdm-small",
        description="swap the denoiser for a distilled one (e.g. BK-SDM): fewer blocks, a similar picture",
    )
    def distilled(pipe: Any, ctx: ApplyContext) -> Any:
        import diffusers

        name = components.denoiser_name(pipe)
        model_class = getattr(diffusers, type(components.denoiser(pipe)).__name__)
        source = str(ctx.argument)
        from pathlib import Path

        subfolder = name if (Path(source) / name).is_dir() or not Path(source).exists() else None
        model = model_class.from_pretrained(
            source, subfolder=subfolder, torch_dtype=_dtype_of(pipe), use_safetensors=True
        )
        setattr(pipe, name, model.to(ctx.device))
        ctx.note(f"{name}: {model_class.__name__} from {source}")
        return pipe
