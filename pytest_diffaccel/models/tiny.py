"""The bundled tiny presets: their architecture, their tokenizer and their procedural world.

The tiny pipelines are small enough to run a full generation in a fraction of a second on
two CPU cores, and they carry weights trained by ``scripts/train_tiny.py`` on a procedural
data set of coloured shapes, so that the text decides the picture and a fidelity gate can
see a broken denoiser. Everything here is deterministic and builds offline.

torch, diffusers and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 50, 170),
    "orange": (250, 140, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "cyan": (60, 200, 210),
    "brown": (120, 75, 40),
}
IMAGE_SIZE = 64
TEXT_LENGTH = 16  # tokens, <|startoftext|> and <|endoftext|> included

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def caption(shape: str, colour: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def parse_caption(text: str) -> Sample | None:
    """The Sample a prompt names when it is a caption of the data set ("a red circle on a white
    background", any case and spacing), else None. Centre and radius: a typical picture's."""
    words = text.lower().split()
    if len(words) != 7 or words[0] != "a" or words[3:5] != ["on", "a"] or words[6] != "background":
        return None
    colour, shape, background = words[1], words[2], words[5]
    if colour not in COLOURS or shape not in SHAPES or background not in BACKGROUNDS:
        return None
    return Sample(shape, colour, background, (IMAGE_SIZE / 2, IMAGE_SIZE / 2), 15.5)


def caption_words() -> list[str]:
    words = ["a", "on", "background", *SHAPES, *COLOURS, *BACKGROUNDS]
    return sorted(set(words))


# ----------------------------------------------------------------------------- tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode map (the GPT-2 scheme)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def tokenizer_files() -> tuple[dict[str, int], list[str]]:
    """A CLIP BPE vocabulary: every byte (alone and word-final) plus one token per caption word.

    Merges build each word from its left end, longest words first, so every caption word
    becomes exactly one token and any other text still tokenizes, byte by byte.
    """
    base = list(_bytes_to_unicode().values())
    vocab_list: list[str] = base + [b + "</w>" for b in base]
    seen: set[str] = set(vocab_list)
    unique: list[str] = []
    for word in sorted(caption_words(), key=lambda w: (-len(w), w)):
        pieces = [*word[:-1], word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merged = current + piece
            line = f"{current} {piece}"
            if line not in unique:
                unique.append(line)
            if merged not in seen:
                seen.add(merged)
                vocab_list.append(merged)
            current = merged
    vocab_list += [BOS, EOS]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    return vocab, unique


def write_tokenizer_vocab(folder: Path) -> None:
    """vocab.json and merges.txt: what a slow CLIPTokenizer reads (transformers 4.x; 5.x also reads tokenizer.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tokenizer_files()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, sort_keys=True))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def write_tokenizer(folder: Path) -> None:
    write_tokenizer_vocab(folder)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": TEXT_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


# ----------------------------------------------------------------------------- architecture


def text_encoder_config(vocab_size: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": TEXT_LENGTH,
        "projection_dim": 64,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
        "hidden_act": "quick_gelu",
    }


def unet_config() -> dict[str, Any]:
    return {
        "sample_size": IMAGE_SIZE // 4,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 64,
        "attention_head_dim": 8,
        "norm_num_groups": 16,
    }


def vae_config() -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * 3,
        "up_block_types": ("UpDecoderBlock2D",) * 3,
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 16,
        "sample_size": IMAGE_SIZE,
    }


def tiny_vae_config(scaling_factor: float) -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "encoder_block_out_channels": (32, 32, 32),
        "decoder_block_out_channels": (32, 32, 32),
        "num_encoder_blocks": (1, 1, 1),
        "num_decoder_blocks": (1, 1, 1),
        "latent_channels": 4,
        "scaling_factor": scaling_factor,
    }


def scheduler_config() -> dict[str, Any]:
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "timestep_spacing": "trailing",
        "steps_offset": 1,
    }


# ----------------------------------------------------------------------------- procedural world


@dataclass(frozen=True)
class Sample:
    shape: str
    colour: str
    background: str
    centre: tuple[float, float]
    radius: float

    @property
    def caption(self) -> str:
        return caption(self.shape, self.colour, self.background)


def samples(count: int, seed: int) -> Iterator[Sample]:
    import numpy as np

    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    backgrounds = list(BACKGROUNDS)
    for _ in range(count):
        radius = float(rng.uniform(11, 20))
        yield Sample(
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            colour=colours[int(rng.integers(len(colours)))],
            background=backgrounds[int(rng.integers(len(backgrounds)))],
            centre=(
                float(rng.uniform(radius + 2, IMAGE_SIZE - radius - 2)),
                float(rng.uniform(radius + 2, IMAGE_SIZE - radius - 2)),
            ),
            radius=radius,
        )


def render(sample: Sample) -> Any:
    """Render one sample as a float32 HxWx3 array in [0, 1]."""
    import numpy as np

    size = IMAGE_SIZE
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cy, cx = sample.centre
    r = sample.radius
    if sample.shape == "circle":
        mask = (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r
    elif sample.shape == "square":
        half = r * 0.85
        mask = (np.abs(ys - cy) <= half) & (np.abs(xs - cx) <= half)
    elif sample.shape == "triangle":
        top, bottom = cy - r, cy + r * 0.8
        rel = (ys - top) / (bottom - top)
        mask = (rel >= 0) & (rel <= 1) & (np.abs(xs - cx) <= rel * r)
    else:
        raise ValueError(f"unknown shape {sample.shape!r}")
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = np.array(BACKGROUNDS[sample.background], dtype=np.float32) / 255.0
    image[mask] = np.array(COLOURS[sample.colour], dtype=np.float32) / 255.0
    return image


def dataset(count: int, seed: int) -> tuple[Any, list[str]]:
    """(N, 3, H, W) float32 images in [-1, 1] and their captions."""
    import numpy as np

    items = list(samples(count, seed))
    images = np.stack([render(s) for s in items]).transpose(0, 3, 1, 2) * 2.0 - 1.0
    return images.astype(np.float32), [s.caption for s in items]


DEFAULT_PROMPTS: Sequence[str] = (
    caption("circle", "red", "white"),
    caption("triangle", "blue", "gray"),
)


# ----------------------------------------------------------------------------- tiny-sdxl and tiny-flux

SDXL_TIME_IDS = (IMAGE_SIZE, IMAGE_SIZE, 0, 0, IMAGE_SIZE, IMAGE_SIZE)  # original size, crop, target size
T5_LENGTH = 32  # tokens of the T5 prompt in tiny-flux (the call passes max_sequence_length)


def sdxl_unet_config(text_hidden: int = 64, pooled: int = 64) -> dict[str, Any]:
    """SDXL's UNet shape in miniature: two text encoders side by side, text_time conditioning,
    linear projections, attention heads 8 wide."""
    return {
        "sample_size": IMAGE_SIZE // 4,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "transformer_layers_per_block": (1, 1),
        "attention_head_dim": (4, 8),
        "cross_attention_dim": 2 * text_hidden,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 8 * len(SDXL_TIME_IDS) + pooled,
        "norm_num_groups": 16,
    }


def flux_transformer_config(text_hidden: int = 64, pooled: int = 64) -> dict[str, Any]:
    """Flux's double- and single-stream transformer in miniature (a diffusers CacheMixin)."""
    return {
        "patch_size": 1,
        "in_channels": 16,  # 4 latent channels packed 2x2
        "num_layers": 2,
        "num_single_layers": 2,
        "attention_head_dim": 16,
        "num_attention_heads": 4,
        "joint_attention_dim": text_hidden,
        "pooled_projection_dim": pooled,
        "guidance_embeds": False,
        "axes_dims_rope": (4, 6, 6),
    }


def t5_config(vocab_size: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "d_model": 64,
        "d_kv": 16,
        "d_ff": 128,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
        "dropout_rate": 0.0,
        "feed_forward_proj": "gated-gelu",
        "is_encoder_decoder": False,
        "pad_token_id": 0,
        "eos_token_id": 1,
    }


def t5_vocab() -> list[tuple[str, float]]:
    """A Unigram vocabulary: the caption words whole, and single characters for anything else."""
    import string

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + word, -1.0) for word in caption_words()]
    vocab += [("\u2581", -5.0)] + [(ch, -8.0) for ch in string.ascii_lowercase + string.digits + ",.!?'-"]
    return vocab


def flow_scheduler_config() -> dict[str, Any]:
    return {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}


# ----------------------------------------------------------------------------- does the picture show the caption?

PALETTE: dict[str, tuple[int, int, int]] = {**COLOURS, **BACKGROUNDS}
BORDER = 4  # px: the frame read as the background (training shapes keep 2 px clear of the edge)


def caption_samples(all_shapes: bool = False) -> list[Sample]:
    """The captions of the training set's colour x background combinations, one Sample each.

    One shape per combination, cycling through SHAPES in the order of ``itertools.product(COLOURS,
    BACKGROUNDS)``, so each shape is drawn 10 times and each background with every shape; with
    ``all_shapes``, every shape of every combination (90 captions). Centre and radius are those of
    a typical training picture; the scorer reads neither."""
    import itertools

    chosen: list[Sample] = []
    for index, (colour, background) in enumerate(itertools.product(COLOURS, BACKGROUNDS)):
        for shape in SHAPES if all_shapes else (SHAPES[index % len(SHAPES)],):
            chosen.append(Sample(shape, colour, background, (IMAGE_SIZE / 2, IMAGE_SIZE / 2), 15.5))
    return chosen


def nearest_colour(rgb: Any) -> str:
    """The PALETTE entry (shape colours and backgrounds together) nearest in RGB to ``rgb`` in [0, 1]."""
    import numpy as np

    rgb = np.asarray(rgb, dtype=np.float64) * 255.0
    return min(PALETTE, key=lambda name: float(((np.asarray(PALETTE[name]) - rgb) ** 2).sum()))


def read_picture(image: Any) -> dict[str, Any]:
    """What a 64x64 picture shows: its background colour (median of the outer BORDER px), the shape's
    colour (median of the pixels that differ most from the background: at least half the 99th
    percentile of the difference, and at least 0.1), the shape's area (fraction of the picture) and
    a guess at its outline from how much of its bounding box it fills (square 1.0, circle 0.79,
    triangle 0.5). ``image``: HxWx3 in [0, 1]."""
    import numpy as np

    image = np.asarray(image, dtype=np.float64)
    frame = np.ones(image.shape[:2], dtype=bool)
    frame[BORDER:-BORDER, BORDER:-BORDER] = False
    background = np.median(image[frame], axis=0)
    distance = np.sqrt(((image - background) ** 2).sum(axis=-1))
    mask = distance >= max(0.1, 0.5 * float(np.percentile(distance, 99)))
    found: dict[str, Any] = {
        "background": nearest_colour(background),
        "background_rgb": tuple(round(float(c) * 255) for c in background),
        "colour": None,
        "colour_rgb": None,
        "area": float(mask.mean()),
        "shape": None,
    }
    if mask.any():
        colour = np.median(image[mask], axis=0)
        ys, xs = np.nonzero(mask)
        fill = mask.sum() / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
        found.update(
            colour=nearest_colour(colour),
            colour_rgb=tuple(round(float(c) * 255) for c in colour),
            shape="triangle" if fill < 0.64 else "circle" if fill < 0.9 else "square",
        )
    return found


def caption_score(images: Any, chosen: Sequence[Sample], shapes: bool = False) -> tuple[int, int, list[dict[str, Any]]]:
    """How many pictures show their caption: (right, total, one dict per picture).

    A picture is right when its background and its shape's colour are each nearest (in RGB, among
    shape colours and backgrounds together) to the named ones, and the shape covers 2-50% of the
    picture (a shape, not a speck or a second background); with ``shapes``, its outline must also
    be read as the named shape. ``images``: NxHxWx3 in [0, 1] (``measure.to_numpy_images``), in the
    order of ``chosen`` (``caption_samples()``)."""
    details = []
    for image, sample in zip(images, chosen, strict=True):
        found = read_picture(image)
        details.append({"caption": sample.caption, "right": shows(found, sample, shapes), **found})
    return sum(d["right"] for d in details), len(details), details


def shows(found: dict[str, Any], sample: Sample, shapes: bool = False) -> bool:
    """Whether a picture read by ``read_picture`` shows ``sample``'s caption (see ``caption_score``)."""
    return (
        found["background"] == sample.background
        and found["colour"] == sample.colour
        and 0.02 <= found["area"] <= 0.5
        and (not shapes or found["shape"] == sample.shape)
    )
