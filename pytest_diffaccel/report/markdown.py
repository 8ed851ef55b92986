"""The Markdown report: the summary table and the failures (also appended to $GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from typing import Any

from . import table


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(state: Any) -> str:
    results = state.results
    lines = [f"## diffaccel: {state.info.label} on {state.device} ({state.machine})", ""]
    lines.append("| " + " | ".join(table.COLUMNS) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * 5 + ["---"]) + "|")
    for row in table.rows(results):
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    measured = [r for r in results if r.measured]
    if measured:
        lines += ["", "<details><summary>Effects</summary>", ""]
        lines += [f"- {_cell(r.technique)}: {_cell(r.effect_line)}" for r in measured]
        lines += ["", "</details>"]
    failed = [r for r in results if r.failed]
    if failed:
        lines += ["", "### Failures", ""]
        for r in failed:
            if r.verdict and r.verdict.failures:
                for gate in r.verdict.failures:
                    lines.append(f"- **{_cell(r.technique)}**: {gate.name}: {_cell(gate.message)}")
            else:
                lines.append(f"- **{_cell(r.technique)}**: {_cell(r.reason)}")
    skipped = [r for r in results if r.outcome == "skipped"]
    if skipped:
        lines += ["", "<details><summary>Skipped</summary>", ""]
        lines += [f"- {_cell(r.technique)}: {_cell(r.reason.removeprefix(r.technique + ': '))}" for r in skipped]
        lines += ["", "</details>"]
    search = getattr(state, "search", None)
    if search is not None:
        lines += ["", "### Search", "", "```", *search.lines(), "```"]
    lines += ["", f"<sub>{_cell(state.settings.describe())}</sub>", ""]
    return "\n".join(lines)
