"""Techniques applied to the tiny preset: the ones the CPU can't run are checked for the calls they
make (the library call recorded instead of made), the others for what they change."""

from __future__ import annotations

import pytest
import torch

from pytest_diffaccel.config import Settings
from pytest_diffaccel.models import PRESETS
from pytest_diffaccel.techniques import ApplyContext, builtin_registry, quantization


@pytest.fixture(scope="module")
def registry():
    return builtin_registry()


@pytest.fixture
def pipe(tiny_sd):
    return tiny_sd.fresh("cpu")


def apply(registry, pipe, text, device="cpu"):
    spec = registry.parse(text)
    ctx = ApplyContext(device=device, argument=None, model=PRESETS["tiny-sd"], settings=Settings(), spec=spec)
    for part in spec.ordered:
        ctx.argument = part.argument
        pipe = part.technique.run(pipe, ctx)
    return pipe, ctx


def record(monkeypatch, owner, name):
    calls = []
    monkeypatch.setattr(owner, name, lambda *args, **kwargs: calls.append((args, kwargs)), raising=False)
    return calls


@pytest.mark.parametrize(
    ("technique", "method", "kwargs"),
    [
        ("model-offload", "enable_model_cpu_offload", {"device": "cuda"}),
        ("sequential-offload", "enable_sequential_cpu_offload", {"device": "cuda"}),
        ("xformers", "enable_xformers_memory_efficient_attention", {}),
    ],
)
def test_pipeline_level_techniques_call_diffusers(registry, pipe, monkeypatch, technique, method, kwargs):
    calls = record(monkeypatch, pipe, method)
    apply(registry, pipe, technique, device="cuda")
    assert calls == [((), kwargs)]


@pytest.mark.parametrize(
    ("technique", "config", "min_features"),
    [
        ("int4-weight-only", "Int4WeightOnlyConfig", 16),
        ("float8-dynamic", "Float8DynamicActivationFloat8WeightConfig", 128),
        ("float8-weight-only", "Float8WeightOnlyConfig", 128),
        ("int8-dynamic", "Int8DynamicActivationInt8WeightConfig", 16),
    ],
)
def test_quantization_calls_torchao_with_its_config_and_filter(
    registry, pipe, monkeypatch, technique, config, min_features
):
    import torchao.quantization

    calls = []
    monkeypatch.setattr(
        torchao.quantization, "quantize_", lambda model, cfg, filter_fn: calls.append((model, cfg, filter_fn))
    )
    apply(registry, pipe, technique)
    # the denoiser, and the VAE where it has a layer wide enough (tiny-sd's VAE has none of 128)
    expected = [pipe.unet] if min_features > 64 else [pipe.unet, pipe.vae]
    assert [model for model, _, _ in calls] == expected
    assert {type(cfg).__name__ for _, cfg, _ in calls} == {config}
    keep = calls[0][2]
    assert keep(torch.nn.Linear(min_features, min_features)) and not keep(torch.nn.Linear(8, 64))
    assert not keep(torch.nn.Conv2d(64, 64, 1))
    assert keep(torch.nn.Linear(64, 64)) == (min_features <= 64)


def test_float8_filter_keeps_only_wide_layers():
    keep = quantization.filter_for("Float8DynamicActivationFloat8WeightConfig")
    assert (
        keep(torch.nn.Linear(1280, 640)) and not keep(torch.nn.Linear(64, 64)) and not keep(torch.nn.Linear(136, 256))
    )


@pytest.mark.parametrize(
    ("technique", "kwargs"),
    [
        ("compile", {"fullgraph": True}),
        ("compile-max-autotune", {"fullgraph": True, "mode": "max-autotune"}),
        ("compile-reduce-overhead", {"fullgraph": True, "mode": "reduce-overhead"}),
    ],
)
def test_compile_modes(registry, pipe, monkeypatch, technique, kwargs):
    calls = record(monkeypatch, pipe.unet, "compile")
    _, ctx = apply(registry, pipe, technique)
    assert calls == [((), kwargs)]
    if technique == "compile-max-autotune":
        import torch._inductor.config as inductor

        (factory,) = ctx.call_contexts
        with factory():
            assert inductor.conv_1x1_as_mm and inductor.coordinate_descent_tuning and not inductor.epilogue_fusion
        assert not inductor.conv_1x1_as_mm  # restored


def tf32_state() -> tuple[object, object]:
    """TF32 for matmuls and convolutions, through torch's current API (2.9+) or the older flags."""
    matmul = torch.backends.cuda.matmul
    try:
        return matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    except AttributeError:  # torch < 2.9: "Unknown attribute fp32_precision"
        return matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_tf32_is_a_call_context_that_restores(registry, pipe):
    _, ctx = apply(registry, pipe, "tf32", device="cuda")
    before = tf32_state()
    (factory,) = ctx.call_contexts
    with factory():
        assert tf32_state() in (("tf32", "tf32"), (True, True))
    assert tf32_state() == before


@pytest.mark.parametrize("technique", ["sdpa-efficient", "sdpa-cudnn"])
def test_cuda_only_attention_backends_constrain_the_denoiser(registry, pipe, technique):
    pipe, _ = apply(registry, pipe, technique)
    latents = torch.randn(1, 4, 16, 16)
    text = torch.randn(1, 16, 64)
    with pytest.raises(RuntimeError, match=r"No (available kernel|viable backend)"), torch.inference_mode():
        pipe.unet(latents, 10, text)  # the constraint is live; on CUDA it picks that kernel


def test_fp16_keeps_a_force_upcast_vae_in_fp32(registry, pipe):
    pipe, ctx = apply(registry, pipe, "fp16")
    assert pipe.unet.dtype == torch.float16 and pipe.vae.dtype == torch.float32
    assert "VAE kept in fp32 (force_upcast)" in ctx.notes


def test_fuse_qkv_fuses_unet_and_vae(registry, pipe):
    pipe, _ = apply(registry, pipe, "fuse-qkv")
    assert pipe.fusing_unet and pipe.fusing_vae


def test_vae_tiling_uses_tiles_small_enough_for_the_tiny_preset(registry, pipe):
    pipe, _ = apply(registry, pipe, "vae-tiling")
    assert pipe.vae.use_tiling and pipe.vae.tile_sample_min_size == 32 and pipe.vae.tile_latent_min_size == 8


def test_tiny_vae_needs_a_repository_for_a_real_model(registry, pipe):
    import dataclasses

    spec = registry.parse("tiny-vae")
    model = dataclasses.replace(PRESETS["tiny-sd"], tiny_vae=None)
    ctx = ApplyContext(device="cpu", argument=None, model=model, settings=Settings(), spec=spec)
    with pytest.raises(ValueError, match="tiny-vae=madebyollin/taesdxl"):
        spec.parts[0].technique.run(pipe, ctx)


def test_caching_refuses_a_unet(registry, pipe):
    with pytest.raises(ValueError, match="not a diffusers CacheMixin"):
        apply(registry, pipe, "cache-first-block")
