"""End to end through pytester: real pytest sessions on the bundled tiny-sd, each gate failing
when it should and passing when it should, with injected faults made as techniques."""

from __future__ import annotations

import json

import pytest

FAULTS = """
import torch


def pytest_diffaccel_register_techniques(register):
    @register("nan-image")
    def nan_image(pipe):
        with torch.no_grad():
            pipe.vae.decoder.conv_out.weight.fill_(float("nan"))
        return pipe

    @register("black-image")
    def black_image(pipe):
        decode = pipe.vae.decode

        def black(latents, *args, **kwargs):
            out = decode(latents, *args, **kwargs)
            (out[0] if isinstance(out, tuple) else out.sample).fill_(-1.0)
            return out

        pipe.vae.decode = black
        return pipe

    @register("noisy-unet", min_ssim=0.93)
    def noisy_unet(pipe):
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in pipe.unet.parameters():
                rms = p.pow(2).mean().sqrt()
                p.add_(torch.randn(p.shape, generator=generator) * rms * 0.2)
        return pipe
"""


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.fixture
def project(user_suite: pytest.Pytester) -> pytest.Pytester:
    user_suite.makeconftest(FAULTS)
    return user_suite


def test_clean_technique_passes_and_prints_the_table(project, run_inner):
    result = run_inner("--diffaccel-techniques", "fp32,sdpa-math")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "diffaccel: device=cpu model=tiny-sd techniques=fp32,sdpa-math*",
            "*= diffaccel =*",
            "technique*median*speed-up vs fp32*vs baseline*SSIM*peak memory*verdict",
            "fp32 *x*no baseline*1.0000*iB*pass (no baseline)",
            "sdpa-math *x*no baseline*iB*pass (no baseline)",
        ]
    )


@pytest.mark.parametrize(("technique", "reason"), [("nan-image", "NaN"), ("black-image", "constant")])
def test_broken_image_fails_the_broken_gate(project, run_inner, technique, reason):
    result = run_inner("--diffaccel-techniques", technique)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*broken gate failed: broken image: *{reason}*", f"{technique} *FAIL broken*"])


def test_perturbed_unet_fails_the_fidelity_gate(project, run_inner):
    result = run_inner("--diffaccel-techniques", "noisy-unet")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*fidelity gate failed: SSIM 0.* vs the fp32 reference is below the threshold 0.9300*"]
    )


def test_marker_overrides_the_threshold_and_selects_techniques(project, run_inner):
    project.makepyfile(
        test_marker="""
import pytest

@pytest.mark.diffaccel(techniques="noisy-unet", min_ssim=0.0)
def test_lenient(diffaccel_pipeline, diffaccel_benchmark):
    result = diffaccel_benchmark(diffaccel_pipeline)
    assert result.ssim < 0.93
"""
    )
    result = run_inner("test_marker.py", "--diffaccel-min-ssim", "0.99")
    result.assert_outcomes(passed=1)


def test_save_missing_keeps_existing_entries(project, run_inner, recorded):
    folder = recorded("--diffaccel-techniques", "fp32")  # recorded once for the module (conftest.recorded)
    path = next(folder.glob("*.json"))
    before = json.loads(path.read_text())["entries"]
    result = run_inner(
        "--diffaccel-techniques", "fp32,sdpa-math", f"--diffaccel-baselines={folder}", "--diffaccel-save", "missing"
    )
    result.stdout.fnmatch_lines(["baselines: 1 written to *, 1 kept (--diffaccel-save missing)"])
    after = json.loads(path.read_text())["entries"]
    key = "test_speed.py::test_acceleration[fp32]"
    assert after[key] == before[key]
    assert "test_speed.py::test_acceleration[sdpa-math]" in after


def test_failed_fidelity_is_not_saved_as_a_baseline(project, run_inner, tmp_path):
    folder = tmp_path / "b"
    run_inner("--diffaccel-techniques", "noisy-unet,fp32", f"--diffaccel-baselines={folder}", "--diffaccel-save", "all")
    entries = json.loads(next(folder.glob("*.json")).read_text())["entries"]
    assert list(entries) == ["test_speed.py::test_acceleration[fp32]"]


def test_cuda_only_technique_is_skipped_with_its_reason(project, run_inner):
    result = run_inner("--diffaccel-techniques", "sdpa-efficient,tf32", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*sdpa-efficient: needs CUDA (run with --diffaccel-gpu on a GPU machine)*"])


# ----------------------------------------------------------------------------- bad input: exit 4, clear message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--diffaccel-techniques", "bf16,warp-drive"), "*unknown technique 'warp-drive'*known: *bf16*fp16*"),
        (("--diffaccel-techniques", "fp16+bf16"), "*'fp16' and 'bf16' can't be combined*"),
        (("--diffaccel-min-ssim", "high"), "*--diffaccel-min-ssim: 'high' is not a number*"),
        (("--diffaccel-min-ssim", "1.5"), "*outside [[]0, 1[]]*"),
        (("--diffaccel-max-slowdown", "lots"), "*--diffaccel-max-slowdown: 'lots' is not a percentage*"),
        (("--diffaccel-size", "64"), "*--diffaccel-size: '64' is not a size; write HEIGHTxWIDTH*"),
        (("--diffaccel-model", "./no/such/model"), "*--diffaccel-model './no/such/model': no such folder*"),
        pytest.param(
            ("--diffaccel-gpu",),
            "*--diffaccel-gpu: CUDA is not available on this machine*",
            marks=pytest.mark.skipif(_cuda_available(), reason="this machine has CUDA: --diffaccel-gpu is valid here"),
            id="gpu-without-cuda",
        ),
    ],
)
def test_bad_input_is_a_usage_error(project, run_inner, args, message):
    result = run_inner(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_model_folder_that_is_not_diffusers(project, run_inner, tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    result = run_inner("--diffaccel-model", str(tmp_path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is not a diffusers folder (no model_index.json)*"])


def test_model_the_libraries_cannot_load_stops_the_run(project, run_inner, tmp_path, tiny_sd):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(tiny_sd.info.path, folder)
    (folder / "unet" / "config.json").write_text("{ not json")
    result = run_inner(f"--diffaccel-model={folder}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--diffaccel-model '{folder}' could not be loaded: *(diffusers *, transformers *)"])
    assert "Traceback" not in result.stderr.str()


def test_marker_with_a_bad_value(project, run_inner):
    project.makepyfile(
        test_bad_marker="""
import pytest

@pytest.mark.diffaccel(techniques="fp32", max_slowdown="a lot")
def test_it(diffaccel_pipeline, diffaccel_benchmark):
    diffaccel_benchmark(diffaccel_pipeline)
"""
    )
    result = run_inner("test_bad_marker.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_bad_marker.py::test_it: *max_slowdown=...*'a lot' is not a percentage*"])


def test_corrupt_baseline_is_named_and_left_unchanged(project, run_inner, recorded):
    folder = recorded("--diffaccel-techniques", "fp32")
    path = next(folder.glob("*.json"))
    path.write_text(path.read_text()[:-40])  # truncated, as a bad merge would leave it
    before = path.read_bytes()
    result = run_inner("--diffaccel-techniques", "fp32", f"--diffaccel-baselines={folder}", "--diffaccel-save", "all")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*baseline file {path}: not valid JSON*left unchanged*"])
    assert path.read_bytes() == before


def test_unrelated_suite_imports_no_torch(pytester: pytest.Pytester):
    pytester.makepyfile(test_plain="def test_one():\n    import sys\n    assert 'torch' not in sys.modules\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
