"""SeaCache on Flux, through its generic path (diffusers 0.42).

SeaCache gates on the scheduler's position (step index, sigma, step count), which a pipeline hands
to ``transformer.cache_context(name, step_index=..., sigma=..., num_inference_steps=...)``, and on
spectrally filtered latents a ``raw_vision_callback`` extracts from the transformer's call. diffusers
wires both for Wan and Cosmos 3; FluxPipeline enters ``cache_context("cond")`` with neither, and
SeaCache then runs "fail-open": it never reuses anything. :func:`sea_adapter` supplies both for a
Flux transformer: the position from the pipeline's scheduler and current timestep, the latents
unpacked from the packed sequence by ``img_ids``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import components

SEA_NATIVE = ("WanTransformer3DModel", "Cosmos3OmniTransformer")  # their pipelines pass the scheduler's position


def flux_latents(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any] | None:
    """SeaCache's ``raw_vision_callback`` for Flux: the packed latents (B, H*W, C) of the call, unpacked
    to one (C, 1, H, W) latent per image by the positions in ``img_ids``."""
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    ids = kwargs.get("img_ids")
    if hidden is None or ids is None or hidden.ndim != 3:
        return None
    height, width = int(ids[..., 1].max()) + 1, int(ids[..., 2].max()) + 1
    if height * width != hidden.shape[1]:
        return None
    return [x.reshape(height, width, -1).permute(2, 0, 1).unsqueeze(1) for x in hidden]


def sea_adapter(pipe: Any) -> Any:
    """What SeaCache's generic path needs from a pipeline that doesn't hand it over: on Flux, the latent
    callback, and ``cache_context`` entered with the scheduler's step index, sigma and step count (the
    Wan pipeline passes them itself). None for the models diffusers adapts natively."""
    model = components.denoiser(pipe)
    kind = type(model).__name__
    if kind in SEA_NATIVE:
        return None
    if kind != "FluxTransformer2DModel":
        raise ValueError(
            f"SeaCache needs the scheduler's position and the latents of each call: diffusers wires them for "
            f"{' and '.join(SEA_NATIVE)}, this plugin for FluxTransformer2DModel; {kind} has neither"
        )
    original = model.cache_context

    @contextlib.contextmanager
    def cache_context(name: str, **kwargs: Any) -> Iterator[None]:
        timestep = getattr(pipe, "_current_timestep", None)
        scheduler = pipe.scheduler
        if timestep is not None and "step_index" not in kwargs and hasattr(scheduler, "sigmas"):
            timesteps = scheduler.timesteps
            index = int((timesteps - timestep.to(timesteps.device)).abs().argmin())
            kwargs.update(step_index=index, sigma=float(scheduler.sigmas[index]), num_inference_steps=len(timesteps))
        with original(name, **kwargs):
            yield

    model.cache_context = cache_context
    return flux_latents
