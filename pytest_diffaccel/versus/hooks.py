"""What the plugin's hooks do in a base-vs-head job (the controller) and in an arm's process.

The controller collects the head's tests as any run does, then (``start``) prepares the job, checking
the base before anything is timed, and puts one VersusItem in place of each diffaccel test. At the start
of the test loop (``run``) the job runs every pair; the items then report each test's decision. At the
end (``finish``) the head's results, with the job's verdicts, feed the usual reports; the JSON report
gains both arms' runs (``versus``), and the worktree and the job's folder are removed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ..keys import JOB


def conflicts(settings: Any, config: Any = None) -> str | None:
    """Options that don't go with a base-vs-head job, and why."""
    if config is not None and getattr(config.option, "numprocesses", None):
        return (
            "-n (pytest-xdist) with --diffaccel-base: the job's controller runs no test itself; each arm's run is "
            "one process of the whole selection. Run without -n"
        )
    if settings.save:
        return (
            "--diffaccel-save with --diffaccel-base: a base-vs-head job judges two arms of this job and saves no "
            "history; record histories on main (pytest ... --diffaccel-save=all) in a run of its own"
        )
    if settings.search:
        return "--diffaccel-search with --diffaccel-base: search on one tree, then compare the recipe's test"
    return None


def _say(config: pytest.Config) -> Any:
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is None:
            return
        writer = getattr(reporter, "_tw", None)
        if getattr(writer, "width_of_current_line", 0):  # "collecting ... " is left open during collection
            writer.line()
        reporter.write_line(f"diffaccel: {line}")

    return say


def start(session: pytest.Session, config: pytest.Config, items: list[pytest.Item], state: Any) -> None:
    """Prepare the job (a usage error when the base can't be measured) and put its items in place."""
    from ..verdict import MEMORY_SLACK
    from .arms import ArmError, interpreter
    from .decide import Limits
    from .item import replace_items
    from .job import prepare

    settings = state.settings
    limits = Limits(
        max_slowdown=settings.max_slowdown,
        max_compile_increase=settings.max_compile_increase,
        max_memory_increase=settings.max_memory_increase,
        memory_slack=MEMORY_SLACK.get(state.device, 0),
        alpha=settings.alpha,
        report_only=settings.report_only,
        strict=settings.require_baseline,
    )
    params = config.invocation_params
    try:
        job = prepare(settings, Path(params.dir), list(params.args), interpreter(), limits, _say(config))
    except ArmError as error:
        raise pytest.UsageError(str(error)) from None
    try:
        job.order = replace_items(config, items, job)
    except BaseException:
        job.cleanup()
        raise
    config.stash[JOB] = job


def run(session: pytest.Session, job: Any) -> None:
    """Every pair of runs, before the items report; a crashed run stops the session (no partial verdict)."""
    from .job import ArmCrashed

    say = _say(session.config)
    try:
        job.run(job.order, say)
    except ArmCrashed as error:
        job.cleanup()
        say(f"ERROR {error}")
        pytest.exit(f"diffaccel: {error}", returncode=4 if error.arm == "base" else 1)
    except BaseException:
        job.cleanup()
        raise
    say(job.summary_line())


def finish(session: pytest.Session, state: Any, job: Any) -> None:
    """The head's results with the job's verdicts, the reports, the worktree removed."""
    try:
        if job.decisions:
            state.results = results_of(job)
            from ..report import write_reports

            write_reports(state)
            if state.settings.json:
                add_to_json(Path(state.settings.json), job)
    finally:
        job.cleanup()


def results_of(job: Any) -> list[Any]:
    """One Result per decided test: the head's first run, its verdict the job's."""
    from ..results import Result, from_payload
    from ..verdict import Gate, Verdict
    from .decide import NEW

    results = []
    for test_id, decision in sorted(job.decisions.items(), key=lambda kv: _position(job, kv[0])):
        _, head = job.arms_of(test_id)
        first = next((h for h in head if h is not None), None)
        if first is None:
            results.append(Result(test_id=test_id, technique=decision.technique, outcome="failed", reason="no result"))
            continue
        payload = {k: v for k, v in first.payload.items() if k != "thumbnail_count"}
        result = from_payload(payload)
        if decision.state == "skipped":
            result.outcome = "skipped"
            results.append(result)
            continue
        _pictures(result, first, job)
        gates = tuple(decision.gates) or (Gate("latency", True, NEW, judged=False),)
        result.verdict = Verdict(gates=gates, reported=decision.reported)
        result.outcome = "failed" if decision.failed else "passed"
        result.baseline_note = f"vs base {job.base.label}" if decision.state == "judged" else NEW
        results.append(result)
    return results


def _pictures(result: Any, head: Any, job: Any) -> None:
    """The pictures the HTML report shows, from the runs' thumbnails: fp32, the base's and the head's."""
    from .pictures import decoded

    base, _ = job.arms_of(result.test_id)
    first_base = next((b for b in base if b is not None and b.thumbnail), None)
    result.images = decoded(head.thumbnail, head.thumbnail_count)
    reference = head.payload.get("reference_thumbnail")
    result.reference_images = decoded(reference, head.thumbnail_count) if isinstance(reference, str) else None
    if result.reference_images is None:
        result.images = None  # the report shows a picture beside its reference, or none
    result.base_images = decoded(first_base.thumbnail, first_base.thumbnail_count) if first_base else None
    result.base_label = job.base.label


def _position(job: Any, test_id: str) -> int:
    base = test_id.split("#")[0]
    return job.order.index(base) if base in job.order else len(job.order)


def add_to_json(path: Path, job: Any) -> None:
    """Both arms' runs and each test's comparison, in the JSON report (``versus``; ``extra_info.versus``)."""
    from ..atomic import write_atomic

    data = json.loads(path.read_text(encoding="utf-8"))
    data["versus"] = versus_json(job)
    for bench in data.get("benchmarks", []):
        decision = job.decisions.get(bench.get("fullname") or bench.get("name"))
        if decision is None:
            decision = job.decisions.get(bench.get("extra_info", {}).get("test_id", ""))
        if decision is not None:
            bench.setdefault("extra_info", {})["versus"] = decision_json(decision)
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def decision_json(decision: Any) -> dict[str, Any]:
    return {
        "verdict": decision.headline,
        "state": decision.state,
        "comparisons": {
            figure: {
                "ratio": c.ratio,
                "ci95": [c.low, c.high],
                "p_value": c.p_value,
                "pairs": list(c.pairs),
                "sigma": c.sigma,
                "expected": c.expected,
                "dof": c.dof,
                "regression": c.regression,
                "improvement": c.improvement,
                "undecided": c.undecided,
                "reason": c.reason,
            }
            for figure, c in decision.comparisons.items()
        },
        "picture": None
        if decision.picture is None
        else {
            "ssim": decision.picture.ssim,
            "tolerance": decision.picture.tolerance.value,
            "basis": decision.picture.tolerance.basis,
            "changed": decision.picture.changed,
        },
        "moved": decision.moved,
        "gates": [{"gate": g.name, "passed": g.passed, "message": g.message} for g in decision.gates],
    }


def versus_json(job: Any) -> dict[str, Any]:
    return {
        "base": job.base.label,
        "head": job.head.label,
        "pairs": job.pairs,
        "order_seed": job.seed,
        "seconds": job.seconds,
        "test_seconds": job.test_seconds,
        "gone": list(job.gone),
        "runs": [
            {
                "arm": r.arm,
                "pair": r.number,
                "seconds": r.seconds,
                "status": r.status,
                "counts": r.counts,
                "python": r.python,
                "versions": r.versions,
                "tests": {
                    t: {
                        "outcome": f.outcome,
                        "ratio": f.ratio,
                        "median": f.median,
                        "ratio_error": f.ratio_error,
                        "median_error": f.median_error,
                        "compile_seconds": f.compile_seconds,
                        "cold_start_seconds": f.cold_start_seconds,
                        "peak_memory": f.peak_memory,
                        "ssim": f.ssim,
                        "components": dict(f.components),
                    }
                    for t, f in r.figures.items()
                },
            }
            for r in job.runs
        ],
    }


def summary(tr: Any, state: Any, job: Any) -> None:
    """The session's end in a base-vs-head job: what was compared, the side-by-side table, what failed."""
    from .table import lines

    tr.write_sep("=", "diffaccel: base vs head", bold=True)
    tr.write_line(f"model {state.info.label} on {state.device}; {job.summary_line()}")
    if not job.decisions:
        tr.write_line("no test was compared")
        return
    table = lines(job)
    tr.write_line(table[0], bold=True)
    for line in table[1:]:
        red = " FAIL " in f" {line} "
        tr.write_line(line, red=red, green=not red and line.rstrip().endswith("pass"))
    skipped = [d for d in job.decisions.values() if d.state == "skipped"]
    if skipped:
        tr.write_line("skipped:")
        for d in skipped:
            tr.write_line(f"  {d.technique}: {d.reason.removeprefix(d.technique + ': ')}")
    for test_id in job.gone:
        tr.write_line(f"gone from head: {test_id} (in the base only: not judged)", yellow=True)
    failed = [d for d in job.decisions.values() if d.failed]
    if failed:
        tr.write_line("failed:")
        for d in failed:
            gate = d.failures[0]
            tr.write_line(f"  {d.technique}: {gate.name}: {gate.message}", red=True)
    for path in getattr(state, "reports_written", []):
        tr.write_line(f"report: {path}")
