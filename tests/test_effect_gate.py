"""A technique that silently does nothing fails "not applied", end to end: a fused QKV whose
fusion is a no-op, and a cache that is never installed (diffusers #12012: a cache that did nothing)."""

from __future__ import annotations

import json

import pytest

NO_OP = """
import os

import diffusers


def pytest_configure(config):
    if os.environ.get("DIFFACCEL_TEST_NO_OP") == "fuse":  # the pipeline's call returns, nothing fused
        diffusers.StableDiffusionPipeline.fuse_qkv_projections = lambda self, *args, **kwargs: None
    if os.environ.get("DIFFACCEL_TEST_NO_OP") == "cache":
        diffusers.FluxTransformer2DModel.enable_cache = lambda self, config: None
"""


@pytest.fixture
def project(user_suite: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    import diffusers

    for cls in (diffusers.StableDiffusionPipeline, diffusers.FluxTransformer2DModel):
        for name in ("fuse_qkv_projections", "enable_cache"):
            if hasattr(cls, name):
                monkeypatch.setattr(cls, name, getattr(cls, name))  # restored after the inner run's patch
    user_suite.makeconftest(NO_OP)
    return user_suite


def test_a_fusion_that_does_nothing_fails_not_applied(project, run_inner, monkeypatch, tmp_path):
    run_inner("--diffaccel-techniques", "fuse-qkv").assert_outcomes(passed=1)
    monkeypatch.setenv("DIFFACCEL_TEST_NO_OP", "fuse")
    report = tmp_path / "r.json"
    result = run_inner("--diffaccel-techniques", "fuse-qkv", f"--diffaccel-json={report}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*not applied gate failed: fuse-qkv: attention modules fused: unet 0/*, vae 0/*"])
    (bench,) = json.loads(report.read_text())["benchmarks"]
    assert bench["extra_info"]["effect"].startswith("NOT APPLIED fuse-qkv: attention modules fused: unet 0/")


def test_a_cache_that_is_never_installed_fails_not_applied(project, run_inner, monkeypatch):
    monkeypatch.setenv("DIFFACCEL_TEST_NO_OP", "cache")
    result = run_inner("--diffaccel-model=tiny-flux", "--diffaccel-techniques", "cache-first-block")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*not applied gate failed: cache-first-block: no * hook registered on the transformer*"]
    )
