"""The terminal summary: one table at the end of the session, verdicts coloured as pytest colours outcomes."""

from __future__ import annotations

from typing import Any

from . import table


def _markup(headline: str) -> dict[str, bool]:
    if headline.startswith("pass"):
        return {"green": True}
    if headline == "skipped":
        return {"yellow": True}
    return {"red": True, "bold": True}


def summary(tr: Any, state: Any) -> None:
    results = state.results
    tr.write_sep("=", "diffaccel", bold=True)
    info = state.info
    references = state.references()
    ref = ""
    if references:
        from ..units import fmt_seconds

        ref = f", fp32 reference {fmt_seconds(references[0].median)}"
    tr.write_line(f"model {info.label} on {state.device} (baselines: {state.machine}){ref}")
    lines = table.plain_lines(results)
    header, rule, body = lines[0], lines[1], lines[2:]
    tr.write_line(header, bold=True)
    tr.write_line(rule)
    verdict_at = len(header) - len(table.COLUMNS[-1])
    for line, result in zip(body, results, strict=True):
        head, tail = line[:verdict_at], line[verdict_at:]
        tr.write(head)
        tr.write(tail, **_markup(result.headline))
        tr.line("")
    skipped = [r for r in results if r.outcome == "skipped"]
    if skipped and tr.verbosity >= 0:
        tr.write_line("skipped:")
        for r in skipped:
            tr.write_line(f"  {r.technique}: {r.reason.removeprefix(r.technique + ': ')}")
    failed = [r for r in results if r.failed]
    if failed:
        tr.write_line("failed:")
        for r in failed:
            text = r.verdict.failures[0].message if r.verdict and r.verdict.failures else r.reason
            gate = r.verdict.failures[0].name + ": " if r.verdict and r.verdict.failures else ""
            tr.write_line(f"  {r.technique}: {gate}{text}", red=True)
    if state.settings.save:
        saved = state.saved
        error = getattr(state, "save_error", None)
        if error:
            tr.write_line(f"baselines NOT saved: {error}", red=True, bold=True)
        elif saved is not None:
            kept = f", {len(saved.kept)} kept (--diffaccel-save missing)" if saved.kept else ""
            tr.write_line(f"baselines: {len(saved.written)} written to {saved.path}{kept}")
    for path in getattr(state, "reports_written", []):
        tr.write_line(f"report: {path}")
