"""The reference and every technique start from the same noise, whatever torch's RNG does per dtype.

torch 2.11 and older draw another stream for float16/bfloat16 than for float32 on the CPU (this is
what made bf16/fp16 on tiny-sd score SSIM 0.25/0.16 on the H200 with torch 2.11). torch 2.13,
installed here, draws the same stream, so the tests bring the old behaviour back: they make
half-precision draws come from the float64 stream, which differs from float32's for 16 values
and more on every torch (pytorch issue #79703).
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from pytest_diffaccel.noise import float32_draw, float32_noise, noise_modules

REDUCED = (torch.float16, torch.bfloat16)


def randn_of_old_torch(real):
    """``real`` (torch.randn), drawing float16/bfloat16 from another stream than float32, as torch 2.11 did."""

    def randn(*args, dtype=None, **kwargs):
        if dtype in (torch.float16, torch.bfloat16):
            return real(*args, dtype=torch.float64, **kwargs).to(dtype)
        return real(*args, dtype=dtype, **kwargs)

    return randn


# the inner session's conftest: the same function, installed for the whole inner session
OLD_TORCH = f"""
import pytest
import torch

{inspect.getsource(randn_of_old_torch)}

@pytest.fixture(scope="session", autouse=True)
def half_precision_noise_of_old_torch():
    real = torch.randn
    torch.randn = randn_of_old_torch(real)
    yield
    torch.randn = real
"""


@pytest.fixture
def old_torch_randn(monkeypatch):
    monkeypatch.setattr(torch, "randn", randn_of_old_torch(torch.randn))


def initial_latents(pipe, dtype):
    generator = torch.Generator("cpu").manual_seed(0)
    return pipe.prepare_latents(2, 4, 64, 64, dtype, "cpu", generator).float()


def test_half_precision_starts_from_the_fp32_noise(tiny_sd, old_torch_randn):
    pipe = tiny_sd.base()
    fp32 = initial_latents(pipe, torch.float32)
    for dtype in REDUCED:
        drifted = initial_latents(pipe, dtype)
        assert (drifted - fp32).abs().max() > 1.0  # the emulated old torch: another picture
        with float32_noise(pipe):
            same = initial_latents(pipe, dtype)
        # the same draw, rounded to dtype (twice: the draw, then init_noise_sigma's multiplication)
        torch.testing.assert_close(same, fp32, rtol=2 * torch.finfo(dtype).eps, atol=0)
    # restored after the block
    assert (initial_latents(pipe, torch.bfloat16) - fp32).abs().max() > 1.0


def test_the_patch_reaches_the_pipeline_and_the_scheduler_modules_only(tiny_sd):
    import diffusers.utils.torch_utils as torch_utils

    pipe = tiny_sd.base()
    names = {module.__name__ for module in noise_modules(pipe, pipe.scheduler)}
    assert "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion" in names
    assert "diffusers.schedulers.scheduling_euler_discrete" in names
    originals = {module: module.randn_tensor for module in noise_modules(pipe, pipe.scheduler)}
    shared = torch_utils.randn_tensor
    with float32_noise(pipe):
        assert all(module.randn_tensor is not original for module, original in originals.items())
        assert torch_utils.randn_tensor is shared  # diffusers' own definition is left alone
    assert all(module.randn_tensor is original for module, original in originals.items())


def test_float32_draw_keeps_other_dtypes_and_positional_arguments():
    calls = []

    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        calls.append(dtype)
        return torch.zeros(shape, dtype=dtype)

    draw = float32_draw(randn_tensor)
    assert draw((2,), None, "cpu", torch.bfloat16).dtype == torch.bfloat16
    assert draw((2,), dtype=torch.float32).dtype == torch.float32
    assert draw((2,)).dtype == torch.float32  # no dtype: torch's default, untouched
    assert calls == [torch.float32, torch.float32, None]
    assert float32_draw(draw) is draw  # never wrapped twice


def test_float64_starts_from_the_fp32_noise():
    """torch draws float64 from another stream than float32 (on every version): with the patch, a
    float64 draw is the float32 draw, cast."""
    from diffusers.utils.torch_utils import randn_tensor

    def draw(fn, dtype):
        return fn((4, 8), generator=torch.Generator().manual_seed(3), dtype=dtype)

    plain = draw(randn_tensor, torch.float64)
    assert not torch.equal(plain.float(), draw(randn_tensor, torch.float32))  # why the patch is needed
    patched = draw(float32_draw(randn_tensor), torch.float64)
    assert patched.dtype == torch.float64 and torch.equal(patched, draw(randn_tensor, torch.float32).double())


def test_half_precision_passes_the_fidelity_gate_under_old_torch_noise(user_suite, run_inner):
    user_suite.makeconftest(OLD_TORCH)
    result = run_inner("--diffaccel-techniques=fp32,bf16,fp16", "--diffaccel-json=report.json")
    result.assert_outcomes(passed=3)
    report = json.loads((user_suite.path / "report.json").read_text())
    ssim = {entry["extra_info"]["technique"]: entry["extra_info"]["ssim"] for entry in report["benchmarks"]}
    assert ssim["bf16"] > 0.95 and ssim["fp16"] > 0.99, ssim  # 0.25 and 0.16 without float32_noise
