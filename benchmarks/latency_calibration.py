#!/usr/bin/env python3
"""Latency gate calibration: how often a clean matrix fails, and what a slowdown costs to catch, by rule.

    python benchmarks/latency_calibration.py            # about 3 minutes on 2 cores -> docs/latency-calibration.md
    python benchmarks/latency_calibration.py --quick    # seconds: proves the script runs

The spreads are the run-to-run spreads of the 17 techniques of the CPU matrix measured by
benchmarks/verdict_quality.py twice: on 2 busy cores with a 3-run history (the committed
docs/verdict-quality.json of commit 7c82fea, read with ``git show``: 1% to 11%, the techniques far
apart) and on 2 idle cores with a 10-run history (today's docs/verdict-quality.json), and, for a
machine whose techniques scatter alike, every technique at fuse-qkv's busy spread. For each history length, each rule gets the same simulated
histories and runs (``pytest_diffaccel.latency_model``: blocks sharing 90% of their run's noise,
``latency.judge`` deciding, normal on the log scale): the share of clean runs of the whole matrix with
any latency failure, and the share of runs that catch a slowdown of 15%, 20% and 30% in fuse-qkv.

Rules (the spread each test is judged with; everything else is ``latency.judge``):

* **plugin**: what the plugin does: its own runs moderated toward the machine's prior fitted by
  empirical Bayes over the tests (``history.machine_spread``), Student's t on the moderated spread's
  degrees of freedom;
* **normal, median prior**: the rule before: the machine's prior the median of the tests' own spreads,
  counted as 4 runs, the moderated spread taken as known (the normal test);
* **normal, empirical Bayes**: the plugin's spread, taken as known: what the t test adds;
* **t, median prior**: the median prior counted as 4 runs, with Student's t: what the fitted prior adds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_diffaccel import history, latency_model, stats  # noqa: E402

SLOWED = "fuse-qkv"
LEVELS = (0.15, 0.20, 0.30)
HISTORIES = (3, 5, 10)


BUSY_COMMIT = "7c82fea"  # docs/verdict-quality.json measured on 2 busy cores, a 3-run history


def measured_spreads(raw: dict | None = None) -> dict[str, float]:
    """The techniques' run-to-run spreads of a verdict-quality measurement (its history's newest level and its
    A/A runs' estimates), as docs/verdict-quality.md lists them; the committed one by default."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import verdict_quality

    if raw is None:
        raw = json.loads((ROOT / "docs" / "verdict-quality.json").read_text())
    return verdict_quality.measured_spreads(raw, verdict_quality.AA.of(raw))


def busy_spreads() -> dict[str, float]:
    """The spreads of the measurement on busy cores, from the git history of this repository."""
    import subprocess

    shown = subprocess.run(
        ["git", "show", f"{BUSY_COMMIT}:docs/verdict-quality.json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        raise SystemExit(
            f"git show {BUSY_COMMIT}:docs/verdict-quality.json failed (a clone without history?): {shown.stderr}"
        )
    return measured_spreads(json.loads(shown.stdout))


def _median_prior_spreads(histories: Sequence[Sequence[float]], dof: float) -> list[history.Spread]:
    """The rule before: the median of the tests' own spreads as a 4-run prior (history.spread moderates
    toward it); ``dof`` the t test's (inf: the normal)."""
    owns = [history.within_level([runs]) for runs in histories]
    typical = [s for s, d in owns if s is not None and d >= history.MIN_OWN_DOF]
    machine = history.NO_PRIOR
    if len(typical) >= history.MIN_MACHINE_TESTS:
        machine = history.Prior(stats.median(typical), float(history.PRIOR_WEIGHT), len(typical))
    return [dataclasses.replace(history.spread([runs], "ratio", machine), prior_dof=dof) for runs in histories]


def normal_median(histories: Sequence[Sequence[float]]) -> list[history.Spread]:
    return _median_prior_spreads(histories, math.inf)


def t_median(histories: Sequence[Sequence[float]]) -> list[history.Spread]:
    return _median_prior_spreads(histories, float(history.PRIOR_WEIGHT))


def normal_fitted(histories: Sequence[Sequence[float]]) -> list[history.Spread]:
    return [dataclasses.replace(s, prior_dof=math.inf) for s in latency_model.plugin_spreads(histories)]


PLUGIN = "plugin (fitted prior, Student's t)"
BEFORE = "normal, median prior (the rule before)"
RULES = {
    PLUGIN: latency_model.plugin_spreads,
    BEFORE: normal_median,
    "normal, fitted prior": normal_fitted,
    "Student's t, median prior": t_median,
}


def measure(matrix_runs: int, detection_runs: int) -> dict:
    busy, idle = busy_spreads(), measured_spreads()
    results: dict = {"slowed": SLOWED, "matrix_runs": matrix_runs, "detection_runs": detection_runs}
    results["spreads"] = {"busy": busy, "idle": idle}
    results["scenarios"] = {}
    scenarios = (
        ("busy", busy, list(RULES)),
        ("idle", idle, [PLUGIN, BEFORE]),
        ("alike", dict.fromkeys(busy, busy[SLOWED]), [PLUGIN, BEFORE]),
    )
    for scenario, spreads, rules in scenarios:
        names = sorted(spreads, key=lambda t: -spreads[t])
        values, slowed = [spreads[t] for t in names], names.index(SLOWED)
        table = {}
        for rule in rules:
            estimator = RULES[rule]
            rows = {}
            for runs in HISTORIES:
                false_alarm = latency_model.matrix_false_alarm(
                    values, runs, matrix_runs=matrix_runs, estimator=estimator
                )
                caught = {
                    f"{level:g}": latency_model.detection_rate(
                        values, slowed, 1.0 + level, runs, matrix_runs=detection_runs, seed=1, estimator=estimator
                    )
                    for level in LEVELS
                }
                rows[str(runs)] = {"false_alarm": false_alarm, "caught": caught}
                print(f"{scenario}, {rule}, {runs} runs: {false_alarm:.2%}, caught {caught}", file=sys.stderr)
            table[rule] = rows
        results["scenarios"][scenario] = table
    return results


def table_lines(table: dict) -> list[str]:
    lines = [
        "| rule | history | clean matrix runs with a latency failure (target <= 2%) | "
        + " | ".join(f"+{level:.0%} caught" for level in LEVELS)
        + " |",
        "|---|---:|---:|" + "---:|" * len(LEVELS),
    ]
    for rule, rows in table.items():
        for runs, row in rows.items():
            caught = " | ".join(f"{row['caught'][f'{level:g}']:.0%}" for level in LEVELS)
            lines.append(f"| {rule} | {runs} runs | {row['false_alarm']:.2%} | {caught} |")
    return lines


def render(results: dict, command: str) -> str:
    slowed = results["slowed"]
    busy, idle = results["spreads"]["busy"], results["spreads"]["idle"]
    tables = results["scenarios"]

    def span(spreads: dict[str, float]) -> str:
        return f"{min(spreads.values()):.1%} to {max(spreads.values()):.1%}, `{slowed}` {spreads[slowed]:.1%}"

    lines = [
        "# Latency gate calibration",
        "",
        f"Command: `{command}` ({results['seconds'] / 60:.0f} minutes). The run-to-run spreads of the "
        f"{len(busy)} techniques of the CPU matrix measured by `benchmarks/verdict_quality.py`, fed to the gate's own "
        "code (`pytest_diffaccel/latency_model.py`: each technique's history drawn at its spread, blocks sharing 90% "
        "of their run's noise, `latency.judge` deciding; max-slowdown 10%, alpha 0.0005, up to 3 blocks). Every rule "
        f"gets the same histories and runs: {results['matrix_runs']:,} clean runs of the whole matrix per history "
        f"length, {results['detection_runs']:,} runs with `{slowed}` slowed per slowdown.",
        "",
        f"## 2 busy cores ({span(busy)})",
        "",
        f"Measured with a 3-run history while other work shared the cores (`git show {BUSY_COMMIT}:docs/verdict-quality.json`): "
        "the techniques' spreads far apart, the case the rule before failed.",
        "",
        *table_lines(tables["busy"]),
        "",
        f"## 2 idle cores ({span(idle)})",
        "",
        "Measured with a 10-run history and nothing else on the cores ([Verdict quality](verdict-quality.md)).",
        "",
        *table_lines(tables["idle"]),
        "",
        f"## Alike tests: every technique at {busy[slowed]:.1%}",
        "",
        "What a machine whose techniques scatter alike (a GPU runner, typically) gets:",
        "",
        *table_lines(tables["alike"]),
        "",
    ]
    worst_now = max(row["false_alarm"] for row in tables["busy"][PLUGIN].values())
    worst_before = max(row["false_alarm"] for row in tables["busy"][BEFORE].values())
    full = str(HISTORIES[-1])
    lines += [
        f"On the busy cores the rule before failed up to {worst_before:.1%} of clean matrix runs (a short history, the "
        "noisy techniques' spread pulled toward the quiet ones' median and then taken as known); the plugin's rule "
        f"at most {worst_now:.1%}. What it pays for that is power while the history is short and the techniques far "
        f"apart: with {full} runs of history it catches +20% in {tables['busy'][PLUGIN][full]['caught']['0.2']:.0%} of "
        f"runs there (the rule before {tables['busy'][BEFORE][full]['caught']['0.2']:.0%}), and what it can't yet make "
        "significant is *undecided*, with the runs of history that would decide it. On idle cores and on alike tests "
        f"it catches +20% in {tables['idle'][PLUGIN][full]['caught']['0.2']:.0%} and "
        f"{tables['alike'][PLUGIN][full]['caught']['0.2']:.0%} of runs with {full} runs of history.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few runs: proves the script runs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "latency-calibration.md")
    parser.add_argument("--raw", type=Path, default=ROOT / "docs" / "latency-calibration.json")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/latency_calibration.py" + ("" if not given else " " + " ".join(given))
    started = time.perf_counter()
    results = measure(*((40, 20) if args.quick else (2000, 1000)))
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["command"] = command
    args.raw.write_text(json.dumps(results, indent=1) + "\n")
    text = render(results, command)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
