"""Shared fixtures for the self-tests.

Inner pytest sessions run through ``pytester`` in-process (torch is imported once) with few
rounds, so that each real pipeline session costs seconds. Loaded pipelines are shared across
the whole test session.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread, in this process and in the processes it starts (set before torch is imported): the inner
# sessions time tiny pipelines, where a second thread gains little, and on a CPU shared with other jobs two
# spinning threads stall each other: a 2-step tiny-sd call took 4.2 s with 2 threads and 45 ms with 1 on
# this project's 2-core machine under a load of 2-4.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent

# Fast inner runs: 6 timed rounds (the least that can reach p < 0.01 against 6), one warm-up, 2 denoising
# steps (the preset's 8 cost 3x as much) and one fidelity seed. A test whose subject is the steps or the seeds
# names its own: the last occurrence of an option wins.
FAST = [
    "--diffaccel-rounds=6", "--diffaccel-max-rounds=6", "--diffaccel-warmup=1", "--diffaccel-steps=2",
    "--diffaccel-fidelity-seeds=1", "-p", "no:cacheprovider",
]  # fmt: skip


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


@pytest.fixture(scope="session")
def _recordings() -> dict[tuple[str, tuple[str, ...]], Path]:
    return {}


@pytest.fixture
def recorded(request: pytest.FixtureRequest, pytester: pytest.Pytester, tmp_path_factory, tmp_path, _recordings):
    """``recorded(*args) -> Path``: a baseline folder recorded by one fast inner run of ``args`` with
    ``--diffaccel-save=all`` (asserted green), copied into this test's ``tmp_path / "b"``. The recording
    is made once per test module and arguments, by the first test that asks: the tests of a module share
    one inner project (their conftest and test file), so its recording is theirs too."""

    def record(*args: str) -> Path:
        key = (request.module.__name__, args)
        source = _recordings.get(key)
        if source is None:
            source = tmp_path_factory.mktemp("recorded") / "b"
            save = (f"--diffaccel-baselines={source}", "--diffaccel-save=all")
            result = pytester.runpytest_inprocess(*FAST, *args, *save)
            assert result.ret == 0, result.stdout.str()
            _recordings[key] = source
        target = tmp_path / "b"
        shutil.copytree(source, target)
        return target

    return record
