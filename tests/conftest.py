"""Shared fixtures for the self-tests.

Inner pytest sessions run through ``pytester`` in-process (torch is imported once) with few
rounds, so that each real pipeline session costs seconds. Loaded pipelines are shared across
the whole test session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent

# Fast inner runs: 6 timed rounds (the least that can reach p < 0.01 against 6), one warm-up.
FAST = ["--diffaccel-rounds", "6", "--diffaccel-max-rounds", "6", "--diffaccel-warmup", "1", "-p", "no:cacheprovider"]


@pytest.fixture(scope="session", autouse=True)
def _preload_heavy_modules():
    """Import what inner sessions use, once, in the outer process.

    ``pytester.runpytest_inprocess`` drops the modules an inner run imported; re-importing torch's
    C extensions in the next run fails ("bad call flags"). Modules loaded here are kept.
    """
    import importlib

    for name in (
        "torch", "torch._dynamo", "torch._inductor.config", "torch.nn.attention", "numpy", "scipy.stats",
        "skimage.metrics", "diffusers", "diffusers.hooks", "transformers", "torchao", "torchao.quantization",
        "pytest_benchmark.stats", "pytest_benchmark.plugin", "pytest_benchmark.utils", "pytest_diffaccel.session",
    ):  # fmt: skip
        importlib.import_module(name)
    import diffusers
    import transformers

    for attr in ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "FluxPipeline", "AutoencoderKL",
                 "AutoencoderTiny", "UNet2DConditionModel", "EulerDiscreteScheduler", "DDIMScheduler",
                 "FlowMatchEulerDiscreteScheduler", "FluxTransformer2DModel"):  # fmt: skip
        getattr(diffusers, attr, None)
    for attr in ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer", "T5EncoderModel", "T5TokenizerFast"):
        getattr(transformers, attr, None)
    import torch

    from pytest_diffaccel.models import model_info
    from pytest_diffaccel.models.loading import ModelSource

    pipe = ModelSource(model_info("tiny-sd")).fresh("cpu")
    with torch.inference_mode():
        pipe(
            prompt=["a red circle on a white background"], num_inference_steps=1, height=64, width=64, output_type="pt"
        )


@pytest.fixture(scope="session")
def tiny_sd():
    """The bundled tiny-sd pipeline, loaded once (fp32, CPU). Tests must deep-copy before changing it."""
    from pytest_diffaccel.models import model_info
    from pytest_diffaccel.models.loading import ModelSource

    return ModelSource(model_info("tiny-sd"))


USER_TEST = """
def test_acceleration(diffaccel_pipeline, diffaccel_benchmark):
    diffaccel_benchmark(diffaccel_pipeline)
"""


@pytest.fixture
def user_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """An inner project holding the two-line suite a user writes (test_speed.py)."""
    pytester.makepyfile(test_speed=USER_TEST)
    return pytester


@pytest.fixture
def untimed() -> str:
    """The timing gates reported, not judged: for inner runs about something else (fidelity, wiring,
    a search's recipe) whose outcome must not hang on the machine's load of the moment (a busy shared
    CPU moved fp32's absolute time 2.6x and a cold start 4.6x against a one-run history)."""
    return "--diffaccel-report-only=latency,compile-time,cold-start,memory"


@pytest.fixture
def run_inner(pytester: pytest.Pytester):
    """Run an inner pytest session in-process with the fast settings; returns the RunResult."""

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_inprocess(*FAST, *args)

    return run
