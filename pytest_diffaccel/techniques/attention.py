"""Attention: the SDPA backends, diffusers' attention dispatch backends, xFormers, attention slicing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import components
from .effects import Probe, call_once, counting, patched
from .precision import LOSSLESS_SSIM
from .registry import STAGE_ATTENTION, ApplyContext, Effect, Registry, Requirements

SDPA_BACKENDS = {
    "sdpa-flash": ("FLASH_ATTENTION", Requirements(), "FlashAttention kernel of scaled_dot_product_attention"),
    "sdpa-efficient": (
        "EFFICIENT_ATTENTION",
        Requirements(cuda=True),
        "memory-efficient (xFormers-style) kernel of scaled_dot_product_attention",
    ),
    "sdpa-math": ("MATH", Requirements(), "the reference math kernel of scaled_dot_product_attention"),
    "sdpa-cudnn": (
        "CUDNN_ATTENTION",
        Requirements(cuda=True, min_capability=(8, 0)),
        "cuDNN kernel of scaled_dot_product_attention",
    ),
}


def _sdpa_apply(backend_name: str) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, backend_name)
        # Only the denoiser is constrained: the text encoder's masked attention and the VAE's
        # single 512-wide head (flash takes at most 256) may have no kernel in the chosen backend.
        components.wrap_method(components.denoiser(pipe), "forward", lambda: sdpa_kernel([backend]))
        return pipe

    return apply


def sdpa_enabled() -> tuple[str, ...]:
    """The SDPA backends torch would pick from right now (what ``sdpa_kernel`` restricts)."""
    import torch

    flags = {
        "FLASH_ATTENTION": "flash_sdp_enabled",
        "EFFICIENT_ATTENTION": "mem_efficient_sdp_enabled",
        "MATH": "math_sdp_enabled",
        "CUDNN_ATTENTION": "cudnn_sdp_enabled",
    }
    return tuple(name for name, fn in flags.items() if getattr(torch.backends.cuda, fn, lambda: False)())


def _sdpa_effect(backend_name: str) -> Any:
    def effect(pipe: Any, probe: Probe) -> Effect:
        """Effect: during one call, the denoiser calls scaled_dot_product_attention and only the
        technique's backend is enabled inside those calls."""
        import torch.nn.functional as F

        name = components.denoiser_name(pipe)
        inside: list[bool] = []
        states: list[tuple[str, ...]] = []

        def enter(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                inside.append(True)
                try:
                    return original(*args, **kwargs)
                finally:
                    inside.pop()

            return wrapper

        def record(*args: Any, **kwargs: Any) -> None:
            if inside:
                states.append(sdpa_enabled())

        with (
            patched(components.denoiser(pipe), "forward", enter),
            patched(F, "scaled_dot_product_attention", counting([], record)),
        ):
            call_once(probe)
        if not states:
            return Effect(False, f"the {name} called scaled_dot_product_attention 0 times in one call")
        only = sum(1 for state in states if state == (backend_name,))
        if only == len(states):
            return Effect(True, f"{len(states)}/{len(states)} SDPA calls of the {name} ran with only {backend_name}")
        other = next(state for state in states if state != (backend_name,))
        return Effect(
            False,
            f"{only}/{len(states)} SDPA calls of the {name} restricted to {backend_name} "
            f"(enabled inside: {', '.join(other) or 'none'})",
        )

    return effect


def _processors(pipe: Any) -> dict[str, Any]:
    model = components.denoiser(pipe)
    return dict(getattr(model, "attn_processors", None) or {})


def _processor_effect(kind: str, label: str) -> Any:
    def effect(pipe: Any, probe: Probe | None = None) -> Effect:
        """Effect: the denoiser's attention processors are ``kind`` ones (and, given a probe, they ran)."""
        name = components.denoiser_name(pipe)
        processors = _processors(pipe)
        if not processors:
            return Effect(False, f"the {name} exposes no attention processors")
        chosen = [p for p in processors.values() if kind in type(p).__name__]
        if kind == "Sliced":
            chosen = [p for p in chosen if getattr(p, "slice_size", None)]
        classes = sorted({type(p).__name__ for p in chosen}) or sorted({type(p).__name__ for p in processors.values()})
        line = f"{len(chosen)}/{len(processors)} attention processors of the {name} {label} ({', '.join(classes)})"
        if kind == "Sliced" and chosen:
            sizes = sorted({int(p.slice_size) for p in chosen})
            line += f", slice size {'/'.join(map(str, sizes))}"
        if not chosen or probe is None:
            return Effect(bool(chosen), line)
        calls: list[Any] = []
        with contextlib.ExitStack() as stack:
            for cls in {type(p) for p in chosen}:
                stack.enter_context(patched(cls, "__call__", counting(calls)))
            call_once(probe)
        return Effect(bool(calls), f"{line}; {len(calls)} of their calls in one call")

    return effect


def attn_backend_effect(pipe: Any, probe: Probe) -> Effect:
    """Effect: the denoiser's attention processors dispatch to the chosen diffusers backend, and
    that backend's function ran during one call."""
    from diffusers.models import attention_dispatch

    wanted = attention_dispatch.AttentionBackendName(probe.ctx.argument)
    name = components.denoiser_name(pipe)
    model = components.denoiser(pipe)
    attention = [m for m in model.modules() if getattr(m, "processor", None) is not None]
    dispatched = [m for m in attention if hasattr(m.processor, "_attention_backend")]
    chosen = [m for m in dispatched if m.processor._attention_backend == wanted]
    line = f"{len(chosen)}/{len(attention)} attention processors of the {name} dispatch to {wanted.value}"
    if not chosen:
        plain = sorted({type(m.processor).__name__ for m in attention if m not in dispatched})
        why = f" ({', '.join(plain)} don't go through diffusers' dispatcher)" if plain else ""
        return Effect(False, line + why)
    backends = attention_dispatch._AttentionBackendRegistry._backends
    calls: list[Any] = []
    with patched_item(backends, wanted, counting(calls)):
        call_once(probe)
    return Effect(bool(calls), f"{line}; {len(calls)} {wanted.value} attention calls in one call")


@contextlib.contextmanager
def patched_item(mapping: dict[Any, Any], key: Any, wrap: Any) -> Iterator[None]:
    original = mapping[key]
    mapping[key] = wrap(original)
    try:
        yield
    finally:
        mapping[key] = original


def register_all(registry: Registry) -> None:
    register = registry.register
    common = {"family": "attention", "stage": STAGE_ATTENTION, "builtin": True, "min_ssim": LOSSLESS_SSIM}
    for name, (backend, requires, description) in SDPA_BACKENDS.items():
        register(
            name,
            requires=requires,
            exclusive="attention kernel",
            default=True,
            description=f"{description} (torch.nn.attention.sdpa_kernel around the denoiser)",
            effect=_sdpa_effect(backend),
            **common,
        )(_sdpa_apply(backend))

    @register(
        "attn-backend",
        argument="required",
        argument_help="a diffusers attention backend, e.g. attn-backend=_native_flash or attn-backend=flash",
        exclusive="attention kernel",
        requires=Requirements(attribute=("diffusers.models.attention_dispatch", "AttentionBackendName")),
        description="diffusers' set_attention_backend(...) on the denoiser (transformer models use its dispatcher)",
        effect=attn_backend_effect,
        **common,
    )
    def attn_backend(pipe: Any, ctx: ApplyContext) -> Any:
        from diffusers.models.attention_dispatch import AttentionBackendName

        known = [b.value for b in AttentionBackendName]
        if ctx.argument not in known:
            raise ValueError(f"attn-backend={ctx.argument}: unknown backend; diffusers knows {', '.join(known)}")
        model = components.denoiser(pipe)
        if not hasattr(model, "set_attention_backend"):
            raise ValueError(f"{type(model).__name__} has no set_attention_backend; upgrade diffusers")
        from diffusers.models.attention_dispatch import _AttentionBackendRegistry

        active = _AttentionBackendRegistry._active_backend
        try:
            model.set_attention_backend(ctx.argument)
        finally:
            # diffusers also makes it the process-wide default, which would reach every later pipeline
            # (the fp32 reference included); the processors keep their own backend.
            _AttentionBackendRegistry._active_backend = active
        return pipe

    @register(
        "xformers",
        requires=Requirements(cuda=True, packages=(("xformers", "0.0.20"),)),
        exclusive="attention kernel",
        default=True,
        description="xFormers memory-efficient attention (enable_xformers_memory_efficient_attention)",
        effect=_processor_effect("XFormers", "use xFormers"),
        **common,
    )
    def xformers(pipe: Any) -> Any:
        pipe.enable_xformers_memory_efficient_attention()
        return pipe

    @register(
        "attention-slicing",
        exclusive="attention kernel",
        default=True,
        description="attention computed in slices (enable_attention_slicing): less memory, usually slower",
        effect=_processor_effect("Sliced", "sliced"),
        **common,
    )
    def attention_slicing(pipe: Any) -> Any:
        pipe.enable_attention_slicing()
        return pipe
