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
