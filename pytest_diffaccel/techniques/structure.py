"""Structural changes: fused QKV projections and model swaps (tiny VAE, distilled denoiser)."""

from __future__ import annotations

from typing import Any

from . import components
from .effects import Probe, call_once, forward_calls, millions, plural
from .precision import LOSSLESS_SSIM
from .registry import STAGE_FUSE, STAGE_SWAP, ApplyContext, Effect, Registry

TINY_VAE_SSIM = 0.55  # the bundled tiny VAE scores 0.63 on tiny-sd (README)
DISTILLED_SSIM = 0.30  # a distilled model draws its own picture; the gate only catches broken ones


def _dtype_of(pipe: Any) -> Any:
    return components.denoiser(pipe).dtype


FUSED_NAMES = ("to_qkv", "to_kv", "to_added_qkv")  # what diffusers' fuse_projections() adds


def _fusable(pipe: Any) -> list[tuple[str, Any]]:
    """(component, model) whose attention fuse_qkv fuses: the denoiser, and the VAE if an AutoencoderKL."""
    from diffusers import AutoencoderKL

    models = [(components.denoiser_name(pipe), components.denoiser(pipe))]
    if isinstance(getattr(pipe, "vae", None), AutoencoderKL):
        models.append(("vae", pipe.vae))
    return models


def fuse_qkv_effect(pipe: Any, probe: Probe) -> Effect:
    """Effect: the attention modules hold fused projections (to_qkv, to_kv for cross-attention,
    to_added_qkv) and those fused layers ran during one call."""
    import torch

    parts: list[str] = []
    fused_layers: list[Any] = []
    for name, model in _fusable(pipe):
        attention = [m for m in model.modules() if hasattr(m, "fuse_projections")]
        layers = [
            [getattr(m, n) for n in FUSED_NAMES if isinstance(getattr(m, n, None), torch.nn.Linear)] for m in attention
        ]
        fused = [group for group in layers if group]
        fused_layers += [layer for group in fused for layer in group]
        parts.append(f"{name} {len(fused)}/{len(attention)}")
    line = "attention modules fused: " + ", ".join(parts)
    if not fused_layers:
        return Effect(False, line)
    with forward_calls(fused_layers) as calls:
        call_once(probe)
    return Effect(bool(calls), f"{line}; fused projections ran {plural(len(calls), 'time')} in one call")


def _parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny_vae_effect(pipe: Any) -> Effect:
    """Effect: the pipeline's VAE is an AutoencoderTiny."""
    from diffusers import AutoencoderTiny

    vae = getattr(pipe, "vae", None)
    if vae is None:
        return Effect(False, "the pipeline has no VAE")
    line = f"VAE: {type(vae).__name__} ({millions(_parameters(vae))} parameters)"
    return Effect(isinstance(vae, AutoencoderTiny), line)


def distilled_effect(pipe: Any, probe: Probe) -> Effect:
    """Effect: the denoiser is not the base model's (another object, and another class or size)."""
    name = components.denoiser_name(pipe)
    base = probe.ctx.state.get("distilled")
    if base is None:
        return Effect(False, f"no record of the base {name} at apply time: the swap did not run")
    model = components.denoiser(pipe)
    count = _parameters(model)
    now = f"{type(model).__name__} with {millions(count)} parameters"
    was = f"{base['class']} with {millions(base['parameters'])}"
    if id(model) == base["id"] or (type(model).__name__ == base["class"] and count == base["parameters"]):
        return Effect(False, f"{name} unchanged: {now}, the base model's")
    return Effect(True, f"{name}: {now} replaces the base {was}")


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
        effect=fuse_qkv_effect,
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
        effect=tiny_vae_effect,
    )
    def tiny_vae(pipe: Any, ctx: ApplyContext) -> Any:
        from diffusers import AutoencoderTiny

        source = ctx.argument or getattr(ctx.model, "tiny_vae", None)
        if source is None:
            raise ValueError(
                "tiny-vae: this model has no bundled tiny VAE; name one, e.g. tiny-vae=madebyollin/taesdxl "
                "(SDXL) or tiny-vae=madebyollin/taesd (SD 1.x)"
            )
        from ..models.loading import dtype_keyword

        vae = AutoencoderTiny.from_pretrained(str(source), **{dtype_keyword(): _dtype_of(pipe)}, use_safetensors=True)
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
        effect=distilled_effect,
    )
    def distilled(pipe: Any, ctx: ApplyContext) -> Any:
        import diffusers

        name = components.denoiser_name(pipe)
        base = components.denoiser(pipe)
        ctx.state["distilled"] = {"class": type(base).__name__, "parameters": _parameters(base), "id": id(base)}
        model_class = getattr(diffusers, type(base).__name__)
        source = str(ctx.argument)
        from pathlib import Path

        from ..models.loading import dtype_keyword

        subfolder = name if (Path(source) / name).is_dir() or not Path(source).exists() else None
        model = model_class.from_pretrained(
            source, subfolder=subfolder, **{dtype_keyword(): _dtype_of(pipe)}, use_safetensors=True
        )
        setattr(pipe, name, model.to(ctx.device))
        ctx.note(f"{name}: {model_class.__name__} from {source}")
        return pipe
