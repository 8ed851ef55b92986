"""Full-size architectures with random weights, for latency and memory runs on machines without weights.

The configs are those published with the models (SD 1.5: UNet 859.5M parameters; SDXL base:
UNet 2.567B). Each component is created directly on the target device, initialised from a
fixed seed in fp32 there and cast to the target dtype before the next one is built: no host
memory copy, and every dtype gets the same underlying weights, so an SSIM between an fp32 and
a bf16 run still measures the precision alone. Fidelity numbers on random weights say little
about real pictures; every report labels them.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED = 1234

SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}


def sd_vae(sample_size: int, scaling_factor: float, force_upcast: bool) -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": sample_size,
        "scaling_factor": scaling_factor,
        "force_upcast": force_upcast,
    }


CLIP_L: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
CLIP_BIGG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
FLUX_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
FLUX_VAE: dict[str, Any] = {
    **{k: v for k, v in sd_vae(1024, 0.3611, True).items()},
    "latent_channels": 16,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
T5_XXL: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
    "is_encoder_decoder": False,
}
SD_BETAS: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
}


@functools.lru_cache(maxsize=1)
def _tokenizer_dir() -> Path:
    """Our own CLIP BPE files (no download); the vocabulary is small, the ids fit a 49408-token encoder."""
    from . import tiny

    folder = Path(tempfile.mkdtemp(prefix="diffaccel-tokenizer-"))
    tiny.write_tokenizer(folder)
    return folder


def tokenizer() -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(_tokenizer_dir()), model_max_length=77)


def _on_device(factory: Callable[[], Any], device: str, dtype: Any) -> Any:
    import torch

    from ..techniques.components import quiet_casts

    with torch.device(device):
        module = factory()
    with quiet_casts():
        return module.to(dtype=dtype).eval().requires_grad_(False)


def build(name: str, device: str, dtype: Any, seed: int = SEED) -> Any:
    """A full-size pipeline with deterministic random weights, built on ``device`` in ``dtype``."""
    import torch

    torch.manual_seed(seed)
    if name == "sd15":
        return _sd15(device, dtype)
    if name == "sdxl":
        return _sdxl(device, dtype)
    if name == "flux":
        return _flux(device, dtype)
    raise KeyError(f"unknown architecture {name!r}")


def _sd15(device: str, dtype: Any) -> Any:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = _on_device(lambda: UNet2DConditionModel(**SD15_UNET), device, dtype)
    vae = _on_device(lambda: AutoencoderKL(**sd_vae(512, 0.18215, False)), device, dtype)
    text_encoder = _on_device(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L)), device, dtype)
    scheduler = DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl(device: str, dtype: Any) -> Any:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet = _on_device(lambda: UNet2DConditionModel(**SDXL_UNET), device, dtype)
    vae = _on_device(lambda: AutoencoderKL(**sd_vae(1024, 0.13025, True)), device, dtype)
    text_encoder = _on_device(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L)), device, dtype)
    text_encoder_2 = _on_device(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)), device, dtype)
    scheduler = EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer(),
        tokenizer_2=tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )


def _flux(device: str, dtype: Any) -> Any:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5Tokenizer

    from . import tiny

    transformer = _on_device(lambda: FluxTransformer2DModel(**FLUX_TRANSFORMER), device, dtype)
    vae = _on_device(lambda: AutoencoderKL(**FLUX_VAE), device, dtype)
    text_encoder = _on_device(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L)), device, dtype)
    text_encoder_2 = _on_device(lambda: T5EncoderModel(T5Config(**T5_XXL)), device, dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )  # fmt: skip
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=T5Tokenizer(vocab=tiny.t5_vocab(), extra_ids=0, model_max_length=512),
        transformer=transformer,
    )


def denoiser_parameters(name: str) -> int:
    """Parameter count of an architecture's denoiser, built on the meta device (no memory)."""
    import torch
    from diffusers import FluxTransformer2DModel

    if name == "flux":
        with torch.device("meta"):
            return sum(p.numel() for p in FluxTransformer2DModel(**FLUX_TRANSFORMER).parameters())
    return unet_parameters(name)


def unet_parameters(name: str) -> int:
    """Parameter count of an architecture's UNet, built on the meta device (no memory)."""
    import torch
    from diffusers import UNet2DConditionModel

    config = {"sd15": SD15_UNET, "sdxl": SDXL_UNET}[name]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    return sum(p.numel() for p in unet.parameters())
