"""What importing the plugin costs, and how its modules import each other.

The plugin loads (entry point ``pytest11``) in every pytest run of the environment: an unrelated
suite must import nothing heavy because of it. And the package's modules form no import loop: a
piece two modules share lives in its own module (atomic.py, keys.py).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_diffaccel"

HEAVY = (
    "numpy",
    "torch",
    "diffusers",
    "scipy",
    "skimage",
    "pytest_diffaccel.session",
    "pytest_diffaccel.results",
    "pytest_diffaccel.verdict",
    "pytest_diffaccel.fidelity",
)

RECORDER = """
import json
import sys

def pytest_sessionfinish(session):
    with open("modules.json", "w") as handle:
        json.dump(sorted(sys.modules), handle)
"""


# ----------------------------------------------------------------------------- an unrelated suite


def test_an_unrelated_suite_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    """A plain suite, the plugin loaded: none of the heavy modules is imported by the end of the run."""
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(test_plain="\n".join(f"def test_{i}():\n    assert {i} == {i}\n" for i in range(20)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=20)
    assert "diffaccel" in result.stdout.str()  # the plugin was loaded: its header line is there
    modules = set(json.loads((pytester.path / "modules.json").read_text()))
    imported = [name for name in HEAVY if name in modules or any(m.startswith(f"{name}.") for m in modules)]
    assert imported == [], f"an unrelated suite imported {', '.join(imported)}"


# ----------------------------------------------------------------------------- no loops between modules


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _target(name: str, modules: set[str]) -> str | None:
    """The module ``name`` names, or its nearest enclosing module of the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" for alias in node.names]
            # `from . import config` imports the submodule; the package itself only for a name it defines
            bases = [base] if node.module or any(full not in modules for full in names) else []
        else:
            continue
        for base in bases:
            target = _target(base, modules)
            if target is not None:
                found.add(target)
        found.update(full for full in names if full in modules)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): imports_of(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One loop through each strongly connected group of modules (Tarjan), each as a path back to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_loop_in(group, graph) for group in groups]


def _loop_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for other in sorted(graph[node] & group):
                if other == start:
                    return [*paths[node], start]
                if other not in paths:
                    paths[other] = [*paths[node], other]
                    following.append(other)
        frontier = following
    raise AssertionError(f"no loop in {sorted(group)}")  # a strongly connected group always has one


def test_the_cycle_finder_names_a_loop() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_function_level_and_relative_imports() -> None:
    graph = import_graph()
    assert "pytest_diffaccel.config" in graph["pytest_diffaccel.plugin"]  # from . import config as cfg
    assert "pytest_diffaccel.report" in graph["pytest_diffaccel.plugin"]  # inside a function
    assert "pytest_diffaccel.atomic" in graph["pytest_diffaccel.report.jsonreport"]  # from ..atomic import


def test_no_import_loops_between_the_package_modules() -> None:
    loops = [" -> ".join(loop) for loop in cycles(import_graph())]
    assert loops == [], "import loops: " + "; ".join(loops)
