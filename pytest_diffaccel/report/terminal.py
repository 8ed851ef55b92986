"""The terminal summary: one table at the end of the session, verdicts coloured as pytest colours outcomes."""

from __future__ import annotations

from typing import Any

from . import table


def _markup(headline: str) -> dict[str, bool]:
    if headline.startswith("pass"):
        return {"green": True}
    if headline in ("skipped", "undecided"):
        return {"yellow": True}
    return {"red": True, "bold": True}


def event_line(state: Any) -> str | None:
    """Many tests moving together, as one line (events.py), or None."""
    from ..events import Movement, together

    movements = []
    changes: list[str] = []
    for r in state.results:
        if r.verdict is None:
            continue
        latency = r.verdict.latency
        picture = any(g.name == "fidelity regression" and not g.passed for g in r.verdict.gates) or any(
            g.name == "fidelity regression" and "reported only" in g.message for g in r.verdict.gates
        )
        movements.append(
            Movement(
                technique=r.technique,
                ratio=latency.ratio if latency is not None else None,
                beyond=latency.max_slowdown if latency is not None else 0.0,
                picture_moved=picture,
                reference=r.figure == "median",
            )
        )
        changes = changes or list(r.stack_changes)
    return together(movements, changes)


def stack_line(state: Any) -> str | None:
    """The software changes since the histories' newest runs, once for the run."""
    changes = sorted({c for r in state.results for c in r.stack_changes})
    if not changes:
        return None
    return f"stack changed since the history: {', '.join(changes)} (each verdict below judges across it)"


def latency_lines(state: Any) -> list[str]:
    """What the latency verdict rests on, the confirmations, and what could not be told yet."""
    judged = [r for r in state.results if r.verdict is not None and r.verdict.latency is not None]
    lines = []
    if judged:
        alpha = state.settings.alpha
        lines.append(f"latency: {len(judged)} tests judged against their run history at alpha {alpha:g} each")
    for r in judged:
        latency = r.verdict.latency
        if latency.undecided:
            runs = (
                f"about {latency.deciding_runs} runs of history would decide it"
                if latency.deciding_runs
                else "the spread is too wide for any history to decide it"
            )
            lines.append(
                f"  undecided {r.technique}: {latency.ratio:.2f}x beyond max-slowdown {latency.max_slowdown:.0%} "
                f"against {latency.history_runs} run(s), not significant: {runs}"
            )
    unused = sorted(set(getattr(state, "drills", {})) - getattr(state, "drilled", set()))
    if unused:
        lines.append(f"fire drill: DIFFACCEL_SLOWDOWN names {', '.join(unused)}, which no test of this run applied")
    for r in state.results:
        latency = r.verdict.latency if r.verdict is not None else None
        if latency is not None and latency.blind:
            lines.append(
                f"  {r.technique}: latency gate nearly blind ({latency.spread.describe()}): it can only fail a "
                f"slowdown beyond {latency.detectable:.2f}x"
            )
        if len(r.blocks) > 1:
            blocks = ", ".join(
                f"{b['ratio']:.3f}x" if r.figure == "ratio" and b.get("ratio") else f"{b['median'] * 1e3:.1f} ms"
                for b in r.blocks
            )
            lines.append(f"  confirmed {r.technique}: {len(r.blocks)} blocks ({blocks}) -> {r.headline}")
    return lines


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
    from .environment import environment_lines

    for line in environment_lines(state):
        tr.write_line(line)
    for line in (event_line(state), stack_line(state)):
        if line:
            tr.write_line(line, yellow=True, bold=True)
    search = getattr(state, "search", None)
    if search is not None:
        for line in search.lines():
            tr.write_line(line)
        if state.search_seconds is not None:
            tr.write_line(f"  search and the recipe's gated measurement: {state.search_seconds:.0f} s")
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
    measured_results = [r for r in results if r.measured]
    if measured_results:
        tr.write_line("effects:")
        for r in measured_results:
            tr.write_line(f"  {r.technique}: {r.effect_line}", red=r.effect_line.startswith("NOT APPLIED"))
    for line in latency_lines(state):
        tr.write_line(line)
    measured = [r for r in results if r.measured]
    if measured and all(r.baseline_note.startswith("no baseline") for r in measured) and not state.settings.save:
        tr.write_line(
            f"{measured[0].baseline_note}: record one with `{state.record_command()}` (5 runs, one process each)"
        )
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
        for test_id, why in state.save_refused.items():
            tr.write_line(f"  not saved: {test_id}: {why}; measure it again on a quieter machine", yellow=True)
        for line in accepted_lines(state):
            tr.write_line(line, yellow=True)
    for path in getattr(state, "reports_written", []):
        tr.write_line(f"report: {path}")
    recording_lines(tr, state)


def accepted_lines(state: Any) -> list[str]:
    """--diffaccel-accept=fidelity: the pictures this run saved as the new baselines, and what moved."""
    from ..verdict import ACCEPTED

    written = set(state.saved.written) if state.saved is not None else set()
    lines = []
    for r in state.results:
        gate = r.verdict.accepted if r.verdict is not None else None
        if gate is None:
            continue
        moved = gate.message.removeprefix(ACCEPTED).split(" (tolerance")[0]
        if r.test_id in written:
            lines.append(f"accepted new picture for {r.technique}: {moved}")
        else:
            lines.append(f"NOT accepted (not saved) new picture for {r.technique}: {moved}")
    return lines


def recording_lines(tr: Any, state: Any) -> None:
    """--diffaccel-save-runs: each run in one line, then the recording's verdict, last; in a calibration run
    (runs 2..N), one line for the first run to read its failures and reported gates from."""
    import os

    from .. import calibration

    if os.environ.get(calibration.RUN_ENV):
        tr.write_line(calibration.result_line(state))
        return
    recording = tr.config.stash.get(calibration.RECORDING, None)
    if recording is None:
        return
    tr.write_line(f"recording: {recording.total} runs into {recording.path}, {recording.tests}")
    for run in recording.runs:
        tr.write_line(f"  {run.line()}", red=run.failed)
        for failure in run.failures:
            tr.write_line(f"    {failure.long()}", red=True)
    tr.write_line(recording.last_line(), red=recording.failed, green=not recording.failed, bold=True)
