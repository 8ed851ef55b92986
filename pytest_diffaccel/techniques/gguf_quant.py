"""GGUF, the format community checkpoints of Flux and Wan come in: the model's denoiser converted to a
GGUF file (Q8_0, or Q4_0) with the ``gguf`` package, then loaded the way users load such a file,
through diffusers' single-file path:

    Model.from_single_file(path, quantization_config=GGUFQuantizationConfig(compute_dtype=...),
                           config=MODEL, subfolder="transformer")

The file holds the model's own tensor names (diffusers loads them without a key conversion); the
weights of linear layers whose input width is a multiple of the quantization block are quantized,
every other tensor is stored in F32. diffusers replaces those layers by ``GGUFLinear``, which
dequantizes its weight at each call. The conversion is deterministic and cached: a file per source
digest (the weights and config read, the type, the converter's and gguf's versions) under
``$DIFFACCEL_GGUF_CACHE`` (default: ``~/.cache/pytest-diffaccel/gguf``, created private and checked to be
this user's; never a predictable folder of the shared temp directory).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from . import components, loaded
from .registry import ApplyContext, Registry, Requirements

CONVERTER = "1"  # part of the digest: bump it when the conversion's output changes
GGUF_Q8_SSIM = 0.85
GGUF_Q4_SSIM = 0.50
PACKAGE = ("gguf", "0.13.0")  # 0.11 writes files diffusers 0.42 can't read back (diffusers itself asks 0.10)
CACHE_ENV = "DIFFACCEL_GGUF_CACHE"
HASHED_BYTES = 1 << 30  # files larger than this are keyed by size and mtime, not hashed

TYPES = {
    # technique: (GGML quantization type, ssim, description)
    "gguf-q8_0": ("Q8_0", GGUF_Q8_SSIM, "Q8_0 (8-bit, one scale per 32 weights)"),
    "gguf-q4_0": ("Q4_0", GGUF_Q4_SSIM, "Q4_0 (4-bit, one scale per 32 weights)"),
}


def default_cache() -> Path:
    """The per-user cache (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``pytest-diffaccel/gguf``). Not a folder
    of the shared temp directory: a name there is predictable, and another user could create it first and
    hand this one a converted model of their making."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-diffaccel" / "gguf"


def owned(folder: Path) -> Path:
    """``folder``, created private (0700) when absent; refused (ValueError naming it) when it is a symlink,
    belongs to another user, or others may write into it: a converted model loaded from it runs as code
    of whoever can write there."""
    import stat

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    problem = None
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a folder (a symlink?)"
    elif hasattr(os, "getuid") and info.st_uid != os.getuid():
        problem = f"belongs to another user (uid {info.st_uid})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"may be written by others (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        raise ValueError(f"GGUF cache {folder} {problem}; remove it, or set ${CACHE_ENV} to a folder of your own")
    return folder


def cache_dir() -> Path:
    """Where converted files are kept: ``$DIFFACCEL_GGUF_CACHE``, else the per-user cache; checked as ours."""
    configured = os.environ.get(CACHE_ENV)
    return owned(Path(configured) if configured else default_cache())


def block_size(qtype: str) -> int:
    import gguf

    return int(gguf.GGML_QUANT_SIZES[getattr(gguf.GGMLQuantizationType, qtype)][0])


def component_folder(ctx: ApplyContext, name: str) -> Path:
    """The local folder of component ``name``'s config and weights (a hub id: its cached snapshot)."""
    source, kwargs = loaded.files_of(ctx)
    if Path(source).is_dir():
        return Path(source) / name
    from huggingface_hub import snapshot_download

    files = ("config.json", "*.safetensors.index.json", "diffusion_pytorch_model.safetensors",
             "diffusion_pytorch_model-*-of-*.safetensors")  # fmt: skip
    patterns = [f"{name}/{file}" for file in files]
    folder = snapshot_download(source, allow_patterns=patterns, local_files_only=kwargs.get("local_files_only", False))
    return Path(folder) / name


def weight_files(folder: Path) -> list[Path]:
    """The component's safetensors files, without variants (``*.fp16.safetensors``)."""
    files = sorted(p for p in folder.glob("*.safetensors") if "." not in p.stem)
    if not files:
        raise ValueError(f"no safetensors weights in {folder} to convert to GGUF")
    return files


def digest(folder: Path, qtype: str) -> str:
    """What the conversion's output depends on: the converter, gguf's version, the type, the config and the weights."""
    from .registry import installed_version

    h = hashlib.sha256(f"diffaccel-gguf {CONVERTER} gguf {installed_version('gguf')} {qtype}\n".encode())
    for path in [folder / "config.json", *weight_files(folder)]:
        h.update(path.name.encode() + b"\n")
        size = path.stat().st_size
        if size > HASHED_BYTES:
            h.update(f"{size} {path.stat().st_mtime_ns}\n".encode())
            continue
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def quantized_names(model: Any, block: int) -> set[str]:
    """The weights the conversion quantizes: linear layers whose input width is a multiple of the block."""
    return {f"{fqn}.weight" for fqn, m in loaded.linear_layers(model) if m.in_features % block == 0}


def convert(folder: Path, out: Path, qtype: str, quantize: set[str], arch: str) -> None:
    """Write the GGUF file: the tensors in name order, ``quantize`` in ``qtype``, the rest in F32."""
    import gguf
    from gguf import quants
    from safetensors import safe_open

    ggml_type = getattr(gguf.GGMLQuantizationType, qtype)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=arch)
    try:
        for path in weight_files(folder):
            with safe_open(str(path), framework="pt") as handle:
                for name in sorted(handle.keys()):
                    tensor = handle.get_tensor(name).float().numpy()
                    if name in quantize:
                        writer.add_tensor(name, quants.quantize(tensor, ggml_type), raw_dtype=ggml_type)
                    else:
                        writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)  # another worker converting the same file writes the same bytes
    finally:
        if tmp.exists():
            tmp.unlink()


def converted(ctx: ApplyContext, name: str, model: Any, qtype: str) -> tuple[Path, bool]:
    """The cached GGUF file of component ``name`` in ``qtype`` (converted now if absent), and whether it was."""
    folder = component_folder(ctx, name)
    out = cache_dir() / f"{name}-{digest(folder, qtype)}-{qtype}.gguf"
    if out.is_file():
        return out, False
    out.parent.mkdir(parents=True, exist_ok=True)
    convert(folder, out, qtype, quantized_names(model, block_size(qtype)), type(model).__name__.lower())
    return out, True


def quant_type_of(module: Any) -> str | None:
    """The GGML type a linear layer's weight holds (``Q8_0``...), None for a float weight."""
    weight = getattr(module, "weight", None)
    kind = getattr(weight, "quant_type", None)
    return None if kind is None or type(weight).__name__ != "GGUFParameter" else str(getattr(kind, "name", kind))


def _apply(qtype: str) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        from diffusers import GGUFQuantizationConfig

        name = components.denoiser_name(pipe)
        current = getattr(pipe, name)
        model_class = type(current)
        if not hasattr(model_class, "from_single_file"):
            raise ValueError(f"diffusers can't load a {model_class.__name__} from a single file (GGUF)")
        path, made = converted(ctx, name, current, qtype)
        source, kwargs = loaded.files_of(ctx)
        dtype = loaded.dtype_of(current)
        model = model_class.from_single_file(
            str(path),
            quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
            config=source,
            subfolder=name,
            local_files_only=kwargs.get("local_files_only", False),
            **loaded.dtype_kwargs(current),
        )
        loaded.install(pipe, ctx, name, model)
        count = sum(1 for _, m in loaded.linear_layers(model) if quant_type_of(m))
        ctx.note(f"{name}: {count} linear layers in {qtype} from {path.name} ({'converted now' if made else 'cached'})")
        return pipe

    return apply


def _eligible(qtype: str) -> Any:
    def eligible(module: Any) -> bool:
        return bool(module.in_features % block_size(qtype) == 0)

    return eligible


def register_all(registry: Registry) -> None:
    for name, (qtype, ssim, what) in TYPES.items():
        loaded.register_weights(
            registry,
            name,
            min_ssim=ssim,
            requires=Requirements(packages=(PACKAGE,), attribute=("diffusers", "GGUFQuantizationConfig")),
            description=f"the denoiser converted to GGUF {what} and loaded with from_single_file("
            "quantization_config=GGUFQuantizationConfig(...)), as community checkpoints are",
            effect=loaded.quantized_layers_effect("GGUF", qtype, quant_type_of, _eligible(qtype)),
            apply=_apply(qtype),
        )
