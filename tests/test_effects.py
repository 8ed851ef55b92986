"""Each technique proves it took effect: applied for real to tiny-sd or tiny-flux, its effect check
observes the real thing (applied=True, a meaningful line); made to do nothing, or to do something
that has no effect (a fusion not used, a cache that never hits, a compile that runs eagerly), the
check says "not applied" with a one-line reason. CUDA-only techniques: their checks run against
fakes on the CPU (named as such)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import types

import pytest
import torch

from pytest_diffaccel.config import Settings
from pytest_diffaccel.session import DiffaccelSession
from pytest_diffaccel.techniques import ApplyContext, Effect, Part, Spec, builtin_registry
from pytest_diffaccel.techniques.effects import Probe, check_effects


class Harness:
    """A session on one tiny preset: applies specs as the plugin does and builds probe calls."""

    def __init__(self, model: str, steps: int) -> None:
        self.registry = builtin_registry()
        self.settings = Settings(model=model, steps=steps)
        self.session = DiffaccelSession(self.settings, self.registry)
        self.call = self.session.call_for(self.settings)

    def apply(self, spec: Spec | str):
        spec = self.registry.parse(spec) if isinstance(spec, str) else spec
        pipe, ctx = self.session.apply(spec, self.settings)
        return spec, pipe, ctx

    def probe(self, pipe, ctx, prompts: tuple[str, ...] | None = None) -> Probe:
        kwargs = self.call.kwargs()
        if prompts is not None:
            kwargs["prompt"] = list(prompts)

        def run():
            with contextlib.ExitStack() as stack:
                for factory in ctx.call_contexts:
                    stack.enter_context(factory())
                return pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0), output_type="pt")

        return Probe(ctx=ctx, run_call=run, device="cpu")

    def effect(self, spec: Spec | str, **probe_kwargs) -> Effect:
        spec, pipe, ctx = self.apply(spec)
        probe = self.probe(pipe, ctx, **probe_kwargs)
        try:
            if spec.compiles:
                with torch.inference_mode():
                    probe.run_call()  # the warm-up compiles, as in the plugin's measurement
            ((_, effect),) = check_effects(spec, pipe, probe)
        finally:
            if spec.compiles:
                torch._dynamo.reset()
        return effect

    def doing_nothing(self, text: str, dtype: str | None = None) -> Spec:
        """The spec with each part's apply replaced by one that returns the pipeline unchanged (and
        no precision of its own: the pipeline stays in ``dtype``, fp32 by default)."""
        parts = tuple(
            Part(dataclasses.replace(p.technique, apply=lambda pipe: pipe, dtype=dtype), p.argument)
            for p in self.registry.parse(text).parts
        )
        return Spec(name=text, parts=parts)


@pytest.fixture(scope="module")
def sd() -> Harness:
    return Harness("tiny-sd", steps=1)


@pytest.fixture(scope="module")
def flux() -> Harness:
    return Harness("tiny-flux", steps=8)  # the preset's steps: MagCache and TaylorSeer scale to them


N = r"[1-9]\d*"  # a count that is not 0

APPLIED_ON_TINY_SD = {
    "fp32": r"^parameters float32: vae, text_encoder, unet$",
    "bf16": r"^parameters bfloat16: vae, text_encoder, unet$",
    "fp16": r"^parameters float16: vae float32 \(force_upcast\), text_encoder, unet$",
    # CUDA-only technique; its flags are process state, so the check runs for real on the CPU
    "tf32": r"^TF32 on \(matmul and cuDNN conv\) in 1/1 unet calls of one call$",
    "sdpa-flash": rf"^({N})/\1 SDPA calls of the unet ran with only FLASH_ATTENTION$",
    "sdpa-math": rf"^({N})/\1 SDPA calls of the unet ran with only MATH$",
    "attention-slicing": rf"^({N})/\1 attention processors of the unet sliced \(SlicedAttnProcessor\), "
    rf"slice size {N}; {N} of their calls in one call$",
    "fuse-qkv": rf"^attention modules fused: unet ({N})/\1, vae ({N})/\2; fused projections ran {N} times in one call$",
    "tiny-vae": r"^VAE: AutoencoderTiny \(0\.\d\dM parameters\)$",
    "int8-dynamic": rf"^linear layers holding torchao tensors: unet ({N})/\1, vae ({N})/\2 \(\w+\)$",
    "int8-weight-only": rf"^linear layers holding torchao tensors: unet ({N})/\1, vae ({N})/\2 \(\w+\)$",
    "channels-last": rf"^conv weights channels_last: unet ({N})/\1, vae ({N})/\2$",
    "compile-regional": rf"^repeated blocks compiled ({N})/\1; {N} graphs? compiled since apply, 0 graph breaks; "
    rf"compiled code ran inside it {N} times? in one call$",
    "vae-slicing": r"^slicing on; one call decoded 2 latents in 2 decoder runs of batch 1$",
    "vae-tiling": rf"^tiling on; 1 tiled decode \(({N}) decoder runs on tiles of 32 px\) in one call$",
    "group-offload-block": rf"^group offloading on text_encoder, unet, vae: {N} groups; ({N}) onloads and \1 "
    r"offloads in one call \(onload and offload devices are both the CPU\)$",
    "group-offload-leaf": rf"^group offloading on text_encoder, unet, vae: {N} groups; ({N}) onloads and \1 "
    r"offloads in one call \(onload and offload devices are both the CPU\)$",
    "layerwise-fp8": rf"^({N})/\1 conv/linear layers of the unet store float8_e4m3fn; "
    rf"upcast to float32 in ({N})/\2 of their calls in one call$",
}

# made to do nothing (apply returns the pipeline unchanged): the reason each check gives
ABSENT_ON_TINY_SD = {
    "fp32": r"^vae: .* parameters bfloat16, not float32; text_encoder: .*; unet: .*bfloat16, not float32$",
    "bf16": r"^vae: .* parameters float32, not bfloat16; .*unet: .* float32, not bfloat16$",
    "fp16": r"^text_encoder: .* float32, not float16; unet: .* float32, not float16$",
    "tf32": r"^TF32 on \(matmul and cuDNN conv\) in 0/1 unet calls of one call$",
    "sdpa-flash": rf"^0/{N} SDPA calls of the unet restricted to FLASH_ATTENTION \(enabled inside: FLASH_ATTENTION, "
    r"EFFICIENT_ATTENTION, MATH, CUDNN_ATTENTION\)$",
    "sdpa-math": rf"^0/{N} SDPA calls of the unet restricted to MATH \(enabled inside: .*\)$",
    "attention-slicing": rf"^0/{N} attention processors of the unet sliced \(AttnProcessor2_0\)$",
    "fuse-qkv": rf"^attention modules fused: unet 0/{N}, vae 0/{N}$",
    "tiny-vae": r"^VAE: AutoencoderKL \(0\.\d\dM parameters\)$",
    "int8-dynamic": rf"^linear layers holding torchao tensors: unet 0/{N}, vae 0/{N}$",
    "int8-weight-only": rf"^linear layers holding torchao tensors: unet 0/{N}, vae 0/{N}$",
    "channels-last": rf"^conv weights channels_last: unet 0/{N}, vae 0/{N}$",
    "compile-regional": rf"^repeated blocks compiled 0/{N}$",
    "vae-slicing": r"^AutoencoderKL\.use_slicing is off$",
    "vae-tiling": r"^AutoencoderKL\.use_tiling is off$",
    "group-offload-block": r"^no diffusers group-offloading hook on any model of the pipeline$",
    "group-offload-leaf": r"^no diffusers group-offloading hook on any model of the pipeline$",
    "layerwise-fp8": rf"^0/{N} conv/linear layers of the unet store float8_e4m3fn$",
}


@pytest.mark.parametrize("technique", sorted(APPLIED_ON_TINY_SD))
def test_technique_takes_effect_on_tiny_sd(sd, technique):
    effect = sd.effect(technique)
    assert effect.applied and effect.checked, effect.line
    assert re.match(APPLIED_ON_TINY_SD[technique], effect.line), effect.line


@pytest.mark.parametrize("technique", sorted(ABSENT_ON_TINY_SD))
def test_technique_that_does_nothing_is_not_applied_on_tiny_sd(sd, technique):
    # fp32 doing nothing to a pipeline in another precision; every other one doing nothing to fp32
    effect = sd.effect(sd.doing_nothing(technique, dtype="bfloat16" if technique == "fp32" else None))
    assert not effect.applied and effect.checked, effect.line
    assert re.match(ABSENT_ON_TINY_SD[technique], effect.line), effect.line


def test_a_fusion_undone_is_not_applied(sd):
    """diffusers' unfuse restores the processors but keeps to_qkv: present, unused; a flag is no proof."""
    spec, pipe, ctx = sd.apply("fuse-qkv")
    pipe.unfuse_qkv_projections(unet=True, vae=True)
    assert pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_qkv is not None
    pipe.fusing_unet = pipe.fusing_vae = True  # the proxy the old test trusted
    ((_, effect),) = check_effects(spec, pipe, sd.probe(pipe, ctx))
    assert not effect.applied
    assert re.match(
        rf"^attention modules fused: unet ({N})/\1, vae ({N})/\2; fused projections ran 0 times", effect.line
    )


def test_slicing_a_single_image_is_not_applied(sd):
    effect = sd.effect("vae-slicing", prompts=("a red circle on a white background",))
    assert not effect.applied
    assert effect.line.endswith("each decode holds 1 image, nothing to slice (needs a batch of 2+)")


def test_tiles_larger_than_the_image_are_not_applied(sd):
    spec, pipe, ctx = sd.apply("vae-tiling")
    pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 512, 128
    ((_, effect),) = check_effects(spec, pipe, sd.probe(pipe, ctx))
    assert not effect.applied
    assert (
        effect.line == "tiling on, but no decode was tiled in one call: the image is not larger than a tile of 512 px"
    )


def test_a_compile_that_runs_eagerly_is_not_applied(sd):
    """torch.compile applied, but every call runs under the force_eager stance: no compiled code runs."""
    spec, pipe, ctx = sd.apply("compile")
    probe = sd.probe(pipe, ctx)
    with torch.compiler.set_stance("force_eager"):
        with torch.inference_mode():
            probe.run_call()  # the warm-up and timed calls
        ((_, effect),) = check_effects(spec, pipe, probe)
    assert not effect.applied
    assert effect.line == (
        "denoiser compiled 1/1; 0 graphs compiled since apply, 0 graph breaks; "
        "no compiled code ran inside it in one call (it runs eagerly)"
    )
    effect = sd.effect(sd.doing_nothing("compile"))
    assert not effect.applied and effect.line == "denoiser compiled 0/1"


def test_a_second_compiled_instance_reuses_the_graphs_and_is_applied(sd):
    """dynamo's cache entries serve every instance of a module class: a second pipeline compiled in the
    same process compiles no new graph, yet its compiled code runs (a confirmation block, a search)."""
    for _ in range(2):
        spec, pipe, ctx = sd.apply("compile")
        probe = sd.probe(pipe, ctx)
        with torch.inference_mode():
            probe.run_call()
        ((_, effect),) = check_effects(spec, pipe, probe)
        assert effect.applied, effect.line
    assert (
        "0 graphs compiled since apply" in effect.line and "reuses graphs this process compiled earlier" in effect.line
    )


def test_attn_backend_does_nothing_on_a_unet(sd):
    """diffusers' UNet attention processors don't go through the dispatcher: the backend set on the
    model changes nothing there (a finding, reported as not applied)."""
    effect = sd.effect("attn-backend=native")
    assert not effect.applied
    assert re.match(rf"^0/{N} attention processors of the unet dispatch to native \(AttnProcessor2_0", effect.line)


@pytest.fixture(scope="module")
def distilled_folder(tmp_path_factory, sd):
    """A smaller UNet built from tiny-sd's (its mid block dropped, as BK-SDM does), in <folder>/unet."""
    from diffusers import UNet2DConditionModel

    base = sd.session.source().base().unet
    small = UNet2DConditionModel.from_config({**base.config, "mid_block_type": None})
    small.load_state_dict(base.state_dict(), strict=False)
    folder = tmp_path_factory.mktemp("bk-tiny-sd")
    small.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


def test_distilled_swaps_the_denoiser_for_real(sd, distilled_folder):
    spec, pipe, ctx = sd.apply(f"distilled={distilled_folder}")
    probe = sd.probe(pipe, ctx)
    with torch.inference_mode():
        images = probe.run_call().images
    assert images.shape == (2, 3, 64, 64) and torch.isfinite(images).all()
    ((label, effect),) = check_effects(spec, pipe, probe)
    assert label == f"distilled={distilled_folder}" and effect.applied
    assert re.match(
        r"^unet: UNet2DConditionModel with 0\.\d\dM parameters replaces the base UNet2DConditionModel with 1\.08M$",
        effect.line,
    )
    assert pipe.unet.mid_block is None


def test_distilled_without_a_swap_is_not_applied(sd):
    effect = sd.effect(sd.doing_nothing("distilled=nota-ai/bk-sdm-small"))
    assert not effect.applied and effect.line == "no record of the base unet at apply time: the swap did not run"
    spec = sd.registry.parse("distilled=somewhere")
    pipe = sd.session.source().fresh("cpu")
    base = {"class": "UNet2DConditionModel", "parameters": 1, "id": id(pipe.unet)}  # the apply's record, no swap
    ctx = ApplyContext("cpu", None, sd.session.info, sd.settings, spec, state={"distilled": base})
    ((_, effect),) = check_effects(spec, pipe, sd.probe(pipe, ctx))
    assert not effect.applied and effect.line.startswith("unet unchanged: UNet2DConditionModel with 1.08M parameters")


# ----------------------------------------------------------------------------- tiny-flux: caches, dispatcher

CACHES = ("cache-pab", "cache-faster", "cache-first-block", "cache-taylorseer", "cache-mag")


@pytest.mark.parametrize("technique", CACHES)
def test_cache_hits_on_tiny_flux(flux, technique):
    effect = flux.effect(technique)
    assert effect.applied, effect.line
    assert re.match(
        rf"^{N} hooks on the transformer; {N} of {N} hooked calls served from the cache in one call$", effect.line
    )


@pytest.mark.parametrize("technique", CACHES)
def test_cache_not_enabled_is_not_applied(flux, technique):
    effect = flux.effect(flux.doing_nothing(technique))
    assert not effect.applied
    assert re.match(r"^no \w+( or \w+)? hook registered on the transformer$", effect.line)


def test_a_cache_that_never_hits_is_not_applied(flux):
    """The diffusers #12012 case: First Block Cache registered and called, but it never reuses anything
    (threshold 0: every step differs enough from the last)."""
    from diffusers.hooks import FirstBlockCacheConfig

    spec, pipe, ctx = flux.apply("cache-first-block")
    pipe.transformer.disable_cache()
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.0))
    ((_, effect),) = check_effects(spec, pipe, flux.probe(pipe, ctx))
    assert not effect.applied
    assert re.match(rf"^{N} hooks on the transformer; 0 of {N} hooked calls served from the cache in one call: "
                    "the cache never hit$", effect.line)  # fmt: skip


def test_a_diffusers_without_hook_internals_gives_a_line_not_a_crash(flux):
    """An older or newer diffusers whose hooks keep no fn_ref: the cache is found, not counted."""
    spec, pipe, ctx = flux.apply("cache-taylorseer")
    for module in pipe.transformer.modules():
        for hook in getattr(getattr(module, "_diffusers_hook", None), "hooks", {}).values():
            hook.fn_ref = None
    ((_, effect),) = check_effects(spec, pipe, flux.probe(pipe, ctx))
    assert effect.applied and not effect.checked
    assert re.match(
        rf"^effect not checked: {N} taylorseer_cache hooks on the transformer, but this diffusers", effect.line
    )


def test_a_cache_removed_after_apply_is_not_applied(flux):
    spec, pipe, ctx = flux.apply("cache-pab")
    pipe.transformer.disable_cache()
    ((_, effect),) = check_effects(spec, pipe, flux.probe(pipe, ctx))
    assert not effect.applied and effect.line == "no pyramid_attention_broadcast hook registered on the transformer"


def test_attn_backend_dispatches_for_real_on_a_transformer(flux):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    active = _AttentionBackendRegistry._active_backend
    effect = flux.effect("attn-backend=_native_math")
    assert effect.applied, effect.line
    assert re.match(
        rf"^({N})/\1 attention processors of the transformer dispatch to _native_math; "
        rf"{N} _native_math attention calls in one call$",
        effect.line,
    )
    assert _AttentionBackendRegistry._active_backend == active  # not leaked to the next pipeline
    effect = flux.effect(flux.doing_nothing("attn-backend=_native_math"))
    assert not effect.applied and re.match(rf"^0/{N} attention processors of the transformer dispatch", effect.line)


# ----------------------------------------------------------------------------- CUDA-only, against fakes


@pytest.mark.parametrize(
    ("technique", "backend"), [("sdpa-efficient", "EFFICIENT_ATTENTION"), ("sdpa-cudnn", "CUDNN_ATTENTION")]
)
def test_cuda_only_sdpa_backends_checked_against_a_fake_kernel(sd, monkeypatch, technique, backend):
    """The CPU has no kernel for these backends: the real constraint is set, and a fake SDPA (the
    math kernel, whatever the constraint) lets the call through; the check reads the constraint."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    real = torch.nn.functional.scaled_dot_product_attention

    def fake(*args, **kwargs):
        with sdpa_kernel([SDPBackend.MATH]):
            return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", fake)
    effect = sd.effect(technique)
    assert effect.applied and re.match(rf"^({N})/\1 SDPA calls of the unet ran with only {backend}$", effect.line)


def test_xformers_checked_against_processors_set_by_hand(sd):
    """No xFormers here: its processors are installed by hand and checked without a call."""
    from diffusers.models.attention_processor import XFormersAttnProcessor

    technique = sd.registry.techniques["xformers"]
    pipe = sd.session.source().fresh("cpu")
    effect = technique.effect(pipe)
    assert not effect.applied and re.match(rf"^0/{N} attention processors of the unet use xFormers", effect.line)
    pipe.unet.set_attn_processor(XFormersAttnProcessor())
    effect = technique.effect(pipe)
    assert effect.applied and re.match(
        rf"^({N})/\1 attention processors of the unet use xFormers \(XFormersAttnProcessor\)$", effect.line
    )


@pytest.mark.parametrize("technique", ["int4-weight-only", "float8-dynamic", "float8-weight-only"])
def test_cuda_only_quantization_checked_against_a_fake_pipeline(sd, technique):
    """Their kernels need CUDA: a fake pipeline whose one wide layer holds a torchao tensor (Float8Tensor,
    which the CPU can build) stands in; tiny-sd has no layer wide enough for float8 (128 features)."""
    from torchao.quantization import Float8WeightOnlyConfig, quantize_

    effect_fn = sd.registry.techniques[technique].effect
    pipe = types.SimpleNamespace(unet=torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Linear(8, 8)), vae=None)
    effect = effect_fn(pipe)
    assert not effect.applied and effect.line == "linear layers holding torchao tensors: unet 0/1"
    quantize_(
        pipe.unet,
        Float8WeightOnlyConfig(),
        filter_fn=lambda m, fqn="": isinstance(m, torch.nn.Linear) and m.in_features == 256,
    )
    effect = effect_fn(pipe)
    assert effect.applied and effect.line == "linear layers holding torchao tensors: unet 1/1 (Float8Tensor)"


def test_sequential_offload_installed_for_real_on_the_cpu(sd):
    """accelerate installs it with the CPU as execution device (a call then fails inside accelerate 1.15,
    so none is made): the hooks and the weights off the device are real."""
    effect = sd.effect(sd.doing_nothing("sequential-offload"))
    assert not effect.applied and effect.line.startswith("no accelerate offloading hook")
    spec = sd.registry.parse("sequential-offload")
    pipe, ctx = sd.session.apply(spec, sd.settings)
    ((_, effect),) = check_effects(spec, pipe, sd.probe(pipe, ctx))
    assert effect.applied
    assert re.match(rf"^offloading hooks on {N} modules of text_encoder, unet, vae; ({N})/\1 of their weights off "
                    r"cpu(:0)? \(meta\)$", effect.line)  # fmt: skip


def test_compile_reduce_overhead_shares_the_compile_check(sd):
    """CUDA graphs need CUDA: the check is the compile one (proven in test_techniques.py); here, not compiled."""
    effect = sd.effect(sd.doing_nothing("compile-reduce-overhead"))
    assert not effect.applied and effect.line == "denoiser compiled 0/1"
