"""Model presets and the technique list: full-size architectures (on the meta device), the tiny
SDXL and Flux presets running their matrices, caching on a transformer, skip reasons."""

from __future__ import annotations

import json

import pytest

from pytest_diffaccel.models import PRESETS, ModelError, arch, model_info


@pytest.mark.parametrize(
    ("name", "parameters"),
    [("sd15", 859_520_964), ("sdxl", 2_567_463_684), ("flux", 11_901_408_320)],
)
def test_full_size_architectures_match_the_published_configs(name, parameters):
    assert arch.denoiser_parameters(name) == parameters


def test_arch_presets_are_labelled_random_weights():
    for name in ("sd15-arch", "sdxl-arch", "flux-arch"):
        info = model_info(name)
        assert info.random_weights and info.label.endswith("(random weights)")


def test_missing_bundled_weights_say_how_to_get_them(monkeypatch, tmp_path):
    import dataclasses

    monkeypatch.setitem(PRESETS, "tiny-sd", dataclasses.replace(PRESETS["tiny-sd"], path=tmp_path / "none"))
    with pytest.raises(ModelError, match=r"train_tiny\.py"):
        model_info("tiny-sd")


def test_list_techniques(pytester: pytest.Pytester):
    result = pytester.runpytest_inprocess("--diffaccel-list-techniques", "-p", "no:cacheprovider")
    assert result.ret == 0
    text = result.stdout.str()
    from pytest_diffaccel.techniques import builtin_registry

    for name in builtin_registry().known():
        assert name in text, name
    result.stdout.fnmatch_lines(
        [
            "diffaccel techniques on cpu with model tiny-sd (unet denoiser)",
            "*sdpa-efficient*",
            "*needs CUDA*can't run here: needs CUDA*",
            "*cache-pab*",
            "*can't run here: applies to transformer pipelines; this model's denoiser is a unet*",
            "*diffusion-fast*= bf16+sdpa-flash+fuse-qkv+channels-last+int8-dynamic+compile-max-autotune+compile-vae*",
        ]
    )


def cache_configs() -> dict[str, str]:
    """Each caching technique and the diffusers.hooks config it needs, as the registry declares them."""
    from pytest_diffaccel.techniques import builtin_registry

    techniques = builtin_registry().techniques
    return {name: t.requires.attribute[1] for name, t in techniques.items() if name.startswith("cache-")}


def missing_caches(techniques: str) -> list[str]:
    """The caching techniques the installed diffusers lacks (MagCache and TaylorSeer came after 0.35)."""
    import diffusers.hooks

    configs = cache_configs()
    return [t for t in techniques.split(",") if t in configs and not hasattr(diffusers.hooks, configs[t])]


def test_list_techniques_for_a_transformer_model(pytester: pytest.Pytester):
    result = pytester.runpytest_inprocess("--diffaccel-list-techniques", "--diffaccel-model=tiny-flux")
    assert result.ret == 0
    lines = [line for line in result.stdout.lines if "needs transformer pipelines" in line]
    configs = cache_configs()
    missing = missing_caches(",".join(configs))
    assert len(lines) == len(configs) >= 7  # the diffusers hooks caches: 5, then SeaCache and the text K/V cache
    for name, config in configs.items():
        (line,) = [line for line in lines if f"diffusers.hooks.{config}" in line]
        if name in missing:
            assert f"can't run here: needs diffusers.hooks.{config}, which the installed version does not have" in line
        else:
            assert "can run here" in line, line
    assert any("channels-last" in line for line in result.stdout.lines)


@pytest.mark.parametrize(
    ("model", "techniques", "passed", "skipped"),
    [
        ("tiny-sdxl", "fp32,bf16,fuse-qkv,sdpa-math,tiny-vae,channels-last,cache-pab", 6, 1),
        ("tiny-flux", "fp32,bf16,fuse-qkv,sdpa-math,tiny-vae,cache-first-block,cache-taylorseer,channels-last", 7, 1),
    ],
)
def test_tiny_presets_run_their_matrices(user_suite, run_inner, model, techniques, passed, skipped, tmp_path):
    report = tmp_path / "r.json"
    result = run_inner(
        f"--diffaccel-model={model}", f"--diffaccel-techniques={techniques}", "-rs", f"--diffaccel-json={report}",
        *preset_steps(model, techniques),
    )  # fmt: skip
    missing = len(missing_caches(techniques))  # skipped with their reason on an older diffusers
    result.assert_outcomes(passed=passed - missing, skipped=skipped + missing)
    result.stdout.fnmatch_lines([f"model {model} on cpu*", "technique*verdict"])
    assert_effects_reported(report, passed - missing)


def preset_steps(model: str, techniques: str) -> tuple[str, ...]:
    """The preset's own steps where a cache runs (transformer presets): a cache reuses its computations across
    steps, and its effect check wants some reused (the self-tests' inner runs take 2 steps otherwise)."""
    caches = [name for name in techniques.split(",") if name in cache_configs()]
    if caches and PRESETS[model].family == "transformer":
        return (f"--diffaccel-steps={PRESETS[model].steps}",)
    return ()


def assert_effects_reported(report, count: int) -> None:
    """Each built-in technique's effect line is in the JSON report, checked and applied."""
    benchmarks = json.loads(report.read_text())["benchmarks"]
    assert len(benchmarks) == count
    for bench in benchmarks:
        extra = bench["extra_info"]
        assert extra["effects"] and all(e["checked"] and e["applied"] for e in extra["effects"]), extra["technique"]
        assert extra["effect"] and "not checked" not in extra["effect"], extra["technique"]


def test_caching_runs_for_real_on_the_transformer_preset(user_suite, run_inner, tmp_path):
    """Each cache passes every gate on tiny-flux, its effect check included: a cache that runs but
    never reuses anything is no pass."""
    techniques = "cache-pab,cache-faster,cache-mag"
    report = tmp_path / "r.json"
    result = run_inner(
        "--diffaccel-model=tiny-flux", f"--diffaccel-techniques={techniques}", "-rs", f"--diffaccel-json={report}",
        *preset_steps("tiny-flux", techniques),
    )  # fmt: skip
    missing = missing_caches(techniques)  # skipped with their reason on an older diffusers
    result.assert_outcomes(passed=3 - len(missing), skipped=len(missing))
    result.stdout.fnmatch_lines([f"{name} *pass*" for name in techniques.split(",") if name not in missing])
    assert_effects_reported(report, 3 - len(missing))


CPU_TECHNIQUES = (
    "fp16,sdpa-flash,attention-slicing,int8-dynamic,int8-weight-only,vae-slicing,vae-tiling,"
    "group-offload-block,group-offload-leaf,layerwise-fp8,compile-regional"
)


def test_every_cpu_technique_runs_for_real_on_tiny_sd(user_suite, run_inner, tmp_path):
    """The rest of the CPU-runnable techniques (the others run in the tests above and in
    tests/test_gates.py); full-model compile runs, 1 step, in tests/test_techniques.py."""
    report = tmp_path / "r.json"
    result = run_inner(
        f"--diffaccel-techniques={CPU_TECHNIQUES}", "--diffaccel-rounds=3", "--diffaccel-max-rounds=3",
        f"--diffaccel-json={report}",
    )  # fmt: skip
    result.assert_outcomes(passed=len(CPU_TECHNIQUES.split(",")))
    result.stdout.fnmatch_lines(["int8-dynamic *pass*", "layerwise-fp8 *pass*", "compile-regional *pass*"])
    assert_effects_reported(report, len(CPU_TECHNIQUES.split(",")))
