"""``--diffaccel-search`` in a pytest session: one item that searches, then gates the recipe it found.

The matrix items of the user's diffaccel test are deselected and replaced by one item,
``diffaccel-search``: it runs the budgeted search (search/), then measures the chosen recipe like any
test of the matrix (blocks, fidelity seeds, effect checks, every gate) under the test id the matrix
would give it (``test_acceleration[bf16+compile]``), so that ``--diffaccel-save`` stores it as a
baseline entry marked ``recipe`` and the next plain run gates it like any other technique.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from .keys import FIXTURES

RECIPE_SHARE = 0.08  # of the budget, kept for the recipe's own gated measurement


class SearchItem(pytest.Item):
    """The search and the gated measurement of its recipe."""

    def __init__(self, *, base: str, state: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = base  # the user's test, without its parameter: the recipe's test id is base[spec]
        self.state = state

    def runtest(self) -> None:
        from .search import effects_hook, run_search

        state, settings = self.state, self.state.settings
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        verbose = reporter is not None and self.config.option.verbose > 0
        say = (lambda line: reporter.write_line(f"  {line}")) if verbose else None
        started = time.perf_counter()
        budget = settings.search_budget * 60.0
        result = run_search(
            state,
            settings,
            budget * (1.0 - RECIPE_SHARE),
            space=settings.search_space,
            progress=say,
            effect=effects_hook(state.device),
        )
        state.search = result
        state.search_seconds = time.perf_counter() - started
        if result.chosen is None:
            pytest.fail("the search found no candidate that passes every gate: " + result.stop_reason, pytrace=False)
        self._gate(result.chosen)
        state.search_seconds = time.perf_counter() - started

    def _gate(self, chosen: str) -> None:
        """Measure the recipe as its matrix test would, and fail this item when a gate fails."""
        from .benchmark import Benchmark
        from .session import TechniqueFailed

        state, settings = self.state, self.state.settings
        spec = state.registry.parse(chosen)
        applied_at = time.perf_counter()
        try:
            pipe, applied = state.apply(spec, settings)
            bench = Benchmark(
                state,
                self,
                spec,
                settings,
                applied=applied,
                fixture_pipe=pipe,
                apply_seconds=time.perf_counter() - applied_at,
                test_id=f"{self.base}[{spec.name}]",
            )
            result = bench(pipe)
        except TechniqueFailed as error:
            pytest.fail(f"the recipe {chosen}: {error}", pytrace=False)
        result.recipe = True
        state.results.append(result)
        if result.failed:
            pytest.fail(result.failure_message(), pytrace=False)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"diffaccel-search ({self.state.settings.search_budget:g} min)"


def replace_matrix(session: pytest.Session, config: pytest.Config, items: list[Any], state: Any) -> None:
    """Deselect the matrix items of the diffaccel test and put the search item in their place."""
    matrix = [item for item in items if FIXTURES & set(getattr(item, "fixturenames", ()))]
    if not matrix:
        return
    first = matrix[0]
    base = first.nodeid.split("[", 1)[0]
    search = SearchItem.from_parent(first.parent, name="diffaccel-search", base=base, state=state)
    config.hook.pytest_deselected(items=matrix)
    position = items.index(first)
    items[:] = [item for item in items if item not in matrix]
    items.insert(position, search)


def saved_recipes(state: Any, base: str) -> list[str]:
    """The recipes a search saved for this test (baseline entries marked ``recipe``): the plain matrix gates them."""
    try:
        entries = state.baseline_entries()
    except Exception:  # a bad baseline file is reported at the end of collection, with its name
        return []
    prefix = f"{base}["
    return [
        key[len(prefix) : -1]
        for key, entry in sorted(entries.items())
        if key.startswith(prefix) and key.endswith("]") and entry.get("recipe")
    ]
