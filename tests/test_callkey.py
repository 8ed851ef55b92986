"""The call key: the arguments a test gives diffaccel_benchmark described by value, the same in every process
(#30 item 7: a repr holding a memory address changed every run, and the test was never judged)."""

from __future__ import annotations

import enum

import numpy as np
import pytest

from pytest_diffaccel import callkey
from pytest_diffaccel.measure import Call


def on_step_end(pipe, step, timestep, kwargs):  # a user's callback, as diffusers calls it
    return kwargs


class Mode(enum.Enum):
    FAST = 1


def test_the_same_picture_in_another_object_gives_the_same_key_and_one_pixel_another():
    from PIL import Image

    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    first, second = Image.fromarray(pixels), Image.fromarray(pixels.copy())
    assert repr(first) != repr(second)  # what keyed the call before: an address, new every process
    base = Call(prompts=("a",))
    assert base.with_extra({"image": first}).key() == base.with_extra({"image": second}).key()
    pixels[3, 3, 0] = 1
    assert base.with_extra({"image": Image.fromarray(pixels)}).key() != base.with_extra({"image": first}).key()
    assert "PIL.Image(RGB, 8x8, sha256 " in callkey.describe("image", first)


def test_arrays_tensors_generators_callables_and_enums_are_described_by_value():
    import torch

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert callkey.describe("a", array) == callkey.describe("a", array.copy())
    assert callkey.describe("a", array) != callkey.describe("a", array + 1)
    tensor = torch.ones(2, 2, dtype=torch.bfloat16)
    assert callkey.describe("t", tensor) == callkey.describe("t", tensor.clone())
    assert callkey.describe("t", tensor).startswith("Tensor(torch.bfloat16, (2, 2), sha256 ")
    assert callkey.describe("g", torch.Generator().manual_seed(7)) == "Generator(cpu, seed 7)"
    assert callkey.describe("cb", on_step_end) == f"{__name__}.on_step_end"
    assert callkey.describe("m", Mode.FAST) == "Mode.FAST"
    nested = {"b": [1, 2.5, None], "a": ("x", True)}
    assert callkey.describe("n", nested) == "{'a': ('x', True), 'b': [1, 2.5, None]}"
    # plain values keep the repr the stored histories were keyed by: no history starts anew
    assert Call(prompts=("a",)).with_extra({"eta": 0.5}).extra == (("eta", "0.5"),)


def test_an_argument_with_no_stable_description_is_an_error_naming_it():
    class Opaque:
        pass

    with pytest.raises(callkey.UnstableArgument, match=r"argument 'helper' of diffaccel_benchmark \(.*Opaque\)"):
        Call(prompts=("a",)).with_extra({"helper": Opaque()})


def test_steps_and_size_left_to_the_pipeline_are_its_defaults_in_the_key():
    """A local diffusers folder has no steps or size of the plugin's own: the key holds what the pipeline runs
    (the default of its __call__ and its sample size times the VAE's scale), not None, which a diffusers release
    that changed a default would have left the same (#30 item 7)."""
    import inspect

    import diffusers

    from pytest_diffaccel.config import Settings
    from pytest_diffaccel.models import PRESETS, model_info
    from pytest_diffaccel.session import DiffaccelSession
    from pytest_diffaccel.techniques import builtin_registry

    folder = str(PRESETS["tiny-sd"].path)
    assert (model_info(folder).steps, model_info(folder).size) == (None, None)
    settings = Settings(model=folder, prompt=("a red circle on a white background",))
    session = DiffaccelSession(settings, builtin_registry())
    call = session.call_for(settings)
    default = inspect.signature(diffusers.StableDiffusionPipeline.__call__).parameters["num_inference_steps"].default
    pipe = session.source().base()
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert call.steps == default == 50
    assert call.size == (side, side) == PRESETS["tiny-sd"].size  # the 64x64 the preset was trained at
    assert call.describe()["steps"] == 50 and None not in call.describe()["size"]
    # what the user sets stays theirs; a report of a session that loaded nothing leaves them as given
    assert session.call_for(Settings(model=folder, steps=3)).steps == 3
    assert DiffaccelSession(settings, builtin_registry()).call_for(settings, resolve=False).steps is None


CALLBACK_TEST = """
def on_step_end(pipe, step, timestep, kwargs):
    return kwargs


def test_with_a_callback(diffaccel_pipeline, diffaccel_benchmark):
    diffaccel_benchmark(diffaccel_pipeline, callback_on_step_end=on_step_end)
"""


def test_a_test_calling_with_a_callback_is_judged_against_its_history_in_the_next_process(pytester, tmp_path, untimed):
    """Each run a process of its own, as CI's are: the callback's address differs between them, its name does
    not (the key by repr said 'baseline recorded for another call' on every run after the first)."""
    from conftest import FAST

    pytester.makepyfile(test_callback=CALLBACK_TEST)
    args = (*FAST, "--diffaccel-techniques=fp32", f"--diffaccel-baselines={tmp_path / 'b'}", untimed)
    pytester.runpytest_subprocess(*args, "--diffaccel-save=all").assert_outcomes(passed=1)
    second = pytester.runpytest_subprocess(*args)
    second.assert_outcomes(passed=1)
    assert "another call" not in second.stdout.str()
    second.stdout.fnmatch_lines(["fp32 * 1 run, catches *pass", "latency: 1 tests judged against their run history*"])
