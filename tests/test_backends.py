"""The quantization backends and caches beyond torchao: optimum-quanto, GGUF, bitsandbytes, cache-dit's
DBCache, diffusers' SeaCache and text K/V cache.

Through pytest (pytester): each one the CPU runs passes on a bundled preset with its effect line and an
SSIM; the same effect check fails "not applied" when the backend is bypassed (the quantization config
silently dropped, the GGUF weights dequantized, the cache never enabled, the calibrator dropped, the
scheduler's position withheld), registered as user techniques in the inner conftest that reuse the
built-in's effect check; bitsandbytes, whose diffusers loader needs a GPU, is skipped with the reason,
its loading call recorded and its effect check run on layers its own CPU backend quantized. Each
backend's tests skip when it is not installed (scripts/min-versions.sh installs none of them).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re

import pytest

from pytest_diffaccel.techniques.registry import Environment, Requirements, installed_version, unmet

os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")  # before cache_dit is first imported

FEW = ["--diffaccel-rounds=3", "--diffaccel-max-rounds=3", "--diffaccel-max-blocks=1", "-rs"]
QUANTO = ("quanto-int8", "quanto-float8", "quanto-int4", "quanto-int2")
GGUF = ("gguf-q8_0", "gguf-q4_0")
BNB = ("bnb-nf4", "bnb-fp4", "bnb-int8")
DBCACHE = ("dbcache", "dbcache-taylorseer")
NEW = (*QUANTO, *GGUF, *BNB, *DBCACHE, "cache-sea", "cache-text-kv")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def needs(*modules: str) -> None:
    """Skip unless installed; import them here, once, in the outer process (an in-process inner run drops
    the modules it imported, and importing torch extensions again fails)."""
    for module in modules:
        pytest.importorskip(module)


@pytest.fixture(autouse=True)
def _gguf_cache(tmp_path_factory, monkeypatch):
    """One GGUF cache for this module's tests, apart from the user's."""
    monkeypatch.setenv("DIFFACCEL_GGUF_CACHE", str(tmp_path_factory.getbasetemp() / "gguf-cache"))


def measured(report) -> dict[str, dict]:
    """technique -> extra_info of its benchmark in the JSON report."""
    import json

    return {b["extra_info"]["technique"]: b["extra_info"] for b in json.loads(report.read_text())["benchmarks"]}


def assert_passed_with_effect_and_ssim(report, names) -> None:
    rows = measured(report)
    for name in names:
        extra = rows[name]
        assert extra["effects"] and all(e["checked"] and e["applied"] for e in extra["effects"]), name
        assert extra["ssim"] is not None and 0.0 < extra["ssim"] <= 1.0, (name, extra["ssim"])


# ----------------------------------------------------------------------------- listed and skipped


def test_every_new_technique_is_listed_with_whether_it_can_run_here(pytester):
    """Listed on tiny-flux: bitsandbytes can't run (no CUDA), the others can wherever their library is
    installed (and this diffusers has their config); the text K/V cache refuses the model when applied."""
    from pytest_diffaccel.techniques import builtin_registry

    techniques = builtin_registry().techniques
    result = pytester.runpytest_inprocess("--diffaccel-list-techniques", "--diffaccel-model=tiny-flux")
    assert result.ret == 0
    lines = [line.strip() for line in result.stdout.lines]
    for name in NEW:
        (index,) = [i for i, line in enumerate(lines) if re.match(rf"{re.escape(name)}(\[=VALUE\])? ", line)]
        status = lines[index + 1]
        requires = techniques[name].requires
        attribute = requires.attribute
        has = {attribute: hasattr(importlib.import_module(attribute[0]), attribute[1])} if attribute else {}
        reasons = unmet(requires, Environment(device="cpu", family="transformer", attributes=has))
        assert ("can run here" in status) == (not reasons), (name, status)
        assert all(reason in status for reason in reasons), (name, status)
        if name in BNB:
            assert "can't run here: needs CUDA" in status, status
    assert "[quantization]" in lines and "[caching]" in lines


def test_bitsandbytes_is_skipped_on_the_cpu_with_the_reason(user_suite, run_inner, untimed):
    result = run_inner("--diffaccel-techniques=bnb-nf4,bnb-int8", untimed, *FEW)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*bnb-nf4: needs CUDA (run with --diffaccel-gpu on a GPU machine)*"])


# ----------------------------------------------------------------------------- quantization through pytest

BYPASSED_QUANTIZATION = """
import contextlib

import diffusers
import torch

from pytest_diffaccel.techniques import builtin_registry, components

BUILTIN = builtin_registry().techniques


@contextlib.contextmanager
def config_dropped():
    # a loader that silently drops quantization_config: the technique's own apply, a float model back
    original = diffusers.ModelMixin.__dict__["from_pretrained"]

    def dropped(cls, *args, quantization_config=None, **kwargs):
        return original.__func__(cls, *args, **kwargs)

    diffusers.ModelMixin.from_pretrained = classmethod(dropped)
    try:
        yield
    finally:
        diffusers.ModelMixin.from_pretrained = original


def bnb_cpu(pipe, quant_type):
    # the denoiser's linear layers quantized by bitsandbytes' CPU backend (diffusers' loader needs a GPU)
    import bitsandbytes as bnb

    for module in list(components.denoiser(pipe).modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear:
                layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=torch.float32, quant_type=quant_type)
                layer.weight = bnb.nn.Params4bit(child.weight.data.clone(), requires_grad=False, quant_type=quant_type)
                layer.bias = child.bias
                setattr(module, name, layer.to("cpu"))
    return pipe


def pytest_diffaccel_register_techniques(register):
    if "quanto-int8" in BUILTIN:
        @register("quanto-config-dropped", min_ssim=0.0, effect=BUILTIN["quanto-int8"].effect)
        def quanto_dropped(pipe, ctx):
            with config_dropped():
                return BUILTIN["quanto-int8"].apply(pipe, ctx)

        @register("gguf-dequantized", min_ssim=0.0, effect=BUILTIN["gguf-q8_0"].effect)
        def gguf_dequantized(pipe, ctx):
            pipe = BUILTIN["gguf-q8_0"].apply(pipe, ctx)
            components.denoiser(pipe).dequantize()  # the GGUF weights back to float after the load
            return pipe

    @register("bnb-nf4-cpu", min_ssim=0.0, effect=BUILTIN["bnb-nf4"].effect)
    def bnb_nf4_cpu(pipe):
        return bnb_cpu(pipe, "nf4")

    @register("bnb-nf4-dropped", min_ssim=0.0, effect=BUILTIN["bnb-nf4"].effect)
    def bnb_nf4_dropped(pipe):
        return pipe  # the config dropped: the float denoiser
"""


def test_quanto_and_gguf_pass_on_tiny_sd_and_fail_when_bypassed(user_suite, run_inner, untimed):
    """Each quanto and GGUF technique passes on tiny-sd (the UNet: diffusers' GGUF single-file loader takes
    a diffusers-layout file of it) with its effect line and an SSIM; with the config silently dropped or the
    weights dequantized after the load, the same effect check fails "not applied"."""
    needs("optimum.quanto", "gguf")
    user_suite.makeconftest(BYPASSED_QUANTIZATION)
    passing = [*QUANTO, *GGUF]
    report = user_suite.path / "r.json"
    techniques = ",".join([*passing, "quanto-config-dropped", "gguf-dequantized"])
    result = run_inner(f"--diffaccel-techniques={techniques}", untimed, f"--diffaccel-json={report}", *FEW)
    result.assert_outcomes(passed=len(passing), failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*quanto-int8: linear layers holding quanto qint8 weights: unet 80/80; they ran * times in one call",
            "*quanto-int4: linear layers holding quanto qint4 weights: unet 80/80; they ran * times in one call",
            "*gguf-q8_0: linear layers holding GGUF Q8_0 weights: unet 80/80; they ran * times in one call",
            "*gguf-q4_0: linear layers holding GGUF Q4_0 weights: unet 80/80; they ran * times in one call",
            "*not applied gate failed: quanto-config-dropped: linear layers holding quanto qint8 weights: unet 0/80",
            "*not applied gate failed: gguf-dequantized: linear layers holding GGUF Q8_0 weights: unet 0/80",
        ]
    )
    assert_passed_with_effect_and_ssim(report, passing)


def test_bitsandbytes_effect_check_on_its_cpu_backend_and_bypassed(user_suite, run_inner, untimed):
    """diffusers' bitsandbytes loader needs a GPU; bitsandbytes' CPU backend quantizes the same layers:
    bnb-nf4's effect check passes on them, and fails "not applied" on the float denoiser."""
    needs("bitsandbytes")
    user_suite.makeconftest(BYPASSED_QUANTIZATION)
    result = run_inner("--diffaccel-techniques=bnb-nf4-cpu,bnb-nf4-dropped,bnb-nf4", untimed, *FEW)
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines_random(
        [
            "*bnb-nf4-cpu: linear layers holding bitsandbytes nf4 weights: unet 80/80; they ran * times in one call",
            "*not applied gate failed: bnb-nf4-dropped: linear layers holding bitsandbytes nf4 weights: unet 0/80",
            "*bnb-nf4: needs CUDA*",
        ]
    )


# ----------------------------------------------------------------------------- caches through pytest

BYPASSED_CACHES = """
import contextlib

from pytest_diffaccel.techniques import builtin_registry, seacache

BUILTIN = builtin_registry().techniques


@contextlib.contextmanager
def replaced(owner, name, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def pytest_diffaccel_register_techniques(register):
    @register("sea-without-position", min_ssim=0.0, effect=BUILTIN["cache-sea"].effect)
    def sea_without_position(pipe, ctx):
        # SeaCache on Flux as FluxPipeline calls it: the latents, but no scheduler position in cache_context
        with replaced(seacache, "sea_adapter", lambda pipe: seacache.flux_latents):
            return BUILTIN["cache-sea"].apply(pipe, ctx)

    try:
        import cache_dit
    except ImportError:
        return

    @register("dbcache-dropped", min_ssim=0.0, effect=BUILTIN["dbcache"].effect)
    def dbcache_dropped(pipe, ctx):
        with replaced(cache_dit, "enable_cache", lambda pipe, **kwargs: pipe):  # silently never enabled
            return BUILTIN["dbcache"].apply(pipe, ctx)

    @register("taylorseer-dropped", min_ssim=0.0, effect=BUILTIN["dbcache-taylorseer"].effect)
    def taylorseer_dropped(pipe, ctx):
        original = cache_dit.TaylorSeerCalibratorConfig

        def disabled(**kwargs):
            return original(enable_calibrator=False, enable_encoder_calibrator=False, **kwargs)

        with replaced(cache_dit, "TaylorSeerCalibratorConfig", disabled):  # DBCache alone
            return BUILTIN["dbcache-taylorseer"].apply(pipe, ctx)
"""


def test_caches_pass_on_tiny_flux_and_fail_when_bypassed(user_suite, run_inner, untimed):
    """DBCache (alone and with TaylorSeer) and SeaCache pass on tiny-flux over the preset's 8 steps, each
    with its effect line and an SSIM; never enabled, without its calibrator, or without the scheduler's
    position (as FluxPipeline calls SeaCache by itself), the same effect check fails "not applied"."""
    import diffusers.hooks

    if not hasattr(diffusers.hooks, "SeaCacheConfig"):
        pytest.skip("this diffusers has no SeaCache")
    user_suite.makeconftest(BYPASSED_CACHES)
    passing = ["cache-sea"]
    failing = ["sea-without-position"]
    expected = [
        "*cache-sea: 4 hooks on the transformer; * of 32 hooked calls served from the cache in one call",
        "*not applied gate failed: sea-without-position: 4 hooks on the transformer; 0 of 32 hooked calls served "
        "from the cache in one call: the cache never hit",
    ]
    if installed("cache_dit") and not unmet(Requirements(packages=(("cache-dit", "1.5.1"),)), Environment("cpu")):
        needs("cache_dit")
        passing += list(DBCACHE)
        failing += ["dbcache-dropped", "taylorseer-dropped"]
        expected += [
            "*dbcache: * of 32 block runs of the transformer served from the cache in one call (8 steps)",
            "*dbcache-taylorseer: * of 32 block runs * served from the cache in one call (8 steps); * TaylorSeer "
            "forecasts",
            "*not applied gate failed: dbcache-dropped: cache-dit is not enabled on the transformer (no cached blocks)",
            "*not applied gate failed: taylorseer-dropped: * block runs * from the cache in one call (8 steps); "
            "0 TaylorSeer forecasts: the calibrator never forecast",
        ]
    report = user_suite.path / "r.json"
    result = run_inner("--diffaccel-model=tiny-flux", "--diffaccel-steps=8", f"--diffaccel-json={report}",
                       f"--diffaccel-techniques={','.join(passing + failing)}", untimed, *FEW)  # fmt: skip
    result.assert_outcomes(passed=len(passing), failed=len(failing))
    result.stdout.fnmatch_lines_random(expected)
    assert_passed_with_effect_and_ssim(report, passing)


# ----------------------------------------------------------------------------- loading paths, no pipeline run


def flux_context():
    from pytest_diffaccel.config import Settings
    from pytest_diffaccel.models import PRESETS
    from pytest_diffaccel.techniques import ApplyContext

    return ApplyContext(device="cpu", argument=None, model=PRESETS["tiny-flux"], settings=Settings())


@pytest.fixture(scope="module")
def flux_source():
    from pytest_diffaccel.models import model_info
    from pytest_diffaccel.models.loading import ModelSource

    return ModelSource(model_info("tiny-flux"))


@pytest.mark.parametrize(("technique", "keywords"), [
    ("bnb-nf4", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}),
    ("bnb-fp4", {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}),
    ("bnb-int8", {"load_in_8bit": True}),
])  # fmt: skip
def test_bitsandbytes_loads_the_denoiser_and_t5_with_their_configs(flux_source, monkeypatch, technique, keywords):
    """The call each makes on a GPU, recorded (diffusers' bitsandbytes quantizer refuses to load without
    one): from_pretrained of the preset's folder with diffusers' BitsAndBytesConfig for the transformer and
    transformers' for the T5 text encoder, in the pipeline's dtype; the 4-bit kinds compute in it."""
    needs("bitsandbytes")  # diffusers' BitsAndBytesConfig reads its version
    import diffusers
    import torch
    import transformers

    from pytest_diffaccel.techniques import builtin_registry

    pipe = flux_source.fresh("cpu")
    calls = []

    def recorder(current):
        def from_pretrained(source, **kwargs):
            calls.append((type(current).__name__, source, kwargs))
            return current

        return from_pretrained

    monkeypatch.setattr(type(pipe.transformer), "from_pretrained", recorder(pipe.transformer))
    monkeypatch.setattr(type(pipe.text_encoder_2), "from_pretrained", recorder(pipe.text_encoder_2))
    builtin_registry().techniques[technique].apply(pipe, flux_context())  # the requirement, not apply, wants CUDA
    assert [(name, kwargs["subfolder"]) for name, _, kwargs in calls] == [
        ("FluxTransformer2DModel", "transformer"), ("T5EncoderModel", "text_encoder_2")
    ]  # fmt: skip
    for (name, source, kwargs), library in zip(calls, (diffusers, transformers), strict=True):
        assert source.endswith("presets/tiny-flux") and kwargs["local_files_only"] and kwargs["use_safetensors"]
        assert kwargs.get("dtype", kwargs.get("torch_dtype")) is torch.float32
        config = kwargs["quantization_config"]
        assert isinstance(config, library.BitsAndBytesConfig), name
        for key, value in keywords.items():
            assert getattr(config, key) == value, (name, key)
        if "load_in_4bit" in keywords:
            assert config.bnb_4bit_compute_dtype is torch.float32


def test_the_text_kv_cache_refuses_a_model_without_its_blocks(flux_source):
    from pytest_diffaccel.techniques import builtin_registry

    with pytest.raises(ValueError, match="serves NucleusMoEImageTransformerBlocks only; FluxTransformer2DModel"):
        builtin_registry().techniques["cache-text-kv"].apply(flux_source.fresh("cpu"), flux_context())


def test_the_text_kv_cache_effect_on_a_tiny_nucleusmoe_transformer():
    """No preset has NucleusMoE-Image blocks: a tiny random transformer of that family, called over three
    steps with one prompt, projects the text once per block; with a new prompt tensor at every step (the
    cache keyed on it never serves) or the cache disabled, the effect check says "not applied"."""
    import types

    import diffusers
    import torch

    from pytest_diffaccel.techniques import builtin_registry
    from pytest_diffaccel.techniques.effects import Probe

    if not hasattr(diffusers, "NucleusMoEImageTransformer2DModel") or not hasattr(diffusers, "TextKVCacheConfig"):
        pytest.skip("this diffusers has no NucleusMoE-Image transformer or text K/V cache")
    torch.manual_seed(0)
    model = diffusers.NucleusMoEImageTransformer2DModel(
        patch_size=2, in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    latents, prompt = torch.randn(1, 16, 16), torch.randn(1, 7, 32)
    fresh = [prompt.clone() for _ in range(3)]  # kept alive: the cache keys on the tensor's address

    def steps(fresh_prompt: bool = False) -> None:
        for i, t in enumerate((900, 500, 100)):
            text = fresh[i] if fresh_prompt else prompt
            model(hidden_states=latents, img_shapes=[(1, 4, 4)], encoder_hidden_states=text, timestep=torch.tensor([t]))

    technique = builtin_registry().techniques["cache-text-kv"]
    pipe = types.SimpleNamespace(transformer=model)
    technique.apply(pipe, flux_context())
    effect = technique.check(pipe, Probe(ctx=flux_context(), run_call=steps, device="cpu"))
    assert (
        effect.applied
        and effect.line == "2 hooks on the transformer; text K/V projected 2 times for 6 block calls in one call"
    )
    effect = technique.check(pipe, Probe(ctx=flux_context(), run_call=lambda: steps(True), device="cpu"))
    assert not effect.applied and effect.line.endswith(
        "projected 6 times for 6 block calls in one call: the cache never served"
    )
    model.disable_cache()
    effect = technique.check(pipe, Probe(ctx=flux_context(), run_call=steps, device="cpu"))
    assert not effect.applied and effect.line == "no text_kv_cache_block hook registered on the transformer"


def test_gguf_conversion_is_deterministic_cached_and_quantizes_only_whole_blocks(flux_source, tmp_path, monkeypatch):
    """The same preset converts to the same bytes in another cache; a second call reuses the file; the
    linear layers whose width is a multiple of the 32-weight block are quantized, every other tensor is F32."""
    needs("gguf")
    import gguf

    from pytest_diffaccel.techniques import gguf_quant

    model = flux_source.fresh("cpu").transformer
    files = {}
    for cache in ("a", "b"):
        monkeypatch.setenv("DIFFACCEL_GGUF_CACHE", str(tmp_path / cache))
        path, made = gguf_quant.converted(flux_context(), "transformer", model, "Q4_0")
        again, made_again = gguf_quant.converted(flux_context(), "transformer", model, "Q4_0")
        assert made and not made_again and again == path
        files[cache] = path
    assert files["a"].name == files["b"].name and re.fullmatch(r"transformer-[0-9a-f]{16}-Q4_0\.gguf", files["a"].name)
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files.values()}
    assert len(digests) == 1
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(files["a"])).tensors}
    quantized = {name for name, kind in types.items() if kind == "Q4_0"}
    assert quantized == gguf_quant.quantized_names(model, 32) and len(quantized) == 47
    assert {kind for name, kind in types.items() if name not in quantized} == {"F32"}
    assert "x_embedder.weight" not in quantized  # 16 input features: not a whole block


# ----------------------------------------------------------------------------- composition, search, floors


def test_what_composes_and_what_does_not():
    from pytest_diffaccel.techniques import SpecError, builtin_registry

    registry = builtin_registry()
    for spec in ("bf16+quanto-int8+compile", "bf16+gguf-q4_0+cache-first-block", "quanto-int4+dbcache+compile-regional",
                 "gguf-q8_0+group-offload-block+tiny-vae", "bf16+cache-sea+fuse-qkv"):  # fmt: skip
        registry.parse(spec)
    for spec, why in [
        ("quanto-int8+gguf-q8_0", "both set the weight quantization"),
        ("int8-dynamic+bnb-nf4", "both set the weight quantization"),
        ("quanto-int8+fuse-qkv", "the fused projections would not be quantized"),
        ("gguf-q4_0+layerwise-fp8", "can't be stored in float8"),
        ("dbcache+compile", "fullgraph compilation of the whole transformer can't trace"),
        ("cache-sea+compile-regional", "which fullgraph compilation can't trace"),
        ("dbcache+cache-sea", "both set the cache"),
    ]:
        with pytest.raises(SpecError, match=re.escape(why)):
            registry.parse(spec)


def test_quantization_is_one_search_choice_across_backends():
    from pytest_diffaccel.search.space import candidates, choices
    from pytest_diffaccel.techniques import builtin_registry

    registry = builtin_registry()
    for device, family in (("cpu", "unet"), ("cuda", "transformer")):
        env = Environment(device=device, capability=(9, 0), family=family)
        groups = {c.group: [o.label for o in c.options] for c in choices(registry, env, ["quantization"])}
        assert list(groups) == ["weight quantization"]
        options = groups["weight quantization"]
        assert {"int8-dynamic", "int8-weight-only"} <= set(options)
        assert set(QUANTO) <= set(options) or not installed("optimum.quanto")
        assert set(GGUF) <= set(options) or not installed("gguf")
        assert (set(BNB) <= set(options)) == (device == "cuda" and installed("bitsandbytes"))
    env = Environment(device="cpu", family="transformer")
    specs = candidates(registry, env, ["quantization", "caching"], limit=2000)
    assert all(sum(p.technique.exclusive == "weight quantization" for p in s.parts) <= 1 for s in specs)
    caches = {c.group: [o.label for o in c.options] for c in choices(registry, env)}["cache"]
    assert "cache-text-kv" not in caches and "cache-sea" in caches  # one model family: only when named
    assert [o.label for c in choices(registry, env, ["cache-text-kv"]) for o in c.options] == ["cache-text-kv"]


def test_a_package_outside_the_fingerprint_is_read_from_its_metadata():
    """The environment's versions hold the fingerprint's libraries; a technique may need any other
    distribution (optimum-quanto, gguf, cache-dit): its installed version is read, nothing imported."""
    cpu = Environment(device="cpu", versions={"torchao": "0.18.0"})
    pytest_version = installed_version("pytest")
    assert pytest_version
    assert unmet(Requirements(packages=(("pytest", "1.0"),)), cpu) == []
    assert unmet(Requirements(packages=(("pytest", "999"),)), cpu) == [f"needs pytest>=999, installed {pytest_version}"]
    assert unmet(Requirements(packages=(("no-such-distribution-x", ""),)), cpu) == [
        "needs no-such-distribution-x, which is not installed"
    ]
    named = Environment(device="cpu", versions={"pytest": None})  # what the environment names wins
    assert unmet(Requirements(packages=(("pytest", ""),)), named) == ["needs pytest, which is not installed"]


def test_every_new_technique_has_a_measured_floor_class():
    from pytest_diffaccel import floors

    data = floors.load()
    for name in NEW:
        assert floors.CLASS_OF[name] in data["default"], name
    runs_on = {"tiny-sd": (*QUANTO, *GGUF), "tiny-sdxl": (*QUANTO, *GGUF), "tiny-flux": (*QUANTO, *GGUF, "cache-sea")}
    for model, names in runs_on.items():
        for name in names:
            assert name in data["models"][model]["techniques"], (model, name)
    for name in BNB:
        assert "needs CUDA" in data["models"]["tiny-sd"]["skipped"][name]
