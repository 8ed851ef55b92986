"""The search space: which techniques may be combined, in which choice groups, and the candidates.

A choice group is a technique's ``exclusive`` group (precision, attention kernel, denoiser compile,
weight quantization, cache, offloading...): a candidate takes at most one option of it. Weight
quantization is one choice across backends (torchao, optimum-quanto, GGUF, bitsandbytes): a
weight is quantized by one of them at a time; ``quantization`` in a space names them all. A technique
without a group is a group of its own: on or off. fp32 is the "none" of the precision group, so the
empty combination is the ``fp32`` candidate. Every candidate is built with the registry's ``+``
rules and must pass ``registry.parse`` (exclusive groups, conflicts) and the environment's
requirements (``unmet``); one that does not is never tried.

No torch import here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..techniques.registry import Environment, Registry, Spec, SpecError, Technique, unmet

REFERENCE = "fp32"
# Techniques that only exist to save memory, at a large speed cost: left out of the default space
# (and out of a family named in the space) unless the space names them. The "memory" family is all such.
MEMORY_FAMILY = "memory"
MEMORY_SAVERS = frozenset({"attention-slicing"})
# Techniques that serve one model family the space can't tell from the environment (diffusers' text K/V
# cache hooks NucleusMoE-Image blocks only): left out unless the space names them.
NARROW = frozenset({"cache-text-kv"})


@dataclass(frozen=True)
class Option:
    """One choice of a group: a technique with its argument, if any."""

    technique: str
    argument: str | None = None
    group: str = ""
    stage: int = 0

    @property
    def label(self) -> str:
        return f"{self.technique}={self.argument}" if self.argument else self.technique


@dataclass(frozen=True)
class Choice:
    """A choice group: at most one of ``options`` (none of them is a choice too)."""

    group: str
    options: tuple[Option, ...]


def is_memory_saver(technique: Technique) -> bool:
    return technique.family == MEMORY_FAMILY or technique.name in MEMORY_SAVERS


def _group_of(technique: Technique) -> str:
    return technique.exclusive or technique.name


def _named(registry: Registry, token: str) -> list[tuple[Technique, str | None, bool]]:
    """What one space token names: (technique, argument, named explicitly). A technique name wins
    over a family of the same name (``compile`` is the technique; ``denoiser-compile`` the group)."""
    name, sep, argument = token.partition("=")
    name = name.strip()
    technique = registry.techniques.get(name)
    if technique is not None:
        return [(technique, argument.strip() if sep else None, True)]
    if sep:
        raise SpecError(f"search space: unknown technique {name!r} in {token!r}")
    key = name.replace("-", " ")
    family = [t for t in registry.techniques.values() if t.family == name]
    group = [t for t in registry.techniques.values() if t.exclusive and t.exclusive == key]
    found = family or group
    if not found:
        families = sorted({t.family for t in registry.techniques.values()})
        groups = sorted({t.exclusive.replace(" ", "-") for t in registry.techniques.values() if t.exclusive})
        raise SpecError(
            f"search space: {token!r} is neither a technique, a family ({', '.join(families)}) nor a choice group "
            f"({', '.join(groups)})"
        )
    explicit = name == MEMORY_FAMILY
    return [(t, None, explicit) for t in found]


def selected(registry: Registry, space: Sequence[str] | None = None) -> list[tuple[Technique, str | None]]:
    """The techniques (with arguments) the space names; every technique when ``space`` is None, less the
    memory savers. Techniques needing an argument are kept only when named with it."""
    named: list[tuple[Technique, str | None, bool]]
    if space is None:
        named = [(t, None, False) for t in registry.techniques.values()]
    else:
        named = [entry for token in space if token.strip() for entry in _named(registry, token.strip())]
    chosen: dict[tuple[str, str | None], Technique] = {}
    for technique, argument, explicit in named:
        if technique.name == REFERENCE:
            continue
        if (is_memory_saver(technique) or technique.name in NARROW) and not explicit:
            continue
        if technique.argument == "required" and argument is None:
            continue
        if technique.argument == "none" and argument is not None:
            raise SpecError(f"search space: technique {technique.name!r} takes no argument")
        chosen.setdefault((technique.name, argument), technique)
    return [(t, argument) for (_, argument), t in chosen.items()]


def choices(registry: Registry, environment: Environment, space: Sequence[str] | None = None) -> list[Choice]:
    """The choice groups of the space, each holding the options this environment can run, in stage order."""
    groups: dict[str, list[Option]] = {}
    for technique, argument in selected(registry, space):
        if unmet(technique.requires, environment):
            continue
        option = Option(technique.name, argument, _group_of(technique), technique.stage)
        groups.setdefault(option.group, []).append(option)
    ordered = sorted(groups.items(), key=lambda item: (min(o.stage for o in item[1]), item[0]))
    return [Choice(group, tuple(options)) for group, options in ordered]


def spec_text(options: Iterable[Option]) -> str:
    """The canonical spec of a combination: its parts in stage order; ``fp32`` when empty."""
    ordered = sorted(options, key=lambda o: (o.stage, o.label))
    return "+".join(o.label for o in ordered) or REFERENCE


def compose(registry: Registry, environment: Environment, options: Iterable[Option]) -> Spec | str:
    """The spec of a combination, or why it can't be a candidate (a SpecError, an unmet requirement)."""
    text = spec_text(options)
    try:
        spec = registry.parse(text)
    except SpecError as error:
        return str(error)
    reasons = unmet(spec.requirements, environment)
    return f"{text}: " + "; ".join(reasons) if reasons else spec


def iter_candidates(registry: Registry, environment: Environment, space: Sequence[str] | None = None) -> Iterator[Spec]:
    """Every valid combination, lazily: at most one option per choice group."""
    groups = choices(registry, environment, space)
    for picked in itertools.product(*[(None, *c.options) for c in groups]):
        spec = compose(registry, environment, [o for o in picked if o is not None])
        if not isinstance(spec, str):
            yield spec


def candidates(
    registry: Registry, environment: Environment, space: Sequence[str] | None = None, limit: int | None = None
) -> list[Spec]:
    """The valid combinations of the space (fp32 and the single techniques first). ``limit`` stops the
    enumeration early: the product space grows fast; the search itself never enumerates it."""
    found = list(itertools.islice(iter_candidates(registry, environment, space), limit))
    return sorted(found, key=lambda s: (0 if s.is_reference else len(s.parts), s.name))
