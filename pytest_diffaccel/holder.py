"""The diffaccel state of a run, built only when the run uses it.

The plugin loads in every pytest run of the environment (entry point ``pytest11``), an unrelated
suite's included. At configure it keeps a ``Holder``: the parsed settings (config.py, pytest only),
the fire drill asked for, and whether torch.compile's cache held entries. The technique registry and
the ``DiffaccelSession`` (numpy, results, verdicts, fidelity) are built on first use: a test using a
diffaccel fixture, ``--diffaccel-list-techniques``, the first results of a pytest-xdist worker on the
controller, or an option whose values must be checked before collection (``--diffaccel-techniques``,
``--diffaccel-search``, ``--diffaccel-search-space``: a bad spec is a usage error, exit 4).
The library-noise filters (quiet.py) are installed with the session, not before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from .keys import STATE

if TYPE_CHECKING:
    from .config import Settings


class Holder:
    """Settings at configure; the session on first use (kept in ``config.stash[STATE]``)."""

    def __init__(self, config: pytest.Config, settings: Settings, drills: dict[str, float], compile_cache: str) -> None:
        self.config = config
        self.settings = settings
        self.drills = drills  # DIFFACCEL_SLOWDOWN: technique -> extra fraction (drill.py)
        self.compile_cache = compile_cache  # "warm" or "cold", seen at configure, before anything compiled
        self.failure: str | None = None  # why the session could not be built (a usage error)

    @property
    def validates_at_configure(self) -> bool:
        """Options whose values are checked against the registry before collection."""
        settings = self.settings
        return bool(settings.techniques or settings.search or settings.search_space or settings.list_techniques)

    def session(self) -> Any:
        """The ``DiffaccelSession``, built on first call; ``pytest.UsageError`` when it can't be (every call)."""
        state = self.config.stash.get(STATE, None)
        if state is not None:
            return state
        if self.failure is not None:
            raise pytest.UsageError(self.failure)
        try:
            state = self._build()
        except pytest.UsageError as error:
            self.failure = str(error)
            raise
        self.config.stash[STATE] = state
        return state

    def _build(self) -> Any:
        from .quiet import install

        install(self.config)
        registry = registry_for(self.config)
        validate(registry, self.settings)
        from .session import DiffaccelSession

        state = DiffaccelSession(self.settings, registry)
        state.invocation = tuple(str(a) for a in self.config.invocation_params.args)
        state.compile_cache = self.compile_cache
        state.drills = dict(self.drills)
        return state


def registry_for(config: pytest.Config) -> Any:
    """The built-in techniques, those of conftest hooks and those of the entry-point group."""
    from importlib.metadata import entry_points

    from .techniques import SpecError, builtin_registry

    registry = builtin_registry()
    try:
        config.hook.pytest_diffaccel_register_techniques(register=registry.register)
        for entry in entry_points(group="pytest_diffaccel.techniques"):
            entry.load()(registry.register)
    except SpecError as error:
        raise pytest.UsageError(f"registering techniques: {error}") from None
    return registry


def validate(registry: Any, settings: Settings) -> None:
    """The user's technique specs and search space, against the registry (usage errors)."""
    from .techniques import SpecError

    if settings.techniques:
        try:
            registry.parse_all(settings.techniques)
        except SpecError as error:
            raise pytest.UsageError(f"--diffaccel-techniques: {error}") from None
    if settings.search_space:
        from .search import selected

        try:
            selected(registry, settings.search_space)
        except SpecError as error:
            raise pytest.UsageError(f"--diffaccel-search-space: {error}") from None
