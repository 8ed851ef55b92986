"""Reports: terminal table, pytest-benchmark JSON, Markdown (and $GITHUB_STEP_SUMMARY), HTML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HTML_MODULES = ("jinja2", "matplotlib")  # the [html] extra


def html_modules_missing() -> list[str]:
    """The modules of the ``[html]`` extra this interpreter lacks: the HTML reports (a run's, a merge's) need
    them, and say so before anything is timed or written."""
    import importlib.util
    import sys

    def absent(name: str) -> bool:
        if name in sys.modules:
            return sys.modules[name] is None
        return importlib.util.find_spec(name) is None

    return [name for name in HTML_MODULES if absent(name)]


def write_reports(state: Any) -> list[Path]:
    """Write every report the settings ask for; returns the paths written."""
    settings = state.settings
    written: list[Path] = []
    if settings.json:
        from .jsonreport import write_json

        written.append(write_json(state, settings.json))
    markdown = None
    if settings.md or os.environ.get("GITHUB_STEP_SUMMARY"):
        from .markdown import render_markdown

        markdown = render_markdown(state)
    if settings.md and markdown is not None:
        from ..baselines import write_atomic

        write_atomic(Path(settings.md), markdown)
        written.append(Path(settings.md))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and markdown is not None and state.results:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
    if settings.html:
        from .html import write_html

        written.append(write_html(state, settings.html))
    state.reports_written = written
    return written
