"""Effect checks: did each technique of a spec take effect on the pipeline that was timed?

A technique that silently does nothing (a cache that never hits, a compile that fell back to
eager, a fusion that is not used) must fail "not applied", not pass. Each built-in technique
declares an effect function beside its apply (in its family module); this module runs them
(:func:`check_effects`), summarises them (:func:`summary`) and holds the small instruments they
share: patch-and-restore, call counters, one probe call, the compiled regions run in a call.

An effect observes the real thing (module classes, hooks installed, parameter dtypes and
devices, torchao tensor subclasses, dynamo counters, what ran during one probe call), never a
flag a library sets before doing the work. No torch import at module level.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .registry import ApplyContext, Effect, Spec

NOT_CHECKED = Effect(True, "effect not checked", checked=False)


@dataclass
class Probe:
    """What an effect check may use beyond the pipeline: the apply context (``ctx.state`` holds what
    the apply stashed) and ``run_call``, which runs ONE untimed generation call of the pipeline
    under test with the technique's call contexts and returns the pipeline output."""

    ctx: ApplyContext
    run_call: Callable[[], Any]
    device: str


def check_effects(spec: Spec, pipe: Any, probe: Probe) -> list[tuple[str, Effect]]:
    """One (part label, Effect) per part of ``spec``, in the spec's order. A part without an effect
    function is "effect not checked"; an effect function that raises gives applied=False."""
    results: list[tuple[str, Effect]] = []
    saved = probe.ctx.argument
    try:
        for part in spec.parts:
            probe.ctx.argument = part.argument
            if part.technique.effect is None:
                effect = NOT_CHECKED
            else:
                try:
                    effect = part.technique.check(pipe, probe)
                except Exception as error:  # the check's own failure is a finding, not a crash
                    effect = Effect(False, f"effect check raised {_one_line(error)}")
            results.append((part.label, effect))
    finally:
        probe.ctx.argument = saved
    return results


def summary(effects: Sequence[tuple[str, Effect]]) -> str:
    """One line for a table: the absent effects first; otherwise every part's line."""
    if not effects:
        return "effect not checked"
    absent = [(label, e) for label, e in effects if not e.applied]
    if absent:
        return "NOT APPLIED " + "; ".join(f"{label}: {e.line}" for label, e in absent)
    if all(not e.checked for _, e in effects):
        return "effect not checked"
    if len(effects) == 1:
        return effects[0][1].line
    return "; ".join(f"{label}: {e.line}" for label, e in effects)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


# ----------------------------------------------------------------------------- instruments


@contextlib.contextmanager
def patched(obj: Any, name: str, wrap: Callable[[Any], Any]) -> Iterator[None]:
    """Replace ``obj.name`` by ``wrap(original)`` for the duration; restore it exactly (an instance
    attribute that was absent is deleted again, so the class attribute shows through)."""
    own = name in getattr(obj, "__dict__", {})
    previous = obj.__dict__[name] if own else None
    original = getattr(obj, name)
    setattr(obj, name, wrap(original))
    try:
        yield
    finally:
        if own:
            setattr(obj, name, previous)
        else:
            with contextlib.suppress(AttributeError):
                delattr(obj, name)


def counting(calls: list[Any], record: Callable[..., Any] | None = None) -> Callable[[Any], Any]:
    """A ``wrap`` for :func:`patched`: appends ``record(*args, **kwargs)`` (or None) to ``calls``."""

    def wrap(original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(record(*args, **kwargs) if record is not None else None)
            return original(*args, **kwargs)

        return wrapper

    return wrap


@contextlib.contextmanager
def forward_calls(
    modules: Sequence[Any], record: Callable[[Any, tuple[Any, ...]], Any] | None = None
) -> Iterator[list[Any]]:
    """Count the calls of ``modules`` (torch forward pre-hooks, removed on exit); yields the list of
    ``record(module, args)`` values (or the modules)."""
    calls: list[Any] = []
    handles = [
        m.register_forward_pre_hook(lambda mod, args: calls.append(record(mod, args) if record else mod))
        for m in modules
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def call_once(probe: Probe, *, eager: bool = True) -> Any:
    """One probe call. ``eager``: compiled code runs eagerly (torch.compiler.set_stance), so that the
    instruments patched in for it observe every call and no guard fails into a recompilation."""
    import torch

    stance = getattr(torch.compiler, "set_stance", None)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())  # as the timed calls run: no guard fails on it
        if eager and stance is not None:
            stack.enter_context(stance("force_eager"))
        return probe.run_call()


def compiled_regions(probe: Probe, targets: dict[str, tuple[Any, str]]) -> dict[str, int]:
    """Compiled graphs run inside each target during one (compiled) probe call.

    ``targets``: label -> (object, attribute) of the callable to watch (``model._compiled_call_impl``,
    ``vae.decode``, ``model.forward``). Each is wrapped in a profiler range for the call; dynamo
    annotates each run of compiled code as "Torch-Compiled Region", counted under that range.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    def ranged(label: str) -> Callable[[Any], Any]:
        def wrap(original: Any) -> Any:
            @functools.wraps(original)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with record_function(f"diffaccel:{label}"):
                    return original(*args, **kwargs)

            return wrapper

        return wrap

    with contextlib.ExitStack() as stack:
        for label, (obj, name) in targets.items():
            stack.enter_context(patched(obj, name, ranged(label)))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call_once(probe, eager=False)
    counts = dict.fromkeys(targets, 0)
    for event in prof.events():
        if not event.name.startswith("Torch-Compiled Region"):
            continue
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("diffaccel:"):
                label = parent.name.removeprefix("diffaccel:")
                if label in counts:
                    counts[label] += 1
                break
            parent = parent.cpu_parent
    return counts


def plural(count: int, word: str) -> str:
    """``3 graphs``, ``1 graph``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def millions(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e5 else f"{count / 1e3:.1f}K"
