"""Changes that take a bundled preset's caption out of its picture on purpose: the caption gate's own
tests and ``benchmarks/verdict_quality.py --fidelity-only`` register them as techniques, to prove the
gate fails a technique that loses the meaning of a picture while keeping much of its pixels.

Nobody's acceleration technique: each function takes a diffusers pipeline and returns it changed.
torch is imported inside the functions.
"""

from __future__ import annotations

from typing import Any


def swap_caption_words(pipe: Any) -> Any:
    """The prompt's colour and background words swapped before encoding: "a red circle on a white
    background" is drawn as "a white circle on a red background"; other prompts are left alone."""
    encode = pipe.encode_prompt

    def swapped(prompt: Any, *args: Any, **kwargs: Any) -> Any:
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        words = [text.split() for text in texts]
        texts = [
            " ".join([w[0], w[5], *w[2:5], w[1], *w[6:]]) if len(w) == 7 else text
            for w, text in zip(words, texts, strict=True)
        ]
        return encode(texts, *args, **kwargs)

    pipe.encode_prompt = swapped
    return pipe


def zero_cross_attention(pipe: Any) -> Any:
    """The UNet's cross-attention outputs zeroed: the text no longer reaches the picture."""
    import torch

    with torch.no_grad():
        for name, module in pipe.unet.named_modules():
            if name.endswith("attn2"):
                module.to_out[0].weight.zero_()
                module.to_out[0].bias.zero_()
    return pipe
