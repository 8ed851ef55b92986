"""optimum-quanto through diffusers' ``QuantoConfig``: the denoiser loaded anew with
``from_pretrained(..., quantization_config=QuantoConfig(weights_dtype=...))``, its linear layers
replaced by quanto's ``QLinear`` holding int8, float8, int4 or int2 weights (activations stay
float). Runs on the CPU. diffusers 0.42 marks QuantoConfig deprecated (removal planned for 1.0).

quanto's packed int4/int2 weights fail under ``torch.inference_mode`` ("Cannot set version_counter
for inference tensor", optimum-quanto #304), which the plugin's calls run in; diffusers pipelines
themselves run under ``no_grad``: those two techniques' calls leave inference mode, as a user's do.
"""

from __future__ import annotations

from typing import Any

from . import components, loaded
from .registry import ApplyContext, Registry, Requirements

QUANTO_SSIM = 0.85  # the registered threshold; the class floor measured on the presets replaces it there
LOW_BIT_SSIM = 0.50
PACKAGE = ("optimum-quanto", "0.2.6")

WEIGHTS = {
    # technique: (QuantoConfig weights_dtype, the qtype quanto names it, ssim, description)
    "quanto-int8": ("int8", "qint8", QUANTO_SSIM, "int8 weights"),
    "quanto-float8": ("float8", "qfloat8", QUANTO_SSIM, "float8 (e4m3) weights"),
    "quanto-int4": ("int4", "qint4", LOW_BIT_SSIM, "int4 weights, group-wise scales"),
    "quanto-int2": ("int2", "qint2", LOW_BIT_SSIM, "int2 weights, group-wise scales"),
}


def qtype_of(module: Any) -> str | None:
    """The quanto qtype a linear layer's weight holds (``qint8``, ``qfloat8``...), None for a float one.

    The weight itself must be a quanto tensor (a frozen, quantized weight), not a float weight a
    QLinear would quantize on the fly."""
    weight = getattr(module, "weight", None)
    if not any(cls.__module__.startswith("optimum.quanto") for cls in type(weight).__mro__):
        return None
    name = str(getattr(getattr(weight, "qtype", None), "name", "") or "")
    return "qfloat8" if name.startswith("qfloat8") else name or None


PACKED = ("int4", "int2")  # QBitsTensor weights: no inference mode


def outside_inference_mode() -> Any:
    import torch

    return torch.inference_mode(False)


def _apply(weights: str) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        from diffusers import QuantoConfig

        name = components.denoiser_name(pipe)
        model = loaded.reload(pipe, ctx, name, QuantoConfig(weights_dtype=weights))
        count = sum(1 for _, m in loaded.linear_layers(model) if qtype_of(m))
        ctx.note(f"{name}: {count} linear layers quantized by optimum-quanto ({weights} weights)")
        if weights in PACKED:
            ctx.call_contexts.append(outside_inference_mode)
            ctx.note("calls leave torch.inference_mode (the pipeline's own no_grad only): optimum-quanto #304")
        return pipe

    return apply


def register_all(registry: Registry) -> None:
    for name, (weights, qtype, ssim, what) in WEIGHTS.items():
        loaded.register_weights(
            registry,
            name,
            min_ssim=ssim,
            requires=Requirements(packages=(PACKAGE,), attribute=("diffusers", "QuantoConfig")),
            description=f"optimum-quanto {what} on the denoiser's linear layers, loaded with "
            f"from_pretrained(quantization_config=QuantoConfig(weights_dtype={weights!r}))",
            effect=loaded.quantized_layers_effect("quanto", qtype, qtype_of, lambda m: True),
            apply=_apply(weights),
        )
