"""The caption gate: does a technique's picture still show what its prompt says? Pure, no torch.

The bundled tiny presets are trained on captions such as "a red circle on a white background",
and ``models.tiny.read_picture`` reads back a 64x64 picture's background and shape colour (the
offline stand-in for a CLIP score, which no package here can load without downloading weights).
A technique *loses* a caption when the fp32 reference's picture shows it and the technique's
picture of the same prompt and seed does not: judged against the reference, never against the
prompt alone, so a caption the preset itself can't draw judges nothing. SSIM measures how far
the pixels moved; this gate asks whether the meaning survived, so a technique that keeps most
pixels but draws the wrong colour fails here even above its SSIM floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .models import tiny


@dataclass(frozen=True)
class Lost:
    """One picture whose caption the fp32 reference drew and the technique did not."""

    prompt: str
    seed: int
    drawn: str  # what the technique's picture shows: "green on gray"
    reference: str  # what the reference's shows: "red on white"

    def describe(self) -> str:
        return f"'{self.prompt}' (seed {self.seed}) drawn {self.drawn}, the fp32 reference {self.reference}"


@dataclass(frozen=True)
class CaptionCheck:
    checked: int  # pictures whose fp32 reference shows its caption: the ones judged
    total: int  # pictures whose prompt is a caption of the presets
    lost: tuple[Lost, ...] = ()
    unjudged: str = ""  # why nothing was judged, when the call itself rules it out

    @property
    def failed(self) -> bool:
        return bool(self.lost)

    @property
    def judged(self) -> bool:
        return self.checked > 0

    def describe(self) -> str:
        if self.unjudged:
            return f"not judged: {self.unjudged}"
        if not self.judged:
            return f"not judged: the fp32 reference shows none of its {self.total} captioned pictures' captions"
        unread = (
            f" ({self.total - self.checked} the fp32 reference misses, not judged)" if self.total > self.checked else ""
        )
        if not self.lost:
            return f"{self.checked} of {self.checked} pictures show their caption, as the fp32 reference does{unread}"
        lost = "; ".join(item.describe() for item in self.lost[:3])
        more = f"; and {len(self.lost) - 3} more" if len(self.lost) > 3 else ""
        return f"lost the caption in {len(self.lost)} of {self.checked} pictures: {lost}{more}{unread}"


def _what(found: dict[str, Any]) -> str:
    """What a picture shows, in the caption's words; the shape's size when it is no shape's."""
    text = f"{found['colour'] or 'no shape'} on {found['background']}"
    if found["colour"] and not 0.02 <= found["area"] <= 0.5:
        text += f" (the shape covers {found['area']:.0%} of the picture)"
    return text


def too_few_steps(steps: int | None, preset_steps: int | None) -> str:
    """Why a call can't be judged: fewer denoising steps than the preset's own, at which its pictures
    are half drawn (at 2 steps the fp32 reference shows 22 of tiny-sd's 60 captioned pictures, and the
    bundled tiny VAE loses 9 of those where at 8 steps it loses none); "" when it can."""
    if steps is None or preset_steps is None or steps >= preset_steps:
        return ""
    return f"the presets draw their captions at {preset_steps} steps or more; this call takes {steps}"


def check(prompts: Sequence[str], seeded: Sequence[tuple[int, Any, Any]]) -> CaptionCheck | None:
    """Judge (seed, technique images, reference images) of each fidelity seed; images NxHxWx3 in [0, 1],
    the same number per prompt, in prompt order (diffusers' ``num_images_per_prompt``). None when no
    prompt is a caption of the presets (nothing to judge: the gate is not shown)."""
    samples = [tiny.parse_caption(prompt) for prompt in prompts]
    if not any(samples):
        return None
    checked = total = 0
    lost: list[Lost] = []
    for seed, images, reference in seeded:
        if len(images) % len(prompts):
            continue  # images that can't be matched to their prompts
        per_prompt = len(images) // len(prompts)
        for index, (image, ref) in enumerate(zip(images, reference, strict=True)):
            sample = samples[index // per_prompt]
            if sample is None:
                continue
            total += 1
            then = tiny.read_picture(ref)
            if not tiny.shows(then, sample):
                continue
            checked += 1
            now = tiny.read_picture(image)
            if not tiny.shows(now, sample):
                lost.append(Lost(prompts[index // per_prompt], seed, _what(now), _what(then)))
    return CaptionCheck(checked=checked, total=total, lost=tuple(lost))
