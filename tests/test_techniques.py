"""Techniques applied to the tiny preset: the ones the CPU can't run are checked for the calls they
make (the library call recorded instead of made, and named so), the others for what they change,
run for real (full-model compile included, 1 step)."""

from __future__ import annotations

import contextlib
import re

import pytest
import torch

from pytest_diffaccel.config import Settings
from pytest_diffaccel.models import PRESETS
from pytest_diffaccel.techniques import ApplyContext, builtin_registry, quantization
from pytest_diffaccel.techniques.effects import Probe, check_effects


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


def probe(pipe, ctx, steps=1):
    """One real call of the tiny preset (its two prompts, 64x64) under the technique's call contexts."""
    info = PRESETS["tiny-sd"]

    def run():
        with contextlib.ExitStack() as stack:
            for factory in ctx.call_contexts:
                stack.enter_context(factory())
            return pipe(
                prompt=list(info.prompts), num_inference_steps=steps, height=64, width=64, output_type="pt",
                generator=torch.Generator("cpu").manual_seed(0),
            )  # fmt: skip

    return Probe(ctx=ctx, run_call=run, device="cpu")


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
def test_exact_library_call_on_cuda_recorded_not_made(registry, pipe, monkeypatch, technique, method, kwargs):
    """The call each makes with --diffaccel-gpu, recorded: no CUDA here, and no xFormers. Offloading
    also runs for real with the CPU as execution device (below, and in test_effects.py)."""
    calls = record(monkeypatch, pipe, method)
    apply(registry, pipe, technique, device="cuda")
    assert calls == [((), kwargs)]


def test_model_offload_runs_for_real_on_the_cpu(registry, pipe, tiny_sd):
    """accelerate takes the CPU as execution device: the hooks are installed and a call runs through them."""
    pipe, ctx = apply(registry, pipe, "model-offload")
    assert {type(getattr(m, "_hf_hook", None)).__name__ for m in (pipe.text_encoder, pipe.unet, pipe.vae)} == {
        "CpuOffload"
    }
    effect = registry.techniques["model-offload"].check(pipe, probe(pipe, ctx))
    assert effect.applied, effect.line
    assert re.match(r"^CpuOffload hooks on vae, text_encoder, unet; [1-9]\d* onloads to cpu", effect.line), effect.line
    plain = tiny_sd.fresh("cpu")
    effect = registry.techniques["model-offload"].check(plain, probe(plain, ctx))
    assert not effect.applied and effect.line == "no accelerate CpuOffload hook on any model of the pipeline"


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


def test_compile_reduce_overhead_exact_call_recorded_not_made(registry, pipe, monkeypatch):
    """CUDA graphs need CUDA: the compile call is recorded (its effect check is compile's, run below)."""
    calls = record(monkeypatch, pipe.unet, "compile")
    apply(registry, pipe, "compile-reduce-overhead")
    assert calls == [((), {"fullgraph": True, "mode": "reduce-overhead"})]


def test_max_autotune_inductor_flags_hold_only_during_the_call(registry, pipe, monkeypatch):
    calls = record(monkeypatch, pipe.unet, "compile")  # the flags, not the compile (run for real below)
    _, ctx = apply(registry, pipe, "compile-max-autotune")
    assert calls == [((), {"fullgraph": True, "mode": "max-autotune"})]
    import torch._inductor.config as inductor

    (factory,) = ctx.call_contexts
    with factory():
        assert inductor.conv_1x1_as_mm and inductor.coordinate_descent_tuning and not inductor.epilogue_fusion
    assert not inductor.conv_1x1_as_mm  # restored


COMPILED = (
    r"^{what} compiled 1/1; [1-9]\d* graphs? compiled since apply, 0 graph breaks; compiled code ran inside it 1 time"
)


@pytest.mark.parametrize("text", ["compile+compile-vae", "compile-max-autotune"])
def test_compile_really_compiles_tiny_sd(tiny_sd, text):
    """A real torch.compile (fullgraph) of the UNet, and of the VAE decode, on the CPU: one warm-up call
    compiles, then each part's effect check proves it: compiled, graphs counted by dynamo since apply,
    no graph break, compiled code running inside the module during one call."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from pytest_diffaccel.session import DiffaccelSession

    settings = Settings(steps=1)
    session = DiffaccelSession(settings, builtin_registry())
    spec = session.registry.parse(text)
    pipe, ctx = session.apply(spec, settings)
    compiled = probe(pipe, ctx)
    try:
        with torch.inference_mode():
            compiled.run_call()  # the warm-up: dynamo and inductor compile here
        effects = dict(check_effects(spec, pipe, compiled))
        assert re.match(COMPILED.format(what="denoiser"), effects[spec.parts[0].label].line), effects
        if "compile-vae" in effects:
            assert re.match(COMPILED.format(what="VAE decode"), effects["compile-vae"].line), effects
        assert all(e.applied for e in effects.values()), effects
        if text != "compile+compile-vae":
            return

        def eagerly():
            with torch.compiler.set_stance("force_eager"):
                return compiled.run_call()

        # the same pipeline, its calls running eagerly: compiled but not applied
        (_, effect), _ = check_effects(spec, pipe, Probe(ctx, eagerly, "cpu"))
        assert not effect.applied
        assert effect.line.endswith("no compiled code ran inside it in one call (it runs eagerly)")
        counters["graph_break"]["a graph break for the test"] += 1
        try:
            (_, effect), _ = check_effects(spec, pipe, compiled)
        finally:
            del counters["graph_break"]["a graph break for the test"]
        assert not effect.applied and effect.line.endswith("1 graph break (graph breaks: part of it runs eagerly)")
    finally:
        torch._dynamo.reset()


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
    """The fused projections themselves (to_qkv, to_kv for cross-attention), and their use in a call."""
    pipe, ctx = apply(registry, pipe, "fuse-qkv")
    for model in (pipe.unet, pipe.vae):
        attention = [m for m in model.modules() if hasattr(m, "fuse_projections")]
        fused = [getattr(m, "to_kv" if m.is_cross_attention else "to_qkv", None) for m in attention]
        assert attention and all(isinstance(layer, torch.nn.Linear) for layer in fused)
    effect = registry.techniques["fuse-qkv"].check(pipe, probe(pipe, ctx))
    assert effect.applied and re.search(r"fused projections ran [1-9]\d* times in one call$", effect.line)


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
