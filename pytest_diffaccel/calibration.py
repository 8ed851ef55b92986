"""``--diffaccel-save-runs N``: record N runs in one command, each in a fresh pytest process.

A new runner must learn its own run-to-run spread before its latency gate can be sharp: the
rounds of one process are not independent draws of the machine's noise, the runs are. After the
first run (this process) has saved its baselines, the same command is run N - 1 more times, one
process each (the environment variable ``PYTEST_DIFFACCEL_RUN=k/N`` marks them: they save, write no
reports, and start no further runs).

Runs 2..N are calibration runs, A/A runs by definition: they never start a new level in the history,
and their timing gates (latency, compile time, cold start, memory) are reported only, never failed,
since the noise they would fail on is what they are there to measure. Their picture gates still
judge. Each run's tests are streamed as they finish, one line each, and each run ends in one line
(``run 2/5: 17 passed, 12 skipped in 5 min 10 s; saved 17 to baselines/X.json``); the recording ends
in one line that agrees with the exit status: which test failed which gate in which run, or that
none did, and how long it all took.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

RUN_ENV = "PYTEST_DIFFACCEL_RUN"
TIMING_GATES = ("latency", "compile time", "cold start", "memory")  # reported only in calibration runs
RESULT = "diffaccel-run-result: "  # a calibration run's failures and reported gates, one JSON line
SUMMARY = re.compile(r"^=+ (.*?) in [0-9.]+s\b.*=+\s*$")
COLLECTED = re.compile(r"collected (\d+) items?|\[(\d+) items?\]")
OUTCOMES = "PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS"
# a finished test under pytest -v: "a.py::test[x] PASSED   [ 50%]"; pytest-xdist: "[gw0] [ 50%] PASSED a.py::test[x]"
FINISHED = re.compile(
    rf"^(?:(?P<id>\S.*?::.*?) (?P<word>{OUTCOMES})\b"
    rf"|\[gw\d+\] \[\s*\d+%\] (?P<xword>{OUTCOMES}) (?P<xid>\S.*::.*?)\s*$)"
)
SHORT = re.compile(r"^(FAILED|ERROR) (\S.*?::.*?)(?: - (.*))?$")  # pytest's short test summary
SAVED = re.compile(r"^baselines: (\d+) written to (.+?)(, \d+ kept.*)?$")
RECORDING = pytest.StashKey["Recording"]()


@dataclass
class Failure:
    test_id: str
    gate: str  # "" when no gate failed (an error, a technique that could not be applied)
    message: str

    def short(self) -> str:
        return f"{self.test_id} ({self.gate} gate)" if self.gate else f"{self.test_id} ({self.message})"

    def what(self) -> str:
        if self.gate:
            return f"failed the {self.gate} gate"
        return self.message if self.message in ("failed", "error") else f"failed: {self.message}"

    def long(self) -> str:
        return f"{self.test_id}: {self.gate} gate failed: {self.message}" if self.gate else self.short()


@dataclass
class Run:
    number: int
    total: int
    seconds: float | None
    counts: str = ""  # "17 passed, 12 skipped", from the run's pytest summary
    saved: str = ""  # "saved 17 to baselines/X.json"
    failures: list[Failure] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)  # "fp32: latency", timing gates reported only
    status: int = 0
    tail: str = ""  # the run's last line, when it failed without naming a test

    @property
    def failed(self) -> bool:
        return bool(self.failures) or self.status not in (0, 5)

    def line(self) -> str:
        parts = [f"run {self.number}/{self.total}: {self.counts or 'no test summary'} in {duration(self.seconds)}"]
        if self.saved:
            parts.append(self.saved)
        if self.reported:
            parts.append("timing reported only (calibration run): " + ", ".join(self.reported))
        if self.failures:
            parts.append("FAILED " + ", ".join(f.short() for f in self.failures))
        elif self.failed:
            parts.append(f"exit status {self.status}" + (f": {self.tail}" if self.tail else ""))
        return "; ".join(parts)


@dataclass
class Recording:
    """What ``--diffaccel-save-runs`` did: one Run per run, the first this process."""

    total: int
    path: str
    tests: str
    runs: list[Run] = field(default_factory=list)
    seconds: float | None = None
    status: int = 0

    @property
    def failed(self) -> bool:
        return any(run.failed for run in self.runs)

    def plan(self) -> str:
        first = self.runs[0] if self.runs else None
        rest = (
            f"runs 2-{self.total} follow, one fresh process each"
            if self.total > 2
            else "run 2/2 follows, in a fresh process"
        )
        guess = ""
        if first is not None and first.seconds:
            guess = f" (about {duration(first.seconds * (self.total - 1))} more)"
        took = f" took {duration(first.seconds)}" if first is not None else " is done"
        return (
            f"recording {self.total} runs of {self.tests} into {self.path}: run 1/{self.total} (this process){took}; "
            f"{rest}{guess}; their timing gates are reported only, their picture gates judge"
        )

    def last_line(self) -> str:
        """One line that agrees with the exit status: what failed where, or that nothing did."""
        took = duration(self.seconds)
        if not self.failed:
            return f"recorded {self.total} runs in {took}: none failed; exit status {self.status}"
        where = []
        for run in self.runs:
            if run.failures:
                failed = ", ".join(f"{f.test_id} {f.what()}" for f in run.failures)
                where.append(f"run {run.number}/{run.total}: {failed}")
            elif run.failed:
                tail = f" ({run.tail})" if run.tail else ""
                where.append(f"run {run.number}/{run.total}: exit status {run.status}{tail}")
        return f"recording FAILED ({self.total} runs in {took}): " + "; ".join(where) + f"; exit status {self.status}"


# ----------------------------------------------------------------------------- the first run (this process)


def record(session: pytest.Session, state: Any) -> int:
    """Runs 2..N of the same command, after this process's run 1; returns the session's exit status."""
    config = session.config
    started = time.perf_counter()
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    params = config.invocation_params
    first = first_run(session, state, reporter)
    recording = Recording(
        total=state.settings.save_runs,
        path=_shown(state.baseline_path, params.dir),
        tests=describe_tests([r.test_id for r in state.results], len(session.items)),
        runs=[first],
    )
    config.stash[RECORDING] = recording
    _write(reporter, recording.plan())
    for number in range(2, recording.total + 1):
        _write(reporter, f"recording run {number}/{recording.total} in a fresh process ...")
        args = child_args(params.args, state.settings.report_only)
        run = further_run(number, recording.total, args, params.dir, reporter)
        recording.runs.append(run)
        _write(reporter, run.line(), red=run.failed)
        for failure in run.failures:
            _write(reporter, f"  {failure.long()}", red=True)
        if run.failed:
            _count_in_summary(reporter, run)
    recording.seconds = (first.seconds or 0.0) + time.perf_counter() - started
    status = int(session.exitstatus)
    if recording.failed and status == pytest.ExitCode.OK:
        status = int(pytest.ExitCode.TESTS_FAILED)
    recording.status = status
    return status


def first_run(session: pytest.Session, state: Any, reporter: Any) -> Run:
    """Run 1, this process: its counts, what it saved, what failed (every gate judged, as in any run)."""
    total = state.settings.save_runs
    run = Run(1, total, _elapsed(reporter), status=int(session.exitstatus))
    run.counts = _counts(reporter)
    saved = state.saved
    if saved is not None and saved.path is not None:
        run.saved = f"saved {len(saved.written)} to {_shown(saved.path, session.config.invocation_params.dir)}"
    run.failures = [failure_of(r) for r in state.results if r.failed]
    named = {f.test_id.split("#")[0] for f in run.failures}
    for key in ("failed", "error"):
        for report in reporter.stats.get(key, []) if reporter is not None else []:
            nodeid = getattr(report, "nodeid", "")
            if nodeid and nodeid not in named:
                named.add(nodeid)
                crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
                message = str(getattr(crash, "message", "") or key).splitlines()[0]
                run.failures.append(Failure(nodeid, "", message))
    return run


def failure_of(result: Any) -> Failure:
    failures = result.verdict.failures if result.verdict is not None else []
    if failures:
        return Failure(result.test_id, failures[0].name, failures[0].message)
    return Failure(result.test_id, "", result.reason or result.outcome)


def describe_tests(test_ids: Iterable[str], collected: int) -> str:
    """'3 tests (test_speed.py::test_acceleration[fp32, bf16, sdpa])', grouped by test function."""
    groups: dict[str, list[str]] = {}
    for test_id in dict.fromkeys(t.split("#")[0] for t in test_ids):
        base, _, param = test_id.partition("[")
        groups.setdefault(base, []).append(param.removesuffix("]"))
    names = []
    for base, params in groups.items():
        shown = [p for p in params if p][:8]
        more = f", and {len(params) - len(shown)} more" if len(params) > len(shown) and shown else ""
        names.append(f"{base}[{', '.join(shown)}{more}]" if shown else base)
    count = max(collected, sum(len(p) for p in groups.values()))
    tests = f"{count} test{'s' if count != 1 else ''}"
    return f"{tests} ({'; '.join(names)})" if names else tests


def child_args(args: Sequence[str], report_only: Sequence[str]) -> list[str]:
    """The command's own arguments, with the timing gates reported only and one line per finished test.
    Appended last: they override what the command said (the gates it already reported only are kept)."""
    gates = ",".join(g.replace(" ", "-") for g in dict.fromkeys([*report_only, *TIMING_GATES]))
    return [*args, f"--diffaccel-report-only={gates}", "--verbosity=1"]


# ----------------------------------------------------------------------------- runs 2..N (fresh processes)


def further_run(number: int, total: int, args: Sequence[str], cwd: Path, reporter: Any) -> Run:
    """One calibration run in a fresh process, its finished tests streamed as they come."""
    env = {**os.environ, RUN_ENV: f"{number}/{total}", "PYTHONUNBUFFERED": "1"}
    output, status, seconds = stream(
        [sys.executable, "-m", "pytest", *args], cwd, env, f"run {number}/{total}", lambda line: _write(reporter, line)
    )
    return parse_run(number, total, output, status, seconds, cwd)


def stream(
    command: Sequence[str], cwd: Path, env: dict[str, str], label: str, say: Callable[[str], None]
) -> tuple[list[str], int, float]:
    """Run a pytest process (under -v), saying one line per finished test as it comes
    ('  run 2/5 [3/17] a.py::test[x] PASSED (41 s)'); its output lines, exit status and seconds.
    Interrupted, the process goes with the command. Shared by the recording's runs and a base-vs-head job's."""
    started = time.perf_counter()
    output: list[str] = []
    collected: str = "?"
    done = 0
    process = subprocess.Popen(
        list(command), cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            output.append(line)
            count = COLLECTED.search(line)
            if count and collected == "?":
                collected = count.group(1) or count.group(2)
            finished = _finished(line)
            if finished:
                done += 1
                nodeid = finished.group("id") or finished.group("xid")
                word = finished.group("word") or finished.group("xword")
                elapsed = duration(time.perf_counter() - started)
                say(f"  {label} [{done}/{collected}] {nodeid} {word} ({elapsed})")
        status = process.wait()
    finally:
        if process.poll() is None:  # interrupted: the run goes with the command
            process.kill()
            process.wait()
    return output, status, time.perf_counter() - started


def parse_run(number: int, total: int, lines: list[str], status: int, seconds: float, cwd: Path) -> Run:
    """A calibration run's outcome from its output: counts, what it saved, what failed and was reported."""
    run = Run(number, total, seconds, status=status)
    for line in reversed(lines):
        summary = SUMMARY.match(line)
        if summary:
            run.counts = summary.group(1)
            break
    for line in lines:
        saved = SAVED.match(line)
        if saved:
            run.saved = f"saved {saved.group(1)} to {_shown(Path(saved.group(2)), cwd)}{saved.group(3) or ''}"
        elif line.startswith("baselines NOT saved:"):
            run.failures.append(Failure("baselines", "", line.removeprefix("baselines NOT saved: ")))
        elif line.startswith(RESULT):
            found = json.loads(line.removeprefix(RESULT))
            run.failures += [Failure(*f) for f in found.get("failed", [])]
            run.reported += [f"{technique}: {', '.join(gates)}" for technique, gates in found.get("reported", [])]
    named = {f.test_id.split("#")[0] for f in run.failures}
    for line in lines:  # failures outside the diffaccel gates: pytest's short summary, else the -v lines
        short = SHORT.match(line)
        if short and short.group(2) not in named:
            named.add(short.group(2))
            run.failures.append(Failure(short.group(2), "", short.group(3) or short.group(1).lower()))
    for line in lines:
        finished = _finished(line)
        word = finished and (finished.group("word") or finished.group("xword"))
        nodeid = finished and (finished.group("id") or finished.group("xid"))
        if word in ("FAILED", "ERROR") and nodeid and nodeid not in named:
            named.add(nodeid)
            run.failures.append(Failure(nodeid, "", word.lower()))
    if run.status not in (0, 5) and not run.failures:
        run.tail = next((ln.strip() for ln in reversed(lines) if ln.strip() and not ln.startswith("=")), "")
    return run


def result_line(state: Any) -> str:
    """In a calibration run: its failures and its reported-only gates, for the first run to read."""
    failed = [failure_of(r) for r in state.results if r.failed]
    reported = [(r.technique, list(r.verdict.reported)) for r in state.results if r.verdict and r.verdict.reported]
    return RESULT + json.dumps(
        {"failed": [[f.test_id, f.gate, f.message] for f in failed], "reported": reported}, sort_keys=True
    )


# ----------------------------------------------------------------------------- helpers


def duration(seconds: float | None) -> str:
    """12 s, 5 min 10 s, 1 h 2 min."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _finished(line: str) -> re.Match[str] | None:
    """A test's outcome line under -v (not a line of pytest's short summary, which names it again)."""
    return None if SHORT.match(line) else FINISHED.match(line)


def _shown(path: Path | str, cwd: Path) -> str:
    """The path as the user would type it: relative to where the command ran, when under it (a URL as it is)."""
    if "://" in str(path):
        return str(path)
    try:
        return str(Path(path).resolve().relative_to(Path(cwd).resolve()))
    except ValueError:
        return str(path)


def _write(reporter: Any, line: str, **markup: bool) -> None:
    if reporter is not None:
        reporter.write_line(f"diffaccel: {line}", **markup)


def _elapsed(reporter: Any) -> float | None:
    """Seconds since this session started (pytest's terminal reporter keeps the start)."""
    start = getattr(reporter, "_session_start", None)
    if start is not None and hasattr(start, "elapsed"):
        return float(start.elapsed().seconds)
    started = getattr(reporter, "_sessionstarttime", None)
    return time.time() - started if isinstance(started, float) else None


def _counts(reporter: Any) -> str:
    """'17 passed, 12 skipped': pytest's own summary of this session so far."""
    try:
        parts, _ = reporter.build_summary_stats_line()
    except Exception:  # no terminal reporter, or one of another shape
        return ""
    return ", ".join(text for text, _ in parts)


def _count_in_summary(reporter: Any, run: Run) -> None:
    """A failed calibration run counts in pytest's last line ('17 passed, 1 failed (calibration run 3/5)')."""
    if reporter is None:
        return
    from types import SimpleNamespace

    failures = run.failures or [Failure(f"run {run.number}/{run.total}", "", f"exit status {run.status}")]
    key = f"failed (calibration run {run.number}/{run.total})"
    reporter.stats.setdefault(key, []).extend(
        SimpleNamespace(nodeid=f.test_id, when="call", outcome="failed", count_towards_summary=True) for f in failures
    )
    set_color = getattr(reporter, "_set_main_color", None)  # pytest recomputes the line's types from stats
    if callable(set_color):
        set_color()
