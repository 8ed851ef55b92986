"""cache-dit (``pip install cache-dit``): Dual Block Cache over a diffusers transformer pipeline, alone
or with its TaylorSeer calibrator, enabled through its public API:

    cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(...), calibrator_config=TaylorSeerCalibratorConfig())

DBCache runs the first ``Fn`` blocks of each step and, when their residual barely changed since the
last computed step (relative L1 below the threshold), reuses the cached residual for the other
blocks; TaylorSeer forecasts that residual instead of reusing it. Settings: F1B0 (one block computes
the decision, as cache-dit's own FLUX examples), the threshold (the argument, default 0.24: a tiny
preset's 8 steps change 0.16-0.27 from one to the next), warm-up steps a quarter of the call's.
The techniques are named after the method (``dbcache``, ``dbcache-taylorseer``); ``cache-*`` names are
diffusers' own caches.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from . import components
from .effects import Probe, call_once, counting, forward_calls, patched
from .registry import STAGE_CACHE, ApplyContext, Effect, Registry, Requirements

CACHE_DIT_SSIM = 0.80
THRESHOLD = 0.24
PACKAGE = ("cache-dit", "1.5.1")  # 1.5.0's TaylorSeer calibrator fails on Flux (AssertionError at enable_cache)
FULLGRAPH_COMPILES = ("compile", "compile-max-autotune", "compile-reduce-overhead")
UNTRACEABLE = (
    "cache-dit swaps the transformer's blocks with unittest.mock at each call, which fullgraph compilation of the "
    "whole transformer can't trace; compile-regional (the blocks only) composes"
)
BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "blocks", "layers")

VARIANTS = {
    # technique: (calibrated by TaylorSeer, description)
    "dbcache": (False, "cache-dit's DBCache (F1B0): reuse the other blocks' residual when the first barely changes"),
    "dbcache-taylorseer": (True, "cache-dit's DBCache (F1B0) with its TaylorSeer calibrator: forecast the residual"),
}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """cache-dit logs every adapter it matches at INFO and every config it does not find at WARNING."""
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name == "CACHE_DIT" or name.startswith("cache_dit")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def import_cache_dit() -> Any:
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")  # read once, when cache_dit is first imported
    import cache_dit

    return cache_dit


def threshold(ctx: ApplyContext) -> float:
    if ctx.argument is None:
        return THRESHOLD
    try:
        value = float(ctx.argument)
    except ValueError:
        raise ValueError(f"DBCache's argument is a threshold (dbcache=0.08), not {ctx.argument!r}") from None
    if not value > 0:
        raise ValueError(f"DBCache's residual diff threshold must be positive; got {ctx.argument!r}")
    return value


def blocks(model: Any) -> list[Any]:
    """The transformer's repeated blocks (the block lists cache-dit caches over)."""
    import torch

    found: list[Any] = []
    for name in BLOCK_LISTS:
        group = getattr(model, name, None)
        if isinstance(group, torch.nn.ModuleList):
            found += list(group)
    return found


def _apply(taylorseer: bool) -> Any:
    def apply(pipe: Any, ctx: ApplyContext) -> Any:
        cache_dit = import_cache_dit()
        steps = int(getattr(ctx.settings, "steps", None) or getattr(ctx.model, "steps", None) or 28)
        config = cache_dit.DBCacheConfig(
            Fn_compute_blocks=1,
            Bn_compute_blocks=0,
            residual_diff_threshold=threshold(ctx),
            max_warmup_steps=max(1, steps // 4),
            num_inference_steps=steps,
        )
        kwargs = {"calibrator_config": cache_dit.TaylorSeerCalibratorConfig()} if taylorseer else {}
        with quiet():
            cache_dit.enable_cache(pipe, cache_config=config, **kwargs)
        ctx.note(f"cache-dit DBCache F1B0, threshold {config.residual_diff_threshold:g}, "
                 f"{config.max_warmup_steps} warm-up steps" + (", TaylorSeer" if taylorseer else ""))  # fmt: skip
        return pipe

    return apply


def _effect(taylorseer: bool) -> Any:
    def effect(pipe: Any, probe: Probe) -> Effect:
        """Effect: cache-dit's adapter sits on the transformer and, during one call, some of its block
        runs were skipped (served from the cache); with TaylorSeer, the skipped ones were forecast."""
        label = components.denoiser_name(pipe)
        model = components.denoiser(pipe)
        if not getattr(model, "_is_cached", False):
            return Effect(False, f"cache-dit is not enabled on the {label} (no cached blocks)")
        repeated = blocks(model)
        if not repeated:
            return Effect(False, f"no repeated blocks found on the {label}")
        forecasts: list[Any] = []
        with contextlib.ExitStack() as stack:
            calls = stack.enter_context(forward_calls([model]))
            runs = stack.enter_context(forward_calls(repeated))
            if taylorseer:
                from cache_dit.caching.cache_contexts.calibrators.taylorseer import TaylorSeerCalibrator

                stack.enter_context(patched(TaylorSeerCalibrator, "approximate", counting(forecasts)))
            stack.enter_context(quiet())
            call_once(probe)
        full = len(calls) * len(repeated)
        skipped = full - len(runs)
        line = f"{skipped} of {full} block runs of the {label} served from the cache in one call ({len(calls)} steps)"
        if not calls:
            return Effect(False, f"the {label} was never called in one call")
        if skipped <= 0:
            return Effect(False, line + ": the cache never hit")
        if taylorseer:
            line += f"; {len(forecasts)} TaylorSeer forecasts"
            return Effect(bool(forecasts), line + ("" if forecasts else ": the calibrator never forecast"))
        return Effect(True, line)

    return effect


def register_all(registry: Registry) -> None:
    for name, (taylorseer, description) in VARIANTS.items():
        registry.register(
            name,
            family="caching",
            builtin=True,
            stage=STAGE_CACHE,
            min_ssim=CACHE_DIT_SSIM,
            exclusive="cache",
            default=True,
            argument="optional",
            argument_help="the residual diff threshold (default 0.24; cache-dit's FLUX examples use 0.08-0.12)",
            requires=Requirements(families=("transformer",), packages=(PACKAGE,)),
            conflicts=dict.fromkeys(FULLGRAPH_COMPILES, UNTRACEABLE),
            description=description,
            effect=_effect(taylorseer),
        )(_apply(taylorseer))
