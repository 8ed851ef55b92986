"""The technique registry: named transforms of a fresh pipeline, their needs, and ``+`` composition.

A technique is a function that takes a fresh pipeline (and, for built-ins, an
:class:`ApplyContext`) and returns it accelerated. It declares what it needs (CUDA, a
compute capability, a library version, a pipeline family) so that a test is skipped, with
that reason, where the device or the model can't run it. Specs join names with ``+``;
``name=argument`` passes an argument (``tiny-vae=madebyollin/taesdxl``).

No torch import here: parsing and validation run at configure time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

# Application order: a spec's parts are applied by stage, whatever order the user wrote.
STAGE_PRECISION = 10
STAGE_SWAP = 20
STAGE_ATTENTION = 30
STAGE_FUSE = 40
STAGE_QUANTIZE = 50
STAGE_LAYOUT = 60
STAGE_CACHE = 70
STAGE_COMPILE = 80
STAGE_MEMORY = 90
STAGE_USER = 55

FAMILIES = ("unet", "transformer")


class SpecError(ValueError):
    """A technique spec that can't be parsed or can't work; the message says why and what to do."""


@dataclass(frozen=True)
class Requirements:
    """What a technique needs. Each unmet need becomes a skip reason."""

    cuda: bool = False
    accelerator: bool = False  # needs any accelerator (diffusers' offloading), CUDA in practice
    min_capability: tuple[int, int] | None = None
    packages: tuple[tuple[str, str], ...] = ()  # (distribution, minimum version)
    families: tuple[str, ...] = ()  # denoiser families it applies to; empty: any
    attribute: tuple[str, str] | None = None  # (import path, attribute) that must exist
    note: str = ""

    def merged(self, other: Requirements) -> Requirements:
        caps = [c for c in (self.min_capability, other.min_capability) if c is not None]
        families: tuple[str, ...]
        if self.families and other.families:
            families = tuple(f for f in self.families if f in other.families) or ("none",)
        else:
            families = self.families or other.families
        return Requirements(
            cuda=self.cuda or other.cuda,
            accelerator=self.accelerator or other.accelerator,
            min_capability=max(caps) if caps else None,
            packages=tuple(dict.fromkeys(self.packages + other.packages)),
            families=families,
            attribute=self.attribute or other.attribute,
        )

    def describe(self) -> str:
        needs = []
        if self.cuda or self.accelerator:
            needs.append("CUDA")
        if self.min_capability:
            needs.append(f"compute capability >= {self.min_capability[0]}.{self.min_capability[1]}")
        needs += [f"{name}>={version}" if version else name for name, version in self.packages]
        if self.families:
            needs.append(" or ".join(f"{f} pipelines" for f in self.families))
        if self.attribute:
            needs.append(f"{self.attribute[0]}.{self.attribute[1]}")
        return ", ".join(needs) or "nothing"


@dataclass(frozen=True)
class Environment:
    """What the session offers, for requirement checks. Built by the plugin, no torch needed here."""

    device: str  # "cpu" or "cuda"
    capability: tuple[int, int] | None = None
    versions: Mapping[str, str | None] = field(default_factory=dict)  # distribution -> version or None
    family: str | None = None  # "unet" or "transformer", None before the model is known
    attributes: Mapping[tuple[str, str], bool] = field(default_factory=dict)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def installed_version(name: str) -> str | None:
    """The installed version of a distribution, read from its metadata (nothing is imported); None if absent."""
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def unmet(requirements: Requirements, env: Environment) -> list[str]:
    """The reasons this environment can't run a technique with these requirements (empty: it can).

    A package the environment's versions don't name (they hold the libraries of its fingerprint) is
    looked up in the installed distributions' metadata: optimum-quanto, gguf, cache-dit..."""
    reasons: list[str] = []
    if (requirements.cuda or requirements.accelerator) and env.device != "cuda":
        reasons.append("needs CUDA (run with --diffaccel-gpu on a GPU machine)")
    capability = requirements.min_capability
    if capability and env.device == "cuda" and env.capability is not None and env.capability < capability:
        need = ".".join(map(str, capability))
        have = ".".join(map(str, env.capability))
        reasons.append(f"needs compute capability >= {need}, this GPU has {have}")
    for name, minimum in requirements.packages:
        installed = env.versions[name] if name in env.versions else installed_version(name)
        if installed is None:
            reasons.append(f"needs {name}, which is not installed")
        elif minimum and _version_tuple(installed) < _version_tuple(minimum):
            reasons.append(f"needs {name}>={minimum}, installed {installed}")
    if requirements.families and env.family is not None and env.family not in requirements.families:
        reasons.append(
            f"applies to {' or '.join(requirements.families)} pipelines; this model's denoiser is a {env.family}"
        )
    if requirements.attribute and not env.attributes.get(requirements.attribute, True):
        module, attr = requirements.attribute
        reasons.append(f"needs {module}.{attr}, which the installed version does not have")
    return reasons


@dataclass(frozen=True)
class Effect:
    """What a technique's effect check observed on the pipeline that was timed.

    ``applied=False``: the effect is absent and the test fails "not applied" with ``line`` as the
    reason. ``checked=False``: the technique declares no check (``line`` says so).
    """

    applied: bool
    line: str  # one line for every report: what was observed, e.g. "16/16 attention modules fused"
    checked: bool = True


NOT_CHECKED = "effect not checked"


@dataclass
class ApplyContext:
    """Handed to built-in techniques: where they run and what they are applied with."""

    device: str
    argument: str | None
    model: Any  # models.loading.ModelInfo
    settings: Any  # config.Settings
    spec: Any = None  # the Spec being applied
    notes: list[str] = field(default_factory=list)  # shown in the report (e.g. "VAE kept in fp32")
    call_contexts: list[Callable[[], AbstractContextManager[Any]]] = field(default_factory=list)
    # what a technique's apply stashes for its effect check (a snapshot of dynamo counters...), by technique name
    state: dict[str, Any] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.notes.append(text)


ApplyFn = Callable[..., Any]
EffectFn = Callable[..., Any]  # (pipe) or (pipe, probe) -> Effect, bool or (bool, str)


def _positional_count(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` takes (a large number for ``*args``); None if unknown."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return 1 << 16
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def as_effect(name: str, value: Any) -> Effect:
    """An effect function's return value as an :class:`Effect` (a bool or a (bool, str) tuple is accepted)."""
    if isinstance(value, Effect):
        return value
    if isinstance(value, bool):
        return Effect(value, "effect check passed" if value else "effect check returned False")
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool) and isinstance(value[1], str):
        return Effect(value[0], value[1])
    raise SpecError(
        f"technique {name!r}: its effect check returned {type(value).__name__} {value!r:.60}; "
        "return an Effect, a bool or a (bool, str) tuple"
    )


@dataclass(frozen=True)
class Technique:
    name: str
    apply: ApplyFn
    family: str = "user"
    description: str = ""
    min_ssim: float = 0.95
    requires: Requirements = field(default_factory=Requirements)
    stage: int = STAGE_USER
    exclusive: str | None = None  # at most one technique of a group in a spec
    conflicts: Mapping[str, str] = field(default_factory=dict)  # other name -> why they can't combine
    argument: str = "none"  # "none", "optional" or "required"
    argument_help: str = ""
    dtype: str | None = None  # precision techniques: the dtype the pipeline runs in
    builtin: bool = False
    default: bool = False  # part of the default matrix
    compiles: bool = False  # warm-up until steady; recompilation is watched
    effect: EffectFn | None = None  # (pipe) or (pipe, probe): did the technique take effect?

    def run(self, pipe: Any, ctx: ApplyContext) -> Any:
        result = self.apply(pipe, ctx) if self._takes_context() else self.apply(pipe)
        if result is None:
            raise SpecError(f"technique {self.name!r} returned None; a technique must return the pipeline")
        return result

    def _takes_context(self) -> bool:
        try:
            params = [
                p
                for p in inspect.signature(self.apply).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError):
            return False
        return len(params) >= 2

    def check(self, pipe: Any, probe: Any) -> Effect:
        """Run the effect check on the pipeline this technique was applied to (``probe``: effects.Probe)."""
        if self.effect is None:
            return Effect(True, NOT_CHECKED, checked=False)
        count = _positional_count(self.effect)
        value = self.effect(pipe, probe) if count is not None and count >= 2 else self.effect(pipe)
        return as_effect(self.name, value)


@dataclass(frozen=True)
class Part:
    technique: Technique
    argument: str | None = None

    @property
    def label(self) -> str:
        return f"{self.technique.name}={self.argument}" if self.argument else self.technique.name


@dataclass(frozen=True)
class Spec:
    """One test's technique: the parts, applied in stage order. The ``diffaccel_technique`` fixture."""

    name: str
    parts: tuple[Part, ...]
    preset: str | None = None

    @property
    def requirements(self) -> Requirements:
        merged = Requirements()
        for part in self.parts:
            merged = merged.merged(part.technique.requires)
        return merged

    @property
    def min_ssim(self) -> float:
        """The most lenient threshold of the parts: a combination is as lossy as its lossiest part."""
        return self.min_ssim_for({})

    def min_ssim_for(self, overrides: Mapping[str, float]) -> float:
        """``min_ssim`` with a model's per-technique overrides (a tiny preset that tiles at 64 px)."""
        return min((overrides.get(p.technique.name, p.technique.min_ssim) for p in self.parts), default=1.0)

    @property
    def dtype(self) -> str:
        for part in self.parts:
            if part.technique.dtype:
                return part.technique.dtype
        return "float32"

    @property
    def compiles(self) -> bool:
        return any(p.technique.compiles for p in self.parts)

    @property
    def ordered(self) -> tuple[Part, ...]:
        return tuple(sorted(self.parts, key=lambda p: p.technique.stage))

    @property
    def is_reference(self) -> bool:
        return all(p.technique.name == "fp32" for p in self.parts)

    def __str__(self) -> str:
        return self.name


class Registry:
    """Techniques and presets by name."""

    def __init__(self) -> None:
        self.techniques: dict[str, Technique] = {}
        self.presets: dict[str, tuple[str, str]] = {}  # name -> (spec, description)

    # -------------------------------------------------------------- registration

    def register(
        self,
        name: str,
        *,
        min_ssim: float = 0.95,
        requires: Requirements | None = None,
        family: str = "user",
        description: str = "",
        stage: int = STAGE_USER,
        exclusive: str | None = None,
        conflicts: Mapping[str, str] | None = None,
        argument: str = "none",
        argument_help: str = "",
        dtype: str | None = None,
        builtin: bool = False,
        default: bool = False,
        compiles: bool = False,
        cuda: bool = False,
        min_capability: tuple[int, int] | None = None,
        packages: Mapping[str, str] | None = None,
        families: Sequence[str] = (),
        effect: EffectFn | None = None,
    ) -> Callable[[ApplyFn], ApplyFn]:
        """Decorator: ``@register("my-attn", min_ssim=0.98)`` over ``def apply(pipe): ... return pipe``.

        ``effect``: a function ``(pipe)`` or ``(pipe, probe)`` that observes whether the technique took
        effect on the pipeline that was timed; it returns an :class:`Effect`, a bool or ``(bool, line)``.
        """
        if not name or any(ch in name for ch in "+,= ") or name != name.strip():
            raise SpecError(f"technique name {name!r}: use letters, digits and dashes (no '+', ',', '=' or spaces)")
        if name in self.techniques or name in self.presets:
            raise SpecError(f"technique {name!r} is registered twice; pick another name")
        if not 0.0 <= min_ssim <= 1.0:
            raise SpecError(f"technique {name!r}: min_ssim={min_ssim!r} is outside [0, 1]")
        if argument not in ("none", "optional", "required"):
            raise SpecError(f"technique {name!r}: argument must be 'none', 'optional' or 'required'")
        for family_name in families:
            if family_name not in FAMILIES:
                raise SpecError(f"technique {name!r}: family {family_name!r} is not one of {', '.join(FAMILIES)}")
        if effect is not None:
            count = _positional_count(effect) if callable(effect) else 0
            if not callable(effect) or count == 0:
                got = type(effect).__name__ if not callable(effect) else "a function without arguments"
                raise SpecError(
                    f"technique {name!r}: effect= takes a function (pipe) or (pipe, probe) that returns an Effect, "
                    f"a bool or (bool, str); got {got}"
                )
        if requires is None:
            requires = Requirements(
                cuda=cuda,
                min_capability=min_capability,
                packages=tuple((packages or {}).items()),
                families=tuple(families),
            )

        def decorator(fn: ApplyFn) -> ApplyFn:
            if not callable(fn):
                raise SpecError(f"technique {name!r}: register(...) decorates a function")
            self.techniques[name] = Technique(
                name=name,
                apply=fn,
                family=family,
                description=description or (inspect.getdoc(fn) or "").split("\n")[0],
                min_ssim=min_ssim,
                requires=requires,
                stage=stage,
                exclusive=exclusive,
                conflicts=dict(conflicts or {}),
                argument=argument,
                argument_help=argument_help,
                dtype=dtype,
                builtin=builtin,
                default=default,
                compiles=compiles,
                effect=effect,
            )
            return fn

        return decorator

    def preset(self, name: str, spec: str, description: str) -> None:
        if name in self.techniques or name in self.presets:
            raise SpecError(f"preset {name!r} is registered twice")
        self.presets[name] = (spec, description)

    # -------------------------------------------------------------- parsing

    def known(self) -> list[str]:
        return sorted(self.techniques) + sorted(self.presets)

    def defaults(self) -> tuple[str, ...]:
        return tuple(name for name, t in self.techniques.items() if t.default)

    def parse(self, text: str) -> Spec:
        text = text.strip()
        if not text:
            raise SpecError("empty technique spec")
        preset_name = None
        if text in self.presets:
            preset_name = text
            expanded = self.presets[text][0]
        else:
            expanded = text
        parts: list[Part] = []
        for raw in expanded.split("+"):
            raw = raw.strip()
            if raw in self.presets:
                raise SpecError(f"{text!r}: preset {raw!r} can only be used on its own, not joined with '+'")
            name, sep, argument = raw.partition("=")
            name = name.strip()
            technique = self.techniques.get(name)
            if technique is None:
                raise SpecError(f"unknown technique {name!r} in {text!r}; known: {', '.join(self.known())}")
            arg: str | None = argument.strip() if sep else None
            if sep and not arg:
                raise SpecError(f"{text!r}: {name}= needs a value after '='")
            if technique.argument == "none" and arg is not None:
                raise SpecError(f"{text!r}: technique {name!r} takes no argument (drop '={arg}')")
            if technique.argument == "required" and arg is None:
                hint = f" ({technique.argument_help})" if technique.argument_help else ""
                raise SpecError(f"{text!r}: technique {name!r} needs an argument: {name}=VALUE{hint}")
            if any(p.technique.name == name for p in parts):
                raise SpecError(f"{text!r}: {name!r} appears twice")
            parts.append(Part(technique, arg))
        self._check_combination(text, parts)
        return Spec(name=text, parts=tuple(parts), preset=preset_name)

    def parse_all(self, specs: Iterable[str]) -> list[Spec]:
        parsed: list[Spec] = []
        seen: set[str] = set()
        for text in specs:
            spec = self.parse(text)
            if spec.name in seen:
                raise SpecError(f"technique {spec.name!r} is listed twice")
            seen.add(spec.name)
            parsed.append(spec)
        return parsed

    @staticmethod
    def _check_combination(text: str, parts: Sequence[Part]) -> None:
        groups: dict[str, str] = {}
        names = {p.technique.name for p in parts}
        for part in parts:
            t = part.technique
            if t.exclusive:
                other = groups.get(t.exclusive)
                if other is not None:
                    raise SpecError(
                        f"{text!r}: {other!r} and {t.name!r} can't be combined: both set the {t.exclusive}; keep one"
                    )
                groups[t.exclusive] = t.name
            for other_name, why in t.conflicts.items():
                if other_name in names:
                    raise SpecError(f"{text!r}: {t.name!r} and {other_name!r} can't be combined: {why}")
