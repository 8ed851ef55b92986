"""Technique registry: spec parsing, composition rules, requirements and skip reasons. No torch."""

import pytest

from pytest_diffaccel.techniques import Environment, Requirements, SpecError, builtin_registry, unmet

REQUIRED_BY_CORE = [
    "fp32", "bf16", "fp16", "tf32", "sdpa-flash", "sdpa-efficient", "sdpa-math", "channels-last",
    "compile", "fuse-qkv", "int8-dynamic", "tiny-vae",
]  # fmt: skip
REQUIRED_BY_GUIDES = [
    "sdpa-cudnn", "attn-backend", "xformers", "attention-slicing", "compile-max-autotune",
    "compile-reduce-overhead", "compile-regional", "compile-vae", "int8-weight-only", "int4-weight-only",
    "float8-dynamic", "float8-weight-only", "distilled", "vae-slicing", "vae-tiling", "model-offload",
    "sequential-offload", "group-offload-block", "group-offload-leaf", "layerwise-fp8", "cache-pab",
    "cache-faster", "cache-first-block", "cache-taylorseer", "cache-mag",
]  # fmt: skip


@pytest.fixture(scope="module")
def registry():
    return builtin_registry()


def test_every_technique_of_the_issues_is_registered(registry):
    missing = [n for n in REQUIRED_BY_CORE + REQUIRED_BY_GUIDES if n not in registry.techniques]
    assert missing == []
    assert {"diffusion-fast", "flux-fast"} <= set(registry.presets)


def test_parts_apply_in_stage_order_whatever_the_spelling(registry):
    spec = registry.parse("compile+int8-dynamic+bf16")
    assert [p.label for p in spec.ordered] == ["bf16", "int8-dynamic", "compile"]
    assert spec.dtype == "bfloat16"
    assert spec.compiles
    assert spec.min_ssim == min(p.technique.min_ssim for p in spec.parts)


def test_preset_expands(registry):
    spec = registry.parse("diffusion-fast")
    labels = {p.label for p in spec.parts}
    assert {"bf16", "fuse-qkv", "channels-last", "int8-dynamic", "compile-max-autotune", "compile-vae"} <= labels
    assert spec.preset == "diffusion-fast"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "unknown technique 'nope'"),
        ("bf16+nope", "known: "),
        ("fp16+bf16", "both set the precision"),
        ("sequential-offload+compile", "can't be combined"),
        ("compile+compile-regional", "denoiser compile"),
        ("fuse-qkv+attention-slicing", "fused QKV installs its own attention processor"),
        ("bf16+bf16", "appears twice"),
        ("distilled", "needs an argument"),
        ("bf16=x", "takes no argument"),
        ("tiny-vae=", "needs a value"),
        ("bf16+diffusion-fast", "on its own"),
        ("", "empty"),
    ],
)
def test_bad_specs_say_why(registry, text, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace("+", r"\+")):
        registry.parse(text)


def test_unknown_name_lists_the_known_ones(registry):
    with pytest.raises(SpecError) as error:
        registry.parse("bf17")
    for name in ("bf16", "fp16", "compile", "diffusion-fast"):
        assert name in str(error.value)


def test_arguments(registry):
    spec = registry.parse("bf16+tiny-vae=madebyollin/taesdxl")
    assert [p.label for p in spec.parts] == ["bf16", "tiny-vae=madebyollin/taesdxl"]


def test_requirements_become_skip_reasons():
    cpu = Environment(device="cpu", versions={"torchao": "0.18.0"}, family="unet")
    gpu_old = Environment(device="cuda", capability=(8, 0), versions={"torchao": "0.9"}, family="transformer")
    needs = Requirements(cuda=True, min_capability=(8, 9), packages=(("torchao", "0.10"),), families=("transformer",))
    assert unmet(needs, cpu) == [
        "needs CUDA (run with --diffaccel-gpu on a GPU machine)",
        "applies to transformer pipelines; this model's denoiser is a unet",
    ]
    reasons = unmet(needs, gpu_old)
    assert "needs compute capability >= 8.9, this GPU has 8.0" in reasons
    assert "needs torchao>=0.10, installed 0.9" in reasons
    assert unmet(Requirements(packages=(("xformers", ""),)), cpu) == ["needs xformers, which is not installed"]
    assert unmet(Requirements(), cpu) == []


def test_combined_requirements_union(registry):
    spec = registry.parse("bf16+float8-dynamic+cache-pab")
    req = spec.requirements
    assert req.cuda and req.min_capability == (8, 9) and req.families == ("transformer",)


def test_user_registration_rules(registry):
    @registry.register("my-attn", min_ssim=0.98, cuda=True)
    def apply(pipe):
        return pipe

    spec = registry.parse("bf16+my-attn")
    assert spec.parts[1].technique.requires.cuda
    with pytest.raises(SpecError, match="registered twice"):
        registry.register("my-attn")(apply)
    with pytest.raises(SpecError, match="letters, digits and dashes"):
        registry.register("a+b")
    with pytest.raises(SpecError, match="outside"):
        registry.register("x", min_ssim=2.0)


# ----------------------------------------------------------------------------- effect checks (no torch)


def _probe(**state):
    from pytest_diffaccel.techniques import ApplyContext
    from pytest_diffaccel.techniques.effects import Probe

    ctx = ApplyContext(device="cpu", argument=None, model=None, settings=None, state=dict(state))
    return Probe(ctx=ctx, run_call=lambda: None, device="cpu")


def test_every_builtin_technique_declares_an_effect_check():
    techniques = builtin_registry().techniques
    assert [name for name, t in techniques.items() if t.effect is None] == []
    assert all(callable(t.effect) for t in techniques.values())


def test_register_accepts_an_effect_and_checks_it_is_a_function():
    from pytest_diffaccel.techniques import Effect, Registry

    registry = Registry()

    def seen(pipe):
        return Effect(pipe == "accelerated", f"pipe is {pipe}")

    @registry.register("with-effect", effect=seen)
    def apply(pipe):
        return pipe

    technique = registry.techniques["with-effect"]
    assert technique.effect is seen
    assert technique.check("accelerated", _probe()) == Effect(True, "pipe is accelerated")
    for bad, why in [(42, "got int"), ("yes", "got str"), (lambda: True, "a function without arguments")]:
        with pytest.raises(SpecError, match=f"technique 'bad-effect': effect= takes a function .*{why}"):
            registry.register("bad-effect", effect=bad)(apply)
    assert "bad-effect" not in registry.techniques


def test_effect_function_arity_and_return_values_are_normalised():
    from pytest_diffaccel.techniques import Effect, Registry

    registry = Registry()
    returns = {
        "gives-effect": lambda pipe, probe: Effect(False, f"state {probe.ctx.state['gives-effect']}"),
        "gives-bool": lambda pipe: True,
        "gives-false": lambda pipe: False,
        "gives-pair": lambda pipe: (False, "0/16 attention layers fused"),
        "gives-junk": lambda pipe: "fine",
        "gives-bad-pair": lambda pipe: (1, "x"),
    }
    for name, fn in returns.items():
        registry.register(name, effect=fn)(lambda pipe: pipe)
    probe = _probe(**{"gives-effect": 7})
    check = {name: registry.techniques[name].check for name in returns}
    assert check["gives-effect"](None, probe) == Effect(False, "state 7")
    assert check["gives-bool"](None, probe) == Effect(True, "effect check passed")
    assert check["gives-false"](None, probe) == Effect(False, "effect check returned False")
    assert check["gives-pair"](None, probe) == Effect(False, "0/16 attention layers fused")
    for name in ("gives-junk", "gives-bad-pair"):
        with pytest.raises(
            SpecError, match=f"technique '{name}': its effect check returned .*return an Effect, a bool"
        ):
            check[name](None, probe)


def test_check_effects_one_line_per_part_in_spec_order():
    from pytest_diffaccel.techniques import Effect, Registry
    from pytest_diffaccel.techniques.effects import check_effects, summary

    registry = Registry()

    def raises(pipe):
        raise RuntimeError("no hook registry\nsecond line")

    registry.register("zeta", effect=lambda pipe, probe: (True, f"argument {probe.ctx.argument}"), argument="optional")(
        lambda pipe: pipe
    )
    registry.register("alpha", stage=1)(lambda pipe: pipe)  # no effect declared
    registry.register("boom", effect=raises)(lambda pipe: pipe)
    probe = _probe()
    effects = check_effects(registry.parse("zeta=7+alpha+boom"), object(), probe)
    assert effects == [
        ("zeta=7", Effect(True, "argument 7")),
        ("alpha", Effect(True, "effect not checked", checked=False)),
        ("boom", Effect(False, "effect check raised RuntimeError: no hook registry")),
    ]
    assert summary(effects) == "NOT APPLIED boom: effect check raised RuntimeError: no hook registry"
    assert summary(effects[:2]) == "zeta=7: argument 7; alpha: effect not checked"
    assert summary(effects[1:2]) == "effect not checked"
    assert summary(effects[:1]) == "argument 7"
    assert probe.ctx.argument is None  # restored


def test_effects_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, pytest_diffaccel.techniques.effects as e, pytest_diffaccel.techniques as t; "
    code += "t.builtin_registry(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
