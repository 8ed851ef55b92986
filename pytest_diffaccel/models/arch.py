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


def unet_parameters(name: str) -> int:
    """Parameter count of an architecture's UNet, built on the meta device (no memory)."""
    import torch
    from diffusers import UNet2DConditionModel

    config = {"sd15": SD15_UNET, "sdxl": SDXL_UNET}[name]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    return sum(p.numel() for p in unet.parameters())
