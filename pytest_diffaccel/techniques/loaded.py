"""Quantization at load time (bitsandbytes, optimum-quanto, GGUF): the component is loaded anew from
the model's own files with a quantization config, as users do (``from_pretrained(...,
quantization_config=...)``, ``from_single_file(...)``), and replaces the fresh pipeline's copy.

These techniques run at :data:`STAGE_LOAD`, after the precision technique has chosen the dtype
(they load in it) and before anything changes the denoiser (attention processors, fused
projections, compile, caches), so that those apply to the quantized model. What they share:
where the files are, the loading keywords, and an effect check over the linear layers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from . import components
from .effects import Probe, call_once, forward_calls, plural
from .registry import STAGE_PRECISION, ApplyContext, Effect, Registry, Requirements

STAGE_LOAD = STAGE_PRECISION + 5  # after the dtype is chosen, before the denoiser is changed
CONFLICTS = {
    "distilled": "both replace the denoiser: the quantized one is loaded from the base model's files",
    "fuse-qkv": "fusing Q, K and V after a load-time quantization concatenates the weights into a new float "
    "layer (GGUF's can't be concatenated at all): the fused projections would not be quantized",
    "layerwise-fp8": "the quantized weights can't be stored in float8 (optimum-quanto refuses); only the layers "
    "left in float would be cast",
}


def files_of(ctx: ApplyContext) -> tuple[str, dict[str, Any]]:
    """Where the session's model lives (a folder or a hub id) and the keywords the session loaded it with."""
    info = ctx.model
    if info.kind == "arch":
        raise ValueError(
            f"{info.name} is built with random weights and has no files to load with a quantization config; "
            "use a model folder or hub id (--diffaccel-model PATH_OR_ID)"
        )
    source = str(info.path) if info.path is not None else str(info.name)
    kwargs: dict[str, Any] = {}
    if not getattr(ctx.settings, "allow_pickle", False):
        kwargs["use_safetensors"] = True
    if info.kind in ("preset", "folder") or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        kwargs["local_files_only"] = True
    return source, kwargs


def dtype_of(model: Any) -> Any:
    """The dtype of a model's floating parameters (the pipeline's precision)."""
    import torch

    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def dtype_kwargs(model: Any, library: str = "diffusers") -> dict[str, Any]:
    """``{dtype: ...}`` or ``{torch_dtype: ...}``, whichever the library's loader takes."""
    if library == "diffusers":
        from ..models.loading import dtype_keyword

        return {dtype_keyword(): dtype_of(model)}
    import transformers

    from .registry import _version_tuple

    keyword = "dtype" if _version_tuple(transformers.__version__) >= (4, 56) else "torch_dtype"
    return {keyword: dtype_of(model)}


def reload(pipe: Any, ctx: ApplyContext, name: str, config: Any, library: str = "diffusers") -> Any:
    """Load component ``name`` anew from the model's files with ``quantization_config=config``, in the
    dtype of the pipeline's copy, and put it in the pipeline (moved to the device unless the loader
    placed it there). Returns the loaded component."""
    current = getattr(pipe, name)
    source, kwargs = files_of(ctx)
    model = type(current).from_pretrained(
        source, subfolder=name, quantization_config=config, **dtype_kwargs(current, library), **kwargs
    )
    return install(pipe, ctx, name, model)


def install(pipe: Any, ctx: ApplyContext, name: str, model: Any) -> Any:
    """Put a loaded component in the pipeline, on the session's device."""
    device = next((p.device for p in model.parameters()), None)
    if device is not None and device.type != ctx.device:
        model = model.to(ctx.device)
    model.eval()
    setattr(pipe, name, model)  # DiffusionPipeline.__setattr__ keeps its config in step
    return model


# ----------------------------------------------------------------------------- the effect


def linear_layers(model: Any) -> list[tuple[str, Any]]:
    """(name, module) of every linear layer of ``model`` (quantized replacements subclass nn.Linear)."""
    import torch

    return [(fqn, m) for fqn, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def quantized_layers_effect(
    backend: str,
    expected: str,
    kind: Callable[[Any], str | None],
    eligible: Callable[[Any], bool],
    names: Callable[[Any], Sequence[str]] | None = None,
) -> Callable[[Any, Probe], Effect]:
    """An effect check: in each component ``names(pipe)`` (default: the denoiser), the eligible linear
    layers hold the backend's quantized weights of type ``expected`` (``kind(module)`` names a layer's
    quantized type, None for a float layer), and those layers ran during one call."""

    def effect(pipe: Any, probe: Probe) -> Effect:
        parts: list[str] = []
        quantized: list[Any] = []
        others: set[str] = set()
        for name in names(pipe) if names else (components.denoiser_name(pipe),):
            model = getattr(pipe, name, None)
            if model is None:
                continue
            layers = [m for _, m in linear_layers(model) if eligible(m)]
            kinds = [kind(m) for m in layers]
            mine = [m for m, k in zip(layers, kinds, strict=True) if k == expected]
            others |= {k for k in kinds if k is not None and k != expected}
            quantized += mine
            parts.append(f"{name} {len(mine)}/{len(layers)}")
        if not parts:
            return Effect(False, "no component to check in this pipeline")
        line = f"linear layers holding {backend} {expected} weights: " + ", ".join(parts)
        if others:
            line += f" (others hold {', '.join(sorted(others))})"
        if not quantized:
            return Effect(False, line)
        with forward_calls(quantized) as calls:
            call_once(probe)
        line += f"; they ran {plural(len(calls), 'time')} in one call"
        return Effect(bool(calls), line)

    return effect


def register_weights(
    registry: Registry,
    name: str,
    *,
    min_ssim: float,
    requires: Requirements,
    description: str,
    effect: Any,
    apply: Callable[..., Any],
) -> None:
    """A technique that quantizes weights as the model is loaded (quanto, GGUF, bitsandbytes): one at a time
    (they replace the same layers), in the default matrix, with the conflicts every loader shares."""
    registry.register(
        name,
        family="quantization",
        builtin=True,
        stage=STAGE_LOAD,
        min_ssim=min_ssim,
        requires=requires,
        exclusive="weight quantization",
        conflicts=CONFLICTS,
        default=True,
        description=description,
        effect=effect,
    )(apply)
