"""``--diffaccel-save-runs N``: record N runs in one command, each in a fresh pytest process.

A new runner must learn its own run-to-run spread before its latency gate can be sharp: the
rounds of one process are not independent draws of the machine's noise, the runs are. After the
first run has saved its baselines, the same command is run N - 1 more times, one process each
(the environment variable ``PYTEST_DIFFACCEL_RUN=k/N`` marks them: they save, print nothing but
their summary, write no reports, and start no further runs). Calibration runs never start a new
level in the history: they are A/A runs by definition.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest

RUN_ENV = "PYTEST_DIFFACCEL_RUN"
SUMMARY = re.compile(r"=+ (.*? in [0-9.]+s.*?) =+\s*$")


def further_runs(config: pytest.Config, state: Any) -> bool:
    """Runs 2..N of the same command; returns whether any of them failed. One line per run in the summary."""
    total = state.settings.save_runs
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    params = config.invocation_params
    failed = False
    for run in range(2, total + 1):
        if reporter is not None:
            reporter.write_line(f"diffaccel: recording run {run}/{total} in a fresh process ...")
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *params.args],
            cwd=str(params.dir),
            env={**os.environ, RUN_ENV: f"{run}/{total}"},
            capture_output=True,
            text=True,
            check=False,
        )
        failed = failed or done.returncode not in (0, 5)
        state.extra_runs.append(f"run {run}/{total}: {_outcome(done.stdout, done.returncode)}")
    return failed


def _outcome(output: str, returncode: int) -> str:
    """The run's pytest summary and what it saved, from its output."""
    summary = next((m.group(1) for m in map(SUMMARY.match, reversed(output.splitlines())) if m), None)
    saved = next((line.strip() for line in output.splitlines() if line.startswith("baselines")), "")
    parts = [summary or f"exit status {returncode}"]
    if saved:
        parts.append(saved)
    if returncode not in (0, 5):
        parts.append(f"exit status {returncode}")
    return "; ".join(parts)
