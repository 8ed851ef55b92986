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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .models import tiny


class _Picture(NamedTuple):
    prompt: str
    sample: tiny.Sample
    seed: int
    image: Any
    reference: Any


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


# An SSIM floor at or below this accepts any picture that is not broken: the technique is judged there as
# a code path (vae-tiling on the presets, whose 32 px tiles redraw a 64 px picture), its meaning too.
CODE_PATH_FLOOR = 0.10


def code_path_only(floors: Mapping[str, float]) -> str:
    """Why a technique with these parts (name -> its SSIM floor on this model) can't be judged by its
    captions: a part whose floor accepts any picture that is not broken; "" when none is."""
    named = [f"{name} (SSIM floor {floor:g})" for name, floor in floors.items() if floor <= CODE_PATH_FLOOR]
    if not named:
        return ""
    return f"{', '.join(named)}: a code-path check on this model, whose floor accepts any picture that is not broken"


def _captioned(
    prompts: Sequence[str], samples: Sequence[tiny.Sample | None], seeded: Sequence[tuple[int, Any, Any]]
) -> Iterator[_Picture]:
    """Each picture whose prompt is a caption of the presets (``samples``: each prompt's parse), with its
    reference and seed."""
    for seed, images, reference in seeded:
        if len(images) % len(prompts):
            continue  # images that can't be matched to their prompts
        per_prompt = len(images) // len(prompts)
        for index, (image, ref) in enumerate(zip(images, reference, strict=True)):
            sample = samples[index // per_prompt]
            if sample is not None:
                yield _Picture(prompts[index // per_prompt], sample, seed, image, ref)


def check(prompts: Sequence[str], seeded: Sequence[tuple[int, Any, Any]], unjudged: str = "") -> CaptionCheck | None:
    """Judge (seed, technique images, reference images) of each fidelity seed; images NxHxWx3 in [0, 1],
    the same number per prompt, in prompt order (diffusers' ``num_images_per_prompt``). None when no
    prompt is a caption of the presets (nothing to judge: the gate is not shown). ``unjudged``: why the
    call can't be judged (``too_few_steps``, ``code_path_only``); then no picture is read."""
    samples = [tiny.parse_caption(prompt) for prompt in prompts]
    if not any(samples):
        return None
    pictures = list(_captioned(prompts, samples, seeded))
    if unjudged:
        return CaptionCheck(0, len(pictures), unjudged=unjudged)
    checked = 0
    lost: list[Lost] = []
    for picture in pictures:
        then = tiny.read_picture(picture.reference)
        if not tiny.shows(then, picture.sample):
            continue
        checked += 1
        now = tiny.read_picture(picture.image)
        if not tiny.shows(now, picture.sample):
            lost.append(Lost(picture.prompt, picture.seed, _what(now), _what(then)))
    return CaptionCheck(checked=checked, total=len(pictures), lost=tuple(lost))
