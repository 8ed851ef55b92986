"""Compilation and memory layout: torch.compile modes, regional compile, the VAE decode, channels-last.

Every compile uses ``fullgraph=True``: a graph break is the technique's failure, with dynamo's
reason in the message, because a broken graph silently gives away most of the speed-up.
"""

from __future__ import annotations

from typing import Any

from . import components
from .effects import Probe, compiled_regions, plural
from .precision import LOSSLESS_SSIM
from .registry import STAGE_COMPILE, STAGE_LAYOUT, ApplyContext, Effect, Registry, Requirements

# The inductor flags of the diffusers "Accelerate inference" guide for max-autotune.
GUIDE_INDUCTOR_FLAGS: dict[str, bool] = {
    "conv_1x1_as_mm": True,
    "coordinate_descent_tuning": True,
    "epilogue_fusion": False,
    "coordinate_descent_check_all_directions": True,
}

COMPILE_MODES = {
    "compile": (None, Requirements(), "torch.compile of the denoiser, default mode"),
    "compile-max-autotune": (
        "max-autotune",
        Requirements(),
        "torch.compile(mode='max-autotune') of the denoiser with the guide's inductor flags",
    ),
    "compile-reduce-overhead": (
        "reduce-overhead",
        Requirements(cuda=True),
        "torch.compile(mode='reduce-overhead') of the denoiser: CUDA graphs",
    ),
}


def compile_mode_of(ctx: ApplyContext) -> str | None:
    """The mode of the denoiser compile in the same spec (the VAE decode follows it)."""
    spec = getattr(ctx, "spec", None)
    for part in getattr(spec, "parts", ()):
        entry = COMPILE_MODES.get(part.technique.name)
        if entry is not None:
            return entry[0]
    return None


def _inductor_flags(mode: str | None) -> Any:
    import torch._inductor.config as inductor_config

    if mode == "max-autotune":
        return inductor_config.patch(GUIDE_INDUCTOR_FLAGS)
    from contextlib import nullcontext

    return nullcontext()


def dynamo_counts() -> dict[str, int]:
    """Dynamo's process-wide counters: graphs compiled and graph breaks so far."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]), "breaks": int(sum(counters["graph_break"].values()))}


def _since(before: dict[str, int] | None) -> dict[str, int]:
    now = dynamo_counts()
    before = before or {}
    # torch._dynamo.reset() clears the counters: then count from zero
    return {k: now[k] - before.get(k, 0) if now[k] >= before.get(k, 0) else now[k] for k in now}


def is_compiled(fn: Any) -> bool:
    """A callable produced by torch.compile (dynamo's wrapper keeps the original)."""
    return fn is not None and hasattr(fn, "_torchdynamo_orig_callable")


def _compile_effect(name: str, what: str, targets: Any) -> Any:
    """Effect of a compile: the target is compiled, no graph break since apply, and compiled code ran
    inside the target during one call (the graphs may be ones this process compiled earlier for
    another instance of the same module class: dynamo's cache serves them all).

    ``targets(pipe) -> (compiled, eligible, {label: (object, attribute)})``: how many of the
    target's callables are compiled, out of how many, and where to watch them run."""

    def effect(pipe: Any, probe: Probe) -> Effect:
        compiled, eligible, watch = targets(pipe)
        head = f"{what} compiled {compiled}/{eligible}"
        if not compiled:
            return Effect(False, head)
        before = probe.ctx.state.get(name)
        if before is None:
            return Effect(False, f"{head}, but no dynamo counters were recorded at apply")
        counts = _since(before)
        graphs, breaks = plural(counts["graphs"], "graph"), plural(counts["breaks"], "graph break")
        line = f"{head}; {graphs} compiled since apply, {breaks}"
        if counts["breaks"]:
            return Effect(False, line + " (graph breaks: part of it runs eagerly)")
        ran = sum(compiled_regions(probe, watch).values())
        if not ran:
            return Effect(False, line + "; no compiled code ran inside it in one call (it runs eagerly)")
        if not counts["graphs"]:  # dynamo's cache entries serve every instance of a module class
            line += " (it reuses graphs this process compiled earlier)"
        return Effect(True, f"{line}; compiled code ran inside it {plural(ran, 'time')} in one call")

    return effect


def _denoiser_target(pipe: Any) -> tuple[int, int, dict[str, tuple[Any, str]]]:
    model = components.denoiser(pipe)
    impl = getattr(model, "_compiled_call_impl", None)
    compiled = is_compiled(impl) or is_compiled(getattr(model, "forward", None))
    watch = {"denoiser": (model, "_compiled_call_impl")} if is_compiled(impl) else {}
    return int(compiled), 1, watch


def _regional_target(pipe: Any) -> tuple[int, int, dict[str, tuple[Any, str]]]:
    model = components.denoiser(pipe)
    names = set(getattr(model, "_repeated_blocks", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    compiled = [m for m in blocks if is_compiled(getattr(m, "_compiled_call_impl", None))]
    return len(compiled), len(blocks), {"denoiser": (model, "forward")}


def _vae_target(pipe: Any) -> tuple[int, int, dict[str, tuple[Any, str]]]:
    vae = getattr(pipe, "vae", None)
    compiled = vae is not None and is_compiled(vae.__dict__.get("decode"))
    return int(compiled), 1, {"vae": (vae, "decode")} if compiled else {}


def _compile_apply(mode: str | None, name: str) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        ctx.state[name] = dynamo_counts()
        model = components.denoiser(pipe)
        kwargs: dict[str, Any] = {"fullgraph": True}
        if mode:
            kwargs["mode"] = mode
        model.compile(**kwargs)
        if mode == "max-autotune":
            # Compilation happens at the first call: the flags must hold then, and only then.
            ctx.call_contexts.append(lambda: _inductor_flags(mode))
            ctx.note("inductor: " + ", ".join(f"{k}={v}" for k, v in GUIDE_INDUCTOR_FLAGS.items()))
        return pipe

    return apply


def channels_last_effect(pipe: Any) -> Effect:
    """Effect: the conv weights of the denoiser and the VAE are channels_last (1x1 kernels are
    left out: both layouts are the same for them)."""
    import torch

    parts: list[str] = []
    total = 0
    done = 0
    for name in (components.denoiser_name(pipe), "vae"):
        model = getattr(pipe, name, None)
        if model is None:
            continue
        weights = [
            m.weight
            for m in model.modules()
            if isinstance(m, torch.nn.Conv2d) and m.weight.dim() == 4 and m.weight.shape[2:].numel() > 1
        ]
        last = sum(1 for w in weights if w.is_contiguous(memory_format=torch.channels_last))
        parts.append(f"{name} {last}/{len(weights)}")
        total += len(weights)
        done += last
    line = "conv weights channels_last: " + ", ".join(parts)
    if not total:
        return Effect(False, "no conv layer with a kernel larger than 1x1: channels_last changes nothing")
    return Effect(done == total, line)


def register_all(registry: Registry) -> None:
    register = registry.register
    common = {"family": "compile", "builtin": True, "min_ssim": LOSSLESS_SSIM, "compiles": True}
    for name, (mode, requires, description) in COMPILE_MODES.items():
        register(
            name,
            requires=requires,
            stage=STAGE_COMPILE,
            exclusive="denoiser compile",
            default=name == "compile",
            description=description + " (fullgraph=True)",
            effect=_compile_effect(name, "denoiser", _denoiser_target),
            **common,
        )(_compile_apply(mode, name))

    @register(
        "compile-regional",
        stage=STAGE_COMPILE,
        exclusive="denoiser compile",
        description="compile_repeated_blocks(fullgraph=True): compiles the repeated block once, fast cold start",
        effect=_compile_effect("compile-regional", "repeated blocks", _regional_target),
        **common,
    )
    def compile_regional(pipe: Any, ctx: ApplyContext) -> Any:
        ctx.state["compile-regional"] = dynamo_counts()
        model = components.denoiser(pipe)
        if not getattr(model, "_repeated_blocks", None):
            raise ValueError(f"{type(model).__name__} declares no _repeated_blocks; use 'compile' instead")
        model.compile_repeated_blocks(fullgraph=True)
        return pipe

    @register(
        "compile-vae",
        stage=STAGE_COMPILE + 1,
        description="torch.compile of the VAE decode (fullgraph=True), in the mode of the denoiser compile",
        effect=_compile_effect("compile-vae", "VAE decode", _vae_target),
        **common,
    )
    def compile_vae(pipe: Any, ctx: ApplyContext) -> Any:
        import torch

        ctx.state["compile-vae"] = dynamo_counts()
        mode = compile_mode_of(ctx)
        kwargs: dict[str, Any] = {"fullgraph": True}
        if mode:
            kwargs["mode"] = mode
        pipe.vae.decode = torch.compile(pipe.vae.decode, **kwargs)
        if mode == "max-autotune" and not any(p.technique.name == "compile-max-autotune" for p in ctx.spec.parts):
            ctx.call_contexts.append(lambda: _inductor_flags(mode))
        return pipe

    @register(
        "channels-last",
        family="compile",
        builtin=True,
        min_ssim=LOSSLESS_SSIM,
        stage=STAGE_LAYOUT,
        default=True,
        families=("unet",),
        description="channels_last memory format for the UNet and the VAE",
        effect=channels_last_effect,
    )
    def channels_last(pipe: Any) -> Any:
        import torch

        components.denoiser(pipe).to(memory_format=torch.channels_last)
        if getattr(pipe, "vae", None) is not None:
            pipe.vae.to(memory_format=torch.channels_last)
        return pipe
