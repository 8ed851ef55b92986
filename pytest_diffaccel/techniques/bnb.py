"""bitsandbytes through diffusers' ``BitsAndBytesConfig`` (NF4, FP4, LLM.int8()): the denoiser, and
the T5 text encoder where the pipeline has one (Flux's ``text_encoder_2``, with transformers' own
``BitsAndBytesConfig``), loaded anew with ``from_pretrained(..., quantization_config=...)``, as in
diffusers' bitsandbytes guide. The 4-bit kinds compute in the pipeline's dtype.

CUDA only here: bitsandbytes 0.50 has a CPU backend (its Linear4bit and Linear8bitLt run on the
CPU), but diffusers' quantizer refuses to load without a GPU ("No GPU found. A GPU is needed for
quantization.").
"""

from __future__ import annotations

from typing import Any

from . import components, loaded
from .registry import ApplyContext, Registry, Requirements

BNB_4BIT_SSIM = 0.50
BNB_8BIT_SSIM = 0.85
PACKAGE = ("bitsandbytes", "0.43.3")  # diffusers' own minimum
TEXT_ENCODER_CLASSES = ("T5EncoderModel",)

KINDS: dict[str, tuple[dict[str, Any], str, float, str]] = {
    # technique: (config keywords (compute dtype added for 4-bit), the kind a layer holds, ssim, description)
    "bnb-nf4": ({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, "nf4", BNB_4BIT_SSIM, "NF4 (4-bit normal float)"),
    "bnb-fp4": ({"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}, "fp4", BNB_4BIT_SSIM, "FP4 (4-bit float)"),
    "bnb-int8": ({"load_in_8bit": True}, "int8", BNB_8BIT_SSIM, "LLM.int8() (8-bit, outliers in fp16)"),
}


def kind_of(module: Any) -> str | None:
    """What a bitsandbytes layer's weight holds (``nf4``, ``fp4``, ``int8``), None for a float layer."""
    weight: Any = getattr(module, "weight", None)
    if not type(weight).__module__.startswith("bitsandbytes"):
        return None
    if type(weight).__name__ == "Params4bit":
        return str(weight.quant_type) if getattr(weight, "bnb_quantized", False) else None
    if type(weight).__name__ == "Int8Params":
        return "int8" if str(weight.dtype) == "torch.int8" else None
    return None


def quantized_components(pipe: Any) -> list[str]:
    """The denoiser, and the T5 text encoders: what the technique loads quantized."""
    names = [components.denoiser_name(pipe)]
    names += [name for name, m in components.modules(pipe) if type(m).__name__ in TEXT_ENCODER_CLASSES]
    return names


def _config(library: str, keywords: dict[str, Any], dtype: Any) -> Any:
    import importlib

    config_class: Any = importlib.import_module(library).BitsAndBytesConfig  # diffusers' or transformers'
    if keywords.get("load_in_4bit"):
        keywords = {**keywords, "bnb_4bit_compute_dtype": dtype}
    return config_class(**keywords)


def _apply(keywords: dict[str, Any]) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        for name in quantized_components(pipe):
            library = "diffusers" if name == components.denoiser_name(pipe) else "transformers"
            config = _config(library, keywords, loaded.dtype_of(getattr(pipe, name)))
            model = loaded.reload(pipe, ctx, name, config, library=library)
            count = sum(1 for _, m in loaded.linear_layers(model) if kind_of(m))
            ctx.note(f"{name}: {count} linear layers quantized by bitsandbytes")
        return pipe

    return apply


def register_all(registry: Registry) -> None:
    for name, (keywords, kind, ssim, what) in KINDS.items():
        loaded.register_weights(
            registry,
            name,
            min_ssim=ssim,
            requires=Requirements(cuda=True, packages=(PACKAGE,), attribute=("diffusers", "BitsAndBytesConfig")),
            description=f"bitsandbytes {what} on the denoiser and the T5 text encoder, loaded with "
            "from_pretrained(quantization_config=BitsAndBytesConfig(...)) (diffusers' quantizer needs a GPU)",
            effect=loaded.quantized_layers_effect("bitsandbytes", kind, kind_of, lambda m: True, quantized_components),
            apply=_apply(keywords),
        )
