"""Quantization with torchao's current API: ``quantize_(model, <Config>(), filter_fn=...)``.

Every technique quantizes the denoiser and the VAE through a filter that keeps out the
layers that don't gain: convolutions (torchao's linear configs reshape them wrongly) and
linear layers too small for an int8 or fp8 matmul to beat a float one (the idea behind
diffusion-fast's ``dynamic_quant_filter_fn``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import components
from .registry import STAGE_QUANTIZE, ApplyContext, Effect, Registry, Requirements

MIN_FEATURES = 16  # a linear layer narrower than this on either side is left alone
FLOAT8_MIN_FEATURES = 128  # torchao's float8 kernels scale activations in 1x128 blocks (seen on an H200)
INT8_SSIM = 0.85
INT4_SSIM = 0.75
FLOAT8_SSIM = 0.88


def linear_filter(min_features: int = MIN_FEATURES, multiple: int = 1) -> Callable[[Any, str], bool]:
    """torchao filter_fn: nn.Linear layers with at least ``min_features`` inputs and outputs,
    both a multiple of ``multiple`` (float8 matmuls need multiples of 16 and scale in 128 blocks)."""

    def keep(module: Any, fqn: str = "") -> bool:
        import torch

        return (
            isinstance(module, torch.nn.Linear)
            and module.in_features >= min_features
            and module.out_features >= min_features
            and module.in_features % multiple == 0
            and module.out_features % multiple == 0
        )

    return keep


def unfiltered(module: Any, fqn: str = "") -> bool:
    """Every nn.Linear, whatever its size (a fidelity mutation for the verdict benchmark)."""
    import torch

    return isinstance(module, torch.nn.Linear)


CONFIGS = {
    # name: (torchao config class, kwargs, requirements, default ssim, description); float8 filters harder
    "int8-dynamic": (
        "Int8DynamicActivationInt8WeightConfig",
        {},
        Requirements(packages=(("torchao", "0.10"),)),
        INT8_SSIM,
        "int8 dynamic activation + int8 weight (torchao), filtered linear layers of denoiser and VAE",
    ),
    "int8-weight-only": (
        "Int8WeightOnlyConfig",
        {},
        Requirements(packages=(("torchao", "0.10"),)),
        INT8_SSIM,
        "int8 weight-only (torchao), filtered linear layers of denoiser and VAE",
    ),
    "int4-weight-only": (
        "Int4WeightOnlyConfig",
        {"group_size": 64},
        Requirements(cuda=True, packages=(("torchao", "0.10"),)),
        INT4_SSIM,
        "int4 weight-only, group size 64 (torchao; CUDA, bf16)",
    ),
    "float8-dynamic": (
        "Float8DynamicActivationFloat8WeightConfig",
        {},
        Requirements(cuda=True, min_capability=(8, 9), packages=(("torchao", "0.10"),)),
        FLOAT8_SSIM,
        "float8 dynamic activation + float8 weight (torchao; compute capability 8.9+)",
    ),
    "float8-weight-only": (
        "Float8WeightOnlyConfig",
        {},
        Requirements(cuda=True, min_capability=(8, 9), packages=(("torchao", "0.10"),)),
        FLOAT8_SSIM,
        "float8 weight-only (torchao; compute capability 8.9+)",
    ),
}


def quantize(pipe: Any, config_name: str, kwargs: dict[str, Any], filter_fn: Callable[[Any, str], bool]) -> int:
    """Quantize the denoiser and the VAE in place; returns how many linear layers were quantized."""
    from torchao import quantization

    config_class = getattr(quantization, config_name)
    count = 0
    for name in (components.denoiser_name(pipe), "vae"):
        model = getattr(pipe, name, None)
        if model is None:
            continue
        selected = sum(1 for fqn, m in model.named_modules() if filter_fn(m, fqn))
        if selected:
            quantization.quantize_(model, config_class(**kwargs), filter_fn=filter_fn)
            count += selected
    return count


def filter_for(config_name: str) -> Callable[[Any, str], bool]:
    if config_name.startswith("Float8"):
        return linear_filter(FLOAT8_MIN_FEATURES, multiple=16)
    return linear_filter()


def _quant_apply(config_name: str, kwargs: dict[str, Any]) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        count = quantize(pipe, config_name, kwargs, filter_for(config_name))
        if count == 0:
            least = FLOAT8_MIN_FEATURES if config_name.startswith("Float8") else MIN_FEATURES
            raise ValueError(f"no linear layer of at least {least} features for {config_name} in this model")
        ctx.note(f"{count} linear layers quantized")
        return pipe

    return apply


def is_torchao_tensor(tensor: Any) -> bool:
    """A torchao tensor subclass (the quantized weight itself, not a flag)."""
    return any(cls.__module__.split(".")[0] == "torchao" for cls in type(tensor).__mro__)


def _quant_effect(config_name: str) -> Any:
    def effect(pipe: Any) -> Effect:
        """Effect: the eligible linear layers (the technique's own filter) hold torchao tensors."""
        keep = filter_for(config_name)
        parts: list[str] = []
        classes: set[str] = set()
        eligible_total = quantized_total = 0
        for name in (components.denoiser_name(pipe), "vae"):
            model = getattr(pipe, name, None)
            if model is None:
                continue
            eligible = [m for fqn, m in model.named_modules() if keep(m, fqn)]
            quantized = [m for m in eligible if is_torchao_tensor(m.weight)]
            classes |= {type(m.weight).__name__ for m in quantized}
            if eligible:
                parts.append(f"{name} {len(quantized)}/{len(eligible)}")
            eligible_total += len(eligible)
            quantized_total += len(quantized)
        if not eligible_total:
            return Effect(False, "no eligible linear layer in this model: nothing to quantize")
        line = "linear layers holding torchao tensors: " + ", ".join(parts)
        if classes:
            line += f" ({', '.join(sorted(classes))})"
        return Effect(quantized_total > 0, line)

    return effect


def register_all(registry: Registry) -> None:
    for name, (config_name, kwargs, requires, ssim, description) in CONFIGS.items():
        registry.register(
            name,
            family="quantization",
            builtin=True,
            stage=STAGE_QUANTIZE,
            min_ssim=ssim,
            requires=requires,
            exclusive="weight quantization",
            default=True,
            description=description,
            effect=_quant_effect(config_name),
        )(_quant_apply(config_name, kwargs))
