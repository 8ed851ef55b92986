"""docs/base-vs-head.md is rendered from docs/base-vs-head.json by benchmarks/base_vs_head.py: every figure on
the page comes from the committed data, and a page edited by hand fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _benchmark():
    spec = importlib.util.spec_from_file_location("base_vs_head", ROOT / "benchmarks" / "base_vs_head.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_page_is_its_data_rendered():
    bench = _benchmark()
    assert bench.PAGE.read_text() == bench.render(bench.load()), "run: python benchmarks/base_vs_head.py page"


def test_a_figure_changed_in_the_data_changes_the_page():
    bench = _benchmark()
    data = bench.load()
    data["simulation"]["pairs"]["2"]["one_15%"] = 0.123
    assert "12.3%" in bench.render(data) and bench.PAGE.read_text() != bench.render(data)
