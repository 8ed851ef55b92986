"""Models: bundled presets (tiny trained pipelines, full-size random-weight architectures),
local diffusers folders and hub ids, and what the rest of the plugin needs to know of them.

Resolving a model (``model_info``) reads only small files; loading it (``loading.open_source``)
imports torch and diffusers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


class ModelError(ValueError):
    """A model that can't be used; the message names it and says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """What the plugin knows about the session's model before (and after) loading it."""

    name: str  # what the user passed
    kind: str  # "preset", "arch", "folder" or "hub"
    family: str | None  # "unet" or "transformer"; None when unknown before loading
    pipeline_class: str | None = None
    path: Path | None = None  # folder of a preset or local model
    steps: int | None = None
    size: tuple[int, int] | None = None
    guidance: float | None = None
    prompts: Sequence[str] = ()
    tiny_vae: Path | None = None  # bundled AutoencoderTiny for this preset
    vae_tile: int | None = None  # tile size (px) small enough to tile at this preset's size
    vae_scale: int = 8
    random_weights: bool = False
    description: str = ""
    arch: str | None = None  # models.arch builder name
    # technique -> SSIM threshold where this model measures a technique differently from a real one
    ssim_overrides: tuple[tuple[str, float], ...] = ()
    call_extra: tuple[tuple[str, Any], ...] = ()  # extra call kwargs the preset needs (T5 length)
    draws_captions: bool = False  # trained on tiny's captions: the caption gate can read its pictures

    @property
    def label(self) -> str:
        return f"{self.name} (random weights)" if self.random_weights else self.name


def _preset(name: str, **kwargs: object) -> ModelInfo:
    return ModelInfo(name=name, **kwargs)  # type: ignore[arg-type]


def _tiny(name: str, family: str, pipeline_class: str, description: str, **kwargs: object) -> ModelInfo:
    """A bundled 64x64 preset trained on coloured shapes; they share the VAE and the tiny VAE."""
    from . import tiny

    defaults: dict[str, object] = {
        "path": PRESETS_DIR / name,
        "steps": 8,
        "size": (tiny.IMAGE_SIZE, tiny.IMAGE_SIZE),
        "guidance": 5.0,
        "prompts": tuple(tiny.DEFAULT_PROMPTS),
        "tiny_vae": PRESETS_DIR / "tiny-vae",
        "vae_tile": 32,
        "vae_scale": 4,
        # At 64 px, 32 px tiles are far smaller than the decoder's receptive field (its mid-block
        # attends over the whole latent): tiling redraws the picture (SSIM 0.16-0.47 measured on the
        # tiny presets) where a 1024 px image with 512 px tiles barely moves. On a tiny preset
        # vae-tiling is a code-path check; the broken-image gate still applies (and no caption gate:
        # captions.code_path_only).
        "ssim_overrides": (("vae-tiling", 0.10),),
        "draws_captions": True,
    }
    return _preset(
        name,
        kind="preset",
        family=family,
        pipeline_class=pipeline_class,
        description=description + ", 64x64, trained on coloured shapes (bundled)",
        **{**defaults, **kwargs},
    )


PRESETS: dict[str, ModelInfo] = {
    "tiny-sd": _tiny("tiny-sd", "unet", "StableDiffusionPipeline", "Stable Diffusion 1.x architecture"),
    "tiny-sdxl": _tiny(
        "tiny-sdxl",
        "unet",
        "StableDiffusionXLPipeline",
        "Stable Diffusion XL architecture (two text encoders, text_time conditioning)",
        # the bundled tiny VAE, distilled on tiny-sd's latents, is less faithful on tiny-sdxl's (floors.json)
        ssim_overrides=(("vae-tiling", 0.10), ("tiny-vae", 0.35)),
    ),
    "tiny-flux": _tiny(
        "tiny-flux",
        "transformer",
        "FluxPipeline",
        "Flux architecture (double- and single-stream transformer, CLIP + T5, flow matching)",
        guidance=None,  # not guidance-distilled, no CFG: the call passes none
        call_extra=(("max_sequence_length", 32),),
    ),
    "sd15-arch": _preset(
        "sd15-arch",
        kind="arch",
        family="unet",
        pipeline_class="StableDiffusionPipeline",
        steps=50,
        size=(512, 512),
        guidance=7.5,
        prompts=("a photo of an astronaut riding a horse on mars",),
        random_weights=True,
        arch="sd15",
        description="Stable Diffusion 1.5 architecture (UNet 859.5M), random weights, DDIM: for latency and memory",
    ),
    "sdxl-arch": _preset(
        "sdxl-arch",
        kind="arch",
        family="unet",
        pipeline_class="StableDiffusionXLPipeline",
        steps=30,
        size=(1024, 1024),
        guidance=5.0,
        prompts=("Astronaut in a jungle, cold color palette, muted colors, detailed, 8k",),
        random_weights=True,
        arch="sdxl",
        description="Stable Diffusion XL base architecture (UNet 2.567B), random weights: for latency and memory",
    ),
    "flux-arch": _preset(
        "flux-arch",
        kind="arch",
        family="transformer",
        pipeline_class="FluxPipeline",
        steps=28,
        size=(1024, 1024),
        guidance=3.5,
        prompts=("A cat holding a sign that says hello world",),
        random_weights=True,
        arch="flux",
        description="FLUX.1-dev architecture (transformer 11.9B, T5-XXL), random weights: for latency and memory; "
        "fp32 needs about 70 GB of GPU memory",
    ),
}


def model_info(name: str, allow_pickle: bool = False) -> ModelInfo:
    """Resolve ``--diffaccel-model``: a preset name, a local diffusers folder or a hub id."""
    if name in PRESETS:
        info = PRESETS[name]
        if info.kind == "preset" and (info.path is None or not (info.path / "model_index.json").is_file()):
            raise ModelError(
                f"bundled preset {name!r} has no weights at {info.path}; reinstall pytest-diffaccel or run "
                "python scripts/train_tiny.py"
            )
        return info
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return _folder_info(name, path, allow_pickle)
    if name.count("/") == 1 and all(name.split("/")):
        return ModelInfo(name=name, kind="hub", family=None, description="hub id, loaded with from_pretrained")
    raise ModelError(
        f"--diffaccel-model {name!r}: not a bundled preset ({', '.join(PRESETS)}), not an existing folder and "
        "not a hub id (org/name)"
    )


def _folder_info(name: str, path: Path, allow_pickle: bool) -> ModelInfo:
    if not path.is_dir():
        raise ModelError(f"--diffaccel-model {name!r}: no such folder; pass a diffusers folder, a preset or a hub id")
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelError(
            f"--diffaccel-model {name!r}: {path} is not a diffusers folder (no model_index.json); "
            "save one with pipeline.save_pretrained(folder)"
        )
    try:
        data = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"--diffaccel-model {name!r}: {index} is not valid JSON ({error})") from None
    family = "unet" if data.get("unet") else "transformer" if data.get("transformer") else None
    if family is None:
        raise ModelError(f"--diffaccel-model {name!r}: {index} names neither a unet nor a transformer")
    has_safetensors = any(path.rglob("*.safetensors"))
    has_pickle = any(path.rglob("*.bin")) or any(path.rglob("*.ckpt")) or any(path.rglob("*.pt"))
    if not has_safetensors and has_pickle and not allow_pickle:
        raise ModelError(
            f"--diffaccel-model {name!r}: the weights in {path} are pickle files only (.bin/.ckpt), which can run "
            "code when loaded; convert them to safetensors, or pass --diffaccel-allow-pickle if you trust them"
        )
    return ModelInfo(
        name=name,
        kind="folder",
        family=family,
        pipeline_class=str(data.get("_class_name") or "DiffusionPipeline"),
        path=path,
        description=f"local diffusers folder ({data.get('_class_name', 'pipeline')})",
    )
