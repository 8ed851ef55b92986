"""Memory techniques of the diffusers "Reduce memory usage" guide: VAE slicing and tiling,
CPU offloading (model, sequential, group), layerwise fp8 storage.

They trade speed for memory; their verdict is about memory and fidelity, and a slowdown
against fp32 is expected (a ``min_speedup`` gate makes no sense for them).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from . import components
from .effects import Probe, call_once, counting, forward_calls, patched, plural
from .precision import LOSSLESS_SSIM
from .registry import STAGE_MEMORY, ApplyContext, Effect, Registry, Requirements

LAYERWISE_FP8_SSIM = 0.85
OFFLOAD_GROUP = "offloading"
COMPILE_CONFLICT = "offloading hooks move weights at call time, which fullgraph compilation can't trace; drop one"


def _offload_conflicts() -> dict[str, str]:
    return {name: COMPILE_CONFLICT for name in ("compile", "compile-max-autotune", "compile-reduce-overhead")}


def _group_offload(pipe: Any, ctx: ApplyContext, offload_type: str) -> Any:
    import torch

    onload = torch.device(ctx.device)
    kwargs: dict[str, Any] = {
        "onload_device": onload,
        "offload_device": torch.device("cpu"),
        "offload_type": offload_type,
    }
    if offload_type == "block_level":
        kwargs["num_blocks_per_group"] = 1
    if ctx.device == "cuda":
        kwargs["use_stream"] = True
    for name, module in components.modules(pipe):
        if hasattr(module, "enable_group_offload"):
            module.enable_group_offload(**kwargs)
        else:  # transformers text encoders
            from diffusers.hooks import apply_group_offloading

            apply_group_offloading(module, **kwargs)
        ctx.note(f"{name}: group offload ({offload_type})")
    return pipe


def _batch(tensor: Any) -> int:
    shape = getattr(tensor, "shape", None)
    return int(shape[0]) if shape else 0


def vae_slicing_effect(pipe: Any, probe: Probe) -> Effect:
    """Effect: slicing is on and, during one call, a decode of N latents ran the decoder N times on
    one latent each."""
    vae = pipe.vae
    if not getattr(vae, "use_slicing", False):
        return Effect(False, f"{type(vae).__name__}.use_slicing is off")
    decodes: list[int] = []
    with (
        patched(vae, "decode", counting(decodes, lambda z, *a, **k: _batch(z))),
        forward_calls([vae.decoder], lambda module, args: _batch(args[0]) if args else 0) as runs,
    ):
        call_once(probe)
    largest = max(decodes, default=0)
    line = (
        f"slicing on; one call decoded {sum(decodes)} latents "
        f"in {len(runs)} decoder runs of batch {max(runs, default=0)}"
    )
    if largest < 2:
        return Effect(False, f"{line}: each decode holds {largest} image, nothing to slice (needs a batch of 2+)")
    return Effect(max(runs, default=0) == 1 and len(runs) >= largest, line)


def vae_tiling_effect(pipe: Any, probe: Probe) -> Effect:
    """Effect: tiling is on and, during one call, the tiled decode ran (decoder runs on tiles)."""
    vae = pipe.vae
    if not getattr(vae, "use_tiling", False):
        return Effect(False, f"{type(vae).__name__}.use_tiling is off")
    method = next((m for m in ("tiled_decode", "_tiled_decode") if hasattr(vae, m)), None)
    if method is None:
        return Effect(False, f"{type(vae).__name__} has no tiled decode")
    tiled: list[Any] = []
    with patched(vae, method, counting(tiled)), forward_calls([vae.decoder]) as runs:
        call_once(probe)
    tile = getattr(vae, "tile_sample_min_size", None)
    size = f" of {tile} px" if tile else ""
    line = f"tiling on; {plural(len(tiled), 'tiled decode')} ({len(runs)} decoder runs on tiles{size}) in one call"
    if not tiled:
        line = f"tiling on, but no decode was tiled in one call: the image is not larger than a tile{size}"
    return Effect(bool(tiled), line)


def _hooked(pipe: Any) -> list[tuple[str, Any, Any]]:
    """(component, module, accelerate hook) for every module of the pipeline's models with one."""
    found = []
    for name, model in components.modules(pipe):
        for module in model.modules():
            hook = getattr(module, "_hf_hook", None)
            if hook is not None:
                found.append((name, module, hook))
    return found


def _where(device: Any) -> str:
    return "the CPU" if str(device).startswith("cpu") else str(device)


def model_offload_effect(pipe: Any, probe: Probe) -> Effect:
    """Effect: accelerate's CpuOffload hooks sit on the models; during one call they onload them to
    the execution device, and after it every weight is back on the CPU."""
    hooks = [(name, module, hook) for name, module, hook in _hooked(pipe) if type(hook).__name__ == "CpuOffload"]
    if not hooks:
        return Effect(False, "no accelerate CpuOffload hook on any model of the pipeline")
    onloads: list[Any] = []
    with contextlib.ExitStack() as stack:
        for _, _, hook in hooks:
            stack.enter_context(patched(hook, "pre_forward", counting(onloads)))
        call_once(probe)
    device = getattr(hooks[0][2], "execution_device", "?")
    on_device = sorted(
        {name for name, module, _ in hooks for p in module.parameters() if not str(p.device).startswith("cpu")}
    )
    names = ", ".join(name for name, _, _ in hooks)
    line = f"CpuOffload hooks on {names}; {len(onloads)} onloads to {device} in one call"
    if on_device:
        return Effect(False, f"{line}, but {', '.join(on_device)} still on {device} after it")
    note = " (the execution device is the CPU: nothing moves)" if _where(device) == "the CPU" else ""
    return Effect(bool(onloads), f"{line}, all weights on the CPU after it{note}")


def sequential_offload_effect(pipe: Any) -> Effect:
    """Effect: accelerate's offloading AlignDevicesHook sits on the models' modules and, after the
    calls, their weights are off the compute device (on the meta device, the CPU copy in the hook)."""
    hooks = [(n, m, h) for n, m, h in _hooked(pipe) if getattr(h, "offload", False)]
    if not hooks:
        return Effect(False, "no accelerate offloading hook (AlignDevicesHook offload=True) on any module")
    devices = Counter(str(p.device) for _, m, _ in hooks for p in m.parameters(recurse=False))
    execution = getattr(hooks[0][2], "execution_device", "?")
    compute = str(execution).split(":")[0]
    off = sum(count for device, count in devices.items() if device == "meta" or device.split(":")[0] != compute)
    components_hooked = sorted({n for n, _, _ in hooks})
    line = (
        f"offloading hooks on {len(hooks)} modules of {', '.join(components_hooked)}; "
        f"{off}/{sum(devices.values())} of their weights off {execution} ({', '.join(sorted(devices))})"
    )
    return Effect(off == sum(devices.values()) and off > 0, line)


GROUP_HOOK = "group_offloading"  # diffusers.hooks.group_offloading._GROUP_OFFLOADING


def group_offload_effect(pipe: Any, probe: Probe) -> Effect:
    """Effect: diffusers' group-offloading hooks sit on the models and, during one call, their
    groups were onloaded and offloaded."""
    groups: dict[int, Any] = {}
    hooked: set[str] = set()
    for name, model in components.modules(pipe):
        for module in model.modules():
            registry = getattr(module, "_diffusers_hook", None)
            hook = registry.get_hook(GROUP_HOOK) if registry is not None else None
            group = getattr(hook, "group", None)
            if group is not None:
                groups[id(group)] = group
                hooked.add(name)
    if not groups:
        return Effect(False, "no diffusers group-offloading hook on any model of the pipeline")
    onloads: list[Any] = []
    offloads: list[Any] = []
    with contextlib.ExitStack() as stack:
        for group in groups.values():
            stack.enter_context(patched(group, "onload_", counting(onloads)))
            stack.enter_context(patched(group, "offload_", counting(offloads)))
        call_once(probe)
    first = next(iter(groups.values()))
    line = (
        f"group offloading on {', '.join(sorted(hooked))}: {len(groups)} groups; "
        f"{len(onloads)} onloads and {len(offloads)} offloads in one call"
    )
    onload, offload = _where(first.onload_device), _where(first.offload_device)
    if onload == offload:
        line += f" (onload and offload devices are both {onload})"
    return Effect(bool(onloads) and bool(offloads), line)


def layerwise_effect(pipe: Any, probe: Probe) -> Effect:
    """Effect: the denoiser's eligible layers store float8 weights and are upcast while they run."""
    import torch

    name = components.denoiser_name(pipe)
    model = components.denoiser(pipe)
    supported: tuple[type, ...] = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
    with contextlib.suppress(ImportError):  # the layers diffusers casts, where it names them
        from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS

        supported = tuple(_GO_LC_SUPPORTED_PYTORCH_LAYERS)
    layers = [m for m in model.modules() if isinstance(m, supported)]
    fp8 = [m for m in layers if getattr(getattr(m, "weight", None), "dtype", None) is torch.float8_e4m3fn]
    line = f"{len(fp8)}/{len(layers)} conv/linear layers of the {name} store float8_e4m3fn"
    hooks = []
    for module in fp8:
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook("layerwise_casting") if registry is not None else None
        if hook is not None and getattr(hook, "fn_ref", None) is not None:
            hooks.append((module, hook))
    if not fp8:
        return Effect(False, line)
    if not hooks:
        return Effect(False, line + "; no layerwise-casting hook on them")
    upcast: list[bool] = []

    def weight_in(module: Any, dtype: Any) -> Any:
        return lambda *args, **kwargs: module.weight.dtype == dtype  # read while the layer runs

    with contextlib.ExitStack() as stack:
        for module, hook in hooks:
            stack.enter_context(
                patched(hook.fn_ref, "forward", counting(upcast, weight_in(module, hook.compute_dtype)))
            )
        call_once(probe)
    compute = str(hooks[0][1].compute_dtype).removeprefix("torch.")
    line += f"; upcast to {compute} in {sum(upcast)}/{len(upcast)} of their calls in one call"
    return Effect(bool(upcast) and all(upcast), line)


def register_all(registry: Registry) -> None:
    register = registry.register
    common = {"family": "memory", "builtin": True, "stage": STAGE_MEMORY}

    @register(
        "vae-slicing",
        effect=vae_slicing_effect,
        min_ssim=LOSSLESS_SSIM,
        default=True,
        description="decode the batch one image at a time (vae.enable_slicing())",
        **common,
    )
    def vae_slicing(pipe: Any) -> Any:
        pipe.vae.enable_slicing()
        return pipe

    @register(
        "vae-tiling",
        effect=vae_tiling_effect,
        min_ssim=0.90,
        default=True,
        description="decode in overlapping tiles (vae.enable_tiling()); tiny presets use tiles small enough to tile",
        **common,
    )
    def vae_tiling(pipe: Any, ctx: ApplyContext) -> Any:
        vae = pipe.vae
        vae.enable_tiling()
        tile = getattr(ctx.model, "vae_tile", None)
        if tile and hasattr(vae, "tile_sample_min_size"):
            # the default tile is the model's sample size, which tiles nothing at a tiny preset's size
            vae.tile_sample_min_size = tile
            vae.tile_latent_min_size = tile // getattr(ctx.model, "vae_scale", 8)
            ctx.note(f"tile {tile} px")
        return pipe

    @register(
        "model-offload",
        effect=model_offload_effect,
        min_ssim=LOSSLESS_SSIM,
        requires=Requirements(accelerator=True),
        exclusive=OFFLOAD_GROUP,
        description="enable_model_cpu_offload(): each model moves to the GPU only while it runs",
        **common,
    )
    def model_offload(pipe: Any, ctx: ApplyContext) -> Any:
        pipe.enable_model_cpu_offload(device=ctx.device)
        return pipe

    @register(
        "sequential-offload",
        effect=sequential_offload_effect,
        min_ssim=LOSSLESS_SSIM,
        requires=Requirements(accelerator=True),
        exclusive=OFFLOAD_GROUP,
        conflicts=_offload_conflicts(),
        description="enable_sequential_cpu_offload(): each layer moves to the GPU only while it runs (least memory)",
        **common,
    )
    def sequential_offload(pipe: Any, ctx: ApplyContext) -> Any:
        pipe.enable_sequential_cpu_offload(device=ctx.device)
        return pipe

    @register(
        "group-offload-block",
        effect=group_offload_effect,
        min_ssim=LOSSLESS_SSIM,
        exclusive=OFFLOAD_GROUP,
        conflicts=_offload_conflicts(),
        default=True,
        description="enable_group_offload(offload_type='block_level', num_blocks_per_group=1), CUDA streams on GPU",
        **common,
    )
    def group_offload_block(pipe: Any, ctx: ApplyContext) -> Any:
        return _group_offload(pipe, ctx, "block_level")

    @register(
        "group-offload-leaf",
        effect=group_offload_effect,
        min_ssim=LOSSLESS_SSIM,
        exclusive=OFFLOAD_GROUP,
        conflicts=_offload_conflicts(),
        default=True,
        description="enable_group_offload(offload_type='leaf_level'), CUDA streams on GPU",
        **common,
    )
    def group_offload_leaf(pipe: Any, ctx: ApplyContext) -> Any:
        return _group_offload(pipe, ctx, "leaf_level")

    @register(
        "layerwise-fp8",
        effect=layerwise_effect,
        min_ssim=LAYERWISE_FP8_SSIM,
        default=True,
        description="enable_layerwise_casting(storage_dtype=float8_e4m3fn): fp8 weights in memory, upcast per layer",
        **common,
    )
    def layerwise_fp8(pipe: Any) -> Any:
        import torch

        model = components.denoiser(pipe)
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=model.dtype)
        return pipe
