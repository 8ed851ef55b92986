"""The bundled tiny-sd: its trained weights make the fidelity gate see a broken denoiser.

Acceptance numbers of the core issue, measured on the shipped weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from pytest_diffaccel import fidelity, floors
from pytest_diffaccel.measure import to_numpy_images
from pytest_diffaccel.models import PRESETS, model_info, tiny
from pytest_diffaccel.models.loading import ModelSource
from pytest_diffaccel.noise import float32_noise
from pytest_diffaccel.techniques.precision import LOSSLESS_SSIM, REDUCED_PRECISION_SSIM
from pytest_diffaccel.techniques.structure import TINY_VAE_SSIM

ROOT = Path(__file__).resolve().parent.parent

PROMPTS = list(PRESETS["tiny-sd"].prompts)
MARGIN = 0.3  # "below the default threshold by a wide margin"


def generate(pipe, prompts=PROMPTS, guidance=5.0):
    with torch.inference_mode(), float32_noise(pipe):  # the same noise in bf16 on any torch
        out = pipe(
            prompt=list(prompts),
            num_inference_steps=PRESETS["tiny-sd"].steps,
            guidance_scale=guidance,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )
    return to_numpy_images(out)


@pytest.fixture(scope="module")
def reference(tiny_sd):
    return generate(tiny_sd.fresh("cpu"))


def test_loaded_through_from_pretrained_from_the_bundled_folder(tiny_sd):
    from diffusers import StableDiffusionPipeline

    pipe = tiny_sd.base()
    assert isinstance(pipe, StableDiffusionPipeline)
    assert (PRESETS["tiny-sd"].path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"


def test_tokenizer_is_our_own_and_knows_every_caption_word(tiny_sd):
    tokenizer = tiny_sd.base().tokenizer
    for word in tiny.caption_words():
        assert len(tokenizer(word).input_ids) == 3, word  # <start> word <end>


def test_same_seed_gives_identical_images(tiny_sd, reference):
    assert np.array_equal(generate(tiny_sd.fresh("cpu")), reference)


def test_different_prompts_give_different_pictures(reference):
    assert fidelity.ssim_image(reference[0], reference[1]) < 0.8


def test_zeroed_unet_output_is_far_below_the_threshold(tiny_sd, reference):
    pipe = tiny_sd.fresh("cpu")
    forward = pipe.unet.forward

    def zero(*args, **kwargs):
        out = forward(*args, **kwargs)
        (out[0] if isinstance(out, tuple) else out.sample).zero_()
        return out

    pipe.unet.forward = zero
    assert fidelity.compare(generate(pipe), reference).ssim < LOSSLESS_SSIM - MARGIN


# tiny-sd's own floor for bf16/fp16 (benchmarks/fidelity_floors.py), the threshold a session on it applies
REDUCED_FLOOR = floors.floor(floors.REDUCED, "tiny-sd") or REDUCED_PRECISION_SSIM


@pytest.mark.parametrize(("strength", "below"), [(0.20, LOSSLESS_SSIM - MARGIN), (0.05, REDUCED_FLOOR)])
def test_unet_weight_noise_is_seen(tiny_sd, reference, strength, below):
    pipe = tiny_sd.fresh("cpu")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * p.pow(2).mean().sqrt() * strength)
    assert fidelity.compare(generate(pipe), reference).ssim < below


def test_bf16_stays_above_its_threshold(tiny_sd, reference):
    pipe = tiny_sd.fresh("cpu", "bfloat16")
    assert fidelity.compare(generate(pipe), reference).ssim >= REDUCED_FLOOR


def test_ignored_guidance_is_seen(tiny_sd, reference):
    assert fidelity.compare(generate(tiny_sd.fresh("cpu"), guidance=1.0), reference).ssim < REDUCED_PRECISION_SSIM


def test_bundled_tiny_vae_is_faithful_but_not_identical(tiny_sd, reference):
    from diffusers import AutoencoderTiny

    pipe = tiny_sd.fresh("cpu")
    pipe.vae = AutoencoderTiny.from_pretrained(str(PRESETS["tiny-sd"].tiny_vae))
    score = fidelity.compare(generate(pipe), reference).ssim
    assert TINY_VAE_SSIM <= score < 0.999


def test_base_pipeline_is_never_modified(tiny_sd):
    before = {k: v.clone() for k, v in tiny_sd.base().unet.state_dict().items()}
    pipe = tiny_sd.fresh("cpu", "bfloat16")
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.zero_()
    after = tiny_sd.base().unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert tiny_sd.base().unet.dtype == torch.float32


@pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) < 5,
    reason="scripts/train_tiny.py builds its T5 tokenizer with transformers 5 (the presets it writes load on 4.x)",
)
def test_training_script_still_runs(tmp_path):
    out = tmp_path / "presets"
    subprocess.run(
        # one thread, as every torch of this suite (tests/conftest.py): the script's default 2 makes reruns
        # bit-identical, which this test does not compare
        [sys.executable, str(ROOT / "scripts" / "train_tiny.py"), "--quick", "--threads", "1", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    from diffusers import AutoencoderTiny, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out / "tiny-sd", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    images = generate(pipe)
    assert images.shape == (2, 64, 64, 3) and np.isfinite(images).all()
    assert AutoencoderTiny.from_pretrained(out / "tiny-vae").config.latent_channels == 4
    assert (out / "TRAINING.json").is_file()
    # portable to transformers 4.x: prefixed CLIP tensor names, vocabulary files, the fast T5 name
    from safetensors import safe_open

    for preset, encoders, tokenizers in (
        ("tiny-sd", ["text_encoder"], ["tokenizer"]),
        ("tiny-sdxl", ["text_encoder"], ["tokenizer", "tokenizer_2"]),  # text_encoder_2: with projection
        ("tiny-flux", ["text_encoder"], ["tokenizer"]),
    ):
        for encoder in encoders:
            with safe_open(out / preset / encoder / "model.safetensors", "pt") as saved:
                names = saved.keys()
            assert all(name.startswith("text_model.") for name in names), (preset, encoder)
        for tokenizer in tokenizers:
            assert {"vocab.json", "merges.txt"} <= {p.name for p in (out / preset / tokenizer).iterdir()}
    index = json.loads((out / "tiny-flux" / "model_index.json").read_text())
    assert index["tokenizer_2"] == ["transformers", "T5TokenizerFast"]
    # --score-only: each preset's caption score per seed, added to TRAINING.json beside what was there
    trained = json.loads((out / "TRAINING.json").read_text())
    scorer = [sys.executable, str(ROOT / "scripts" / "train_tiny.py"), "--score-only", "--score-seeds=0,5"]
    subprocess.run(
        [*scorer, "--threads=1", f"--out={out}"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    scored = json.loads((out / "TRAINING.json").read_text())
    assert {k: scored[k] for k in trained} == trained
    by_preset = scored["caption_score_seeds"]
    assert set(by_preset) == {"tiny-sd", "tiny-sdxl", "tiny-flux"}
    assert all(set(by_seed) == {"0", "5"} for by_seed in by_preset.values())
    assert all(score.endswith("/30") for by_seed in by_preset.values() for score in by_seed.values())


def test_a_preset_component_not_loaded_as_saved_is_an_error(tiny_sd, tmp_path):
    """transformers 4.x read transformers 5's CLIP files as unknown names and initialised the text
    encoder at random, with a warning only: the loader compares the values and refuses."""
    import shutil

    from transformers import CLIPTextConfig, CLIPTextModel

    from pytest_diffaccel.models import ModelError
    from pytest_diffaccel.models.loading import check_loaded_as_saved, not_loaded_as_saved

    pipe = tiny_sd.base()
    folder = tiny_sd.info.path
    wrong, count = not_loaded_as_saved(pipe.text_encoder, [folder / "text_encoder" / "model.safetensors"])
    assert wrong == [] and count == 36
    random_encoder = CLIPTextModel(CLIPTextConfig(**pipe.text_encoder.config.to_dict()))
    wrong, count = not_loaded_as_saved(random_encoder, [folder / "text_encoder" / "model.safetensors"])
    assert len(wrong) >= count - 1  # every tensor but perhaps a constant one

    copy = tmp_path / "tiny-sd"
    shutil.copytree(folder, copy)
    broken = type(pipe)(**{**pipe.components, "text_encoder": random_encoder})
    with pytest.raises(ModelError, match=r"'tiny-sd': text_encoder was not loaded as saved \(\d+ of 36 tensors differ"):
        check_loaded_as_saved(broken, copy, "tiny-sd")
    check_loaded_as_saved(pipe, copy, "tiny-sd")  # the real one passes


def test_caption_score_reads_rendered_pictures():
    """The scorer on the data set's own pictures: every caption right, shapes included; a picture
    of another caption is wrong."""
    chosen = tiny.caption_samples()
    assert len(chosen) == len(tiny.COLOURS) * len(tiny.BACKGROUNDS) == 30
    assert {s.shape for s in chosen} == set(tiny.SHAPES) and len({s.caption for s in chosen}) == 30
    pictures = np.stack([tiny.render(s) for s in chosen])
    assert tiny.caption_score(pictures, chosen, shapes=True)[:2] == (30, 30)
    drawn = list(tiny.samples(300, seed=7))
    assert tiny.caption_score(np.stack([tiny.render(s) for s in drawn]), drawn, shapes=True)[:2] == (300, 300)
    right, total, details = tiny.caption_score(pictures[::-1], chosen)
    assert right == 0 and total == 30 and not any(d["right"] for d in details)
    flat = np.broadcast_to(np.array(tiny.BACKGROUNDS["white"]) / 255.0, pictures.shape)
    assert tiny.caption_score(flat, chosen)[0] == 0  # no shape, no right answer


def training_script() -> Any:
    """scripts/train_tiny.py as a module: its digest and its caption scorer are the ones the tests use."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_tiny", ROOT / "scripts" / "train_tiny.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_committed_weights_are_the_ones_the_training_run_recorded():
    """Each bundled preset's weights hash to the digest TRAINING.json records for them (the training
    script's own digest: tensor names, dtypes, shapes, bytes), and, where a full rerun from a clean
    state confirmed them, to that rerun's: a weight file changed or swapped by hand fails here."""
    script = training_script()
    presets = ROOT / "pytest_diffaccel" / "models" / "presets"
    info = json.loads((presets / "TRAINING.json").read_text())
    found = {p.name: script.digest(p) for p in sorted(presets.iterdir()) if p.is_dir()}
    assert found == info["sha256_16"]
    if "confirmed" in info:
        assert info["confirmed"]["sha256_16"] == info["sha256_16"], info["confirmed"]


CAPTION_GOAL = 27  # of the 30 captions, at the preset's default call and seed 0 (issue #22)


def committed_caption_score(name: str) -> int:
    """What the training run measured on the committed weights (TRAINING.json, seed 0)."""
    info = json.loads((ROOT / "pytest_diffaccel" / "models" / "presets" / "TRAINING.json").read_text())
    return int(info["caption_score"][name].split("/")[0])


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sdxl", "tiny-flux"])
def test_the_pictures_show_their_captions(tiny_sd, name):
    """Each bundled preset draws what its caption says: for each colour x background of the data set
    (one shape each), at the preset's default call, the background and the shape's colour are the
    named ones, in 27 of 30 pictures or more, and in no fewer than the training run measured less
    one (another CPU's kernels may tip one borderline picture), so that a loader, scheduler or noise
    change cannot make them worse unnoticed. A text encoder that is not read scores about 1 in 30."""
    info = model_info(name)
    pipe = (tiny_sd if name == "tiny-sd" else ModelSource(info)).fresh("cpu")
    right, total, details = training_script().score_captions(pipe, info, seed=0)
    wrong = [f"{d['caption']}: {d['colour']} on {d['background']} ({d['area']:.2f})" for d in details if not d["right"]]
    floor = max(CAPTION_GOAL, committed_caption_score(name) - 1)
    assert right >= floor, f"{name}: {right}/{total} right, fewer than {floor}; wrong: {wrong}"


def test_dataset_is_deterministic_and_captioned():
    a, captions = tiny.dataset(8, seed=5)
    b, again = tiny.dataset(8, seed=5)
    assert np.array_equal(a, b) and captions == again
    assert a.shape == (8, 3, 64, 64) and a.min() >= -1 and a.max() <= 1
    assert all(c.startswith("a ") and c.endswith(" background") for c in captions)
