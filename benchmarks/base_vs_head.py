"""How good a base-vs-head job is on this machine: its false alarms, what it catches, what it costs.

A base-vs-head job (``--diffaccel-base``) judges each test pair by pair. Three parts:

* ``aa`` (minutes, idle machine): a real A/A job on the example matrix, the base being HEAD and the head
  the same commit (a clean working tree): ``pytest examples --diffaccel-base=HEAD --diffaccel-base-runs=N``.
  Its pairs are the machine's measured pair spreads; its verdicts must all pass. Appended to the JSON.
* ``drill`` (minutes, idle machine): a real A/B job: the head's tree gains ``examples/conftest.py`` (not in
  HEAD, so the base's worktree has none) that turns on the fire drill for one technique (real matrix
  products in its denoiser, never a sleep); the job must fail that test's latency gate, and only it.
* ``simulate`` (seconds, the default): jobs drawn at the pair spreads the real A/A jobs measured (each test's
  own spread, moderated as the gate does, plus the spread the runs of a pair share), judged by the plugin's
  own code (versus.decide, with more pairs for the undecided): the A/A false-alarm rate per job, the
  detection of +5%, +15% and +25% in one technique and in every test at once (fp32 included), and the runs
  a job costs, for 1, 2, 3 and 4 starting pairs. Writes docs/base-vs-head.json's ``simulation`` and
  docs/base-vs-head.md.

    python benchmarks/base_vs_head.py aa --pairs 3          # about 6 runs of pytest examples
    python benchmarks/base_vs_head.py drill --slowdown 15% --technique fuse-qkv
    python benchmarks/base_vs_head.py                       # the simulation and the page
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_diffaccel.config import DEFAULTS  # noqa: E402
from pytest_diffaccel.verdict import MEMORY_SLACK  # noqa: E402
from pytest_diffaccel.versus import decide, figures, judge  # noqa: E402
from pytest_diffaccel.versus.job import MAX_PAIRS_FACTOR  # noqa: E402

DATA = ROOT / "docs" / "base-vs-head.json"
PAGE = ROOT / "docs" / "base-vs-head.md"
LIMITS = decide.Limits(
    max_slowdown=0.10, max_compile_increase=0.5, max_memory_increase=0.1, memory_slack=MEMORY_SLACK["cpu"], alpha=5e-4
)
FIGURES = ("ratio", "median")
PAIRS = (1, 2, 3, 4)
TARGETS = {"aa": 0.01, "15%": 0.95, "25%": 0.99, "5%": 0.05}
ROUNDS = 9  # a run's timed rounds on this CPU's example matrix (8-12 for the techniques)
# how much a run's own standard error (1.4826 MAD of its rounds) knows of its variance: the MAD's efficiency
# against the standard deviation's, 37% for normal rounds, of the rounds' degrees of freedom
ERROR_DOF = 0.37 * (ROUNDS - 1)


# ----------------------------------------------------------------------------- real jobs


def load() -> dict:
    return json.loads(DATA.read_text()) if DATA.exists() else {"jobs": []}


def save(data: dict) -> None:
    DATA.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def run_job(kind: str, pairs: int, extra_env: dict[str, str], note: str, select: str = "") -> dict:
    """One real job on the example matrix (``-k select`` of it) against HEAD; its versus block and outcome."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "job.json"
        chosen = ["-k", select] if select else []
        command = [sys.executable, "-m", "pytest", "examples", *chosen, "--diffaccel-base=HEAD",
                   f"--diffaccel-base-runs={pairs}", f"--diffaccel-json={report}", "-p", "no:cacheprovider"]  # fmt: skip
        started = time.perf_counter()
        # this tree's plugin in both arms, whatever is installed (the base's worktree goes first in its arm)
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, **extra_env, "PYTHONPATH": path}
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if not report.exists():
            sys.exit(f"the job wrote no report (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
        versus = json.loads(report.read_text())["versus"]
        benches = json.loads(report.read_text())["benchmarks"]
    verdicts = {b["extra_info"]["technique"]: b["extra_info"].get("versus", {}).get("verdict") for b in benches}
    summary = [line for line in done.stdout.splitlines() if line.startswith("=") and " in " in line][-1:]
    return {
        "kind": kind,
        "note": note,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["pytest", *(repr(c) if " " in c else c for c in command[3:-3])]),
        "exit_status": done.returncode,
        "pytest_summary": summary[0].strip("= ") if summary else "",
        "wall_seconds": round(wall, 1),
        "job_seconds": versus["seconds"],
        "runs_session_seconds": versus["test_seconds"],
        "pairs": pairs,
        "runs": len(versus["runs"]),
        "verdicts": verdicts,
        "versus": versus,
    }


def clean_tree() -> None:
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    if dirty:
        sys.exit(f"an A/A job needs the working tree equal to HEAD; commit or stash first:\n{dirty}")


def aa(pairs: int) -> None:
    clean_tree()
    data = load()
    job = run_job("aa", pairs, {}, "base = HEAD, head = the same commit")
    data["jobs"].append(job)
    save(data)
    failed = [t for t, v in job["verdicts"].items() if v and v.startswith("FAIL")]
    print(f"A/A job: {job['pytest_summary']}; failed: {failed or 'none'}; {job['runs']} runs, "
          f"{job['job_seconds']:.0f} s, the runs' own sessions {job['runs_session_seconds']:.0f} s")  # fmt: skip


def from_folder(folder: Path, note: str) -> None:
    """A job's arm files (``<arm>-<pair>.json`` of its folder), judged by the plugin's code at the pairs they
    hold: for a job stopped before its end. Its wall time is not known, so it counts in no cost figure."""
    from pytest_diffaccel.versus.arms import read

    runs = []
    for path in sorted(folder.glob("*-[0-9]*.json")):
        arm, number = path.stem.split("-")[:2]
        if number == "0":
            continue
        runs.append(read(arm, int(number), path, 0, 0.0, []))
    pairs = max(r.number for r in runs)
    tests = sorted({t for r in runs for t in r.figures})
    decisions = {}
    by_test = {}
    for test in tests:
        base = [next((r.figures.get(test) for r in runs if r.arm == "base" and r.number == n), None) for n in range(1, pairs + 1)]
        head = [next((r.figures.get(test) for r in runs if r.arm == "head" and r.number == n), None) for n in range(1, pairs + 1)]
        by_test[test] = (base, head)
    priors = decide.priors_of(by_test)
    for test, (base, head) in by_test.items():
        decisions[test] = decide.decide(test, base, head, priors, None, LIMITS, "HEAD", can_grow=False).headline
    versus = {
        "runs": [
            {"arm": r.arm, "pair": r.number, "tests": {t: {"ratio": f.ratio, "median": f.median} for t, f in r.figures.items()}}
            for r in runs
        ],
        "seconds": None,
        "test_seconds": None,
    }
    data = load()
    data["jobs"].append(
        {
            "kind": "aa",
            "note": note,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": f"pytest examples --diffaccel-base=HEAD --diffaccel-base-runs={pairs} (stopped after {pairs} pairs)",
            "exit_status": None,
            "pytest_summary": f"{sum(1 for v in decisions.values() if v.startswith('pass'))} judged pass, "
            f"{sum(1 for v in decisions.values() if v.startswith('FAIL'))} failed, at {pairs} pairs",
            "wall_seconds": None,
            "job_seconds": None,
            "runs_session_seconds": None,
            "pairs": pairs,
            "runs": len(runs),
            "verdicts": {t.split("[")[-1].rstrip("]"): v for t, v in decisions.items()},
            "versus": versus,
        }
    )
    save(data)
    print(f"imported {len(runs)} runs of {folder}: " + ", ".join(f"{t}: {v}" for t, v in decisions.items() if v != "pass"))


def drill(slowdown: str, technique: str, pairs: int, select: str) -> None:
    clean_tree()
    conftest = ROOT / "examples" / "conftest.py"
    if conftest.exists():
        sys.exit(f"{conftest} exists: this benchmark writes its own there")
    conftest.write_text(
        '"""The head\'s change (benchmarks/base_vs_head.py drill): real work in one technique\'s denoiser."""\n'
        "import os\n\n"
        f'os.environ["DIFFACCEL_SLOWDOWN"] = "{technique}={slowdown}"\n'
    )
    try:
        data = load()
        job = run_job(
            "drill", pairs, {}, f"head only: DIFFACCEL_SLOWDOWN={technique}={slowdown} (examples/conftest.py)", select
        )
        job["drill"] = {"technique": technique, "slowdown": slowdown}
        data["jobs"].append(job)
        save(data)
    finally:
        conftest.unlink()
    print(f"drill job ({technique} +{slowdown}): {job['pytest_summary']}; verdicts: "
          + ", ".join(f"{t}: {v}" for t, v in job["verdicts"].items() if v and v != "pass"))


# ----------------------------------------------------------------------------- the measured spreads


def pair_differences(versus: dict, key: str = "") -> dict[str, dict[str, list[float]]]:
    """test -> figure -> log(head / base) of each pair of a job's runs; with ``key="error"``, each pair's rounds'
    variance instead (the two runs' squared standard errors, judge.pair_noise), where both runs measured one."""
    by_pair: dict[int, dict[str, dict]] = {}
    for run in versus["runs"]:
        by_pair.setdefault(run["pair"], {})[run["arm"]] = run["tests"]
    out: dict[str, dict[str, list[float]]] = {}
    for arms in by_pair.values():
        if "base" not in arms or "head" not in arms:
            continue
        for test, head in arms["head"].items():
            base = arms["base"].get(test)
            if not base:
                continue
            for figure in FIGURES:
                b, h = base.get(figure), head.get(figure)
                if not (b and h):
                    continue
                if not key:
                    out.setdefault(test, {}).setdefault(figure, []).append(math.log(h / b))
                elif base.get(f"{figure}_{key}") is not None and head.get(f"{figure}_{key}") is not None:
                    noise = base[f"{figure}_{key}"] ** 2 + head[f"{figure}_{key}"] ** 2
                    out.setdefault(test, {}).setdefault(figure, []).append(noise)
    return out


def spreads(jobs: list[dict]) -> dict:
    """Each test's pair spread (moderated over the tests, as the gate does), the part of it its runs' rounds
    measured (``noise``: a variance per pair; jobs before the rounds were kept have none), and the spread a
    pair's runs share."""
    diffs: dict[str, dict[str, list[float]]] = {}
    noises: dict[str, dict[str, list[float]]] = {}
    shared: dict[str, list[float]] = {f: [] for f in FIGURES}
    for job in jobs:
        found = pair_differences(job["versus"])
        for test, per in found.items():
            for figure, values in per.items():
                diffs.setdefault(test, {}).setdefault(figure, []).extend(values)
        for test, per in pair_differences(job["versus"], "error").items():
            for figure, values in per.items():
                noises.setdefault(test, {}).setdefault(figure, []).extend(values)
        for figure in FIGURES:  # the pair's mean over its tests: what the whole run moved
            columns = [per[figure] for per in found.values() if figure in per]
            if columns:
                width = min(len(c) for c in columns)
                shared[figure] += [sum(c[i] for c in columns) / len(columns) for i in range(width)]
    out: dict = {"tests": {}, "shared": {}, "noise": {}}
    for figure in FIGURES:
        tests = [t for t, per in diffs.items() if figure in per]
        noise = {t: stats_mean(noises.get(t, {}).get(figure)) for t in tests}
        prior = judge.pair_prior([diffs[t][figure] for t in tests], [noise[t] for t in tests])
        for test in tests:
            comparison = judge.compare(diffs[test][figure], prior, figure, max_slowdown=0.1, alpha=5e-4,
                                       can_grow=False, noise=noise[test])  # fmt: skip
            out["tests"].setdefault(test, {})[figure] = comparison.sigma
            if noise[test] is not None:
                out["noise"].setdefault(test, {})[figure] = noise[test]
        # a pair's mean over T tests varies by the shared spread plus the tests' own over T
        own = [v[figure] ** 2 for v in out["tests"].values() if figure in v]
        values = shared[figure]
        between = sum(v * v for v in values) / len(values) if values else 0.0
        out["shared"][figure] = math.sqrt(max(0.0, between - sum(own) / len(own) / len(own))) if own else 0.0
    return out


def pooled_prior(jobs: list[dict]) -> dict[str, dict[str, float]]:
    """What the A/A jobs' pairs, pooled per test, say of how alike the tests are: the prior's degrees of freedom
    (stats.variance_prior, uncapped) on each figure's pair variances about zero (an A/A pair's expected log
    difference), each test's rounds' noise taken out as the gate does. A job's own starting pairs (one degree
    of freedom each) can't tell; judge.MAX_PAIR_PRIOR_DOF is set from this."""
    out: dict[str, dict[str, float]] = {}
    for figure in FIGURES:
        diffs: dict[str, list[float]] = {}
        noises: dict[str, list[float]] = {}
        for job in jobs:
            for test, per in pair_differences(job["versus"]).items():
                diffs.setdefault(test, []).extend(per.get(figure, []))
            for test, per in pair_differences(job["versus"], "error").items():
                noises.setdefault(test, []).extend(per.get(figure, []))
        tests = [t for t, v in diffs.items() if len(v) >= 2]
        if len(tests) < 3:
            continue
        own = [(sum(x * x for x in diffs[t]) / len(diffs[t]), float(len(diffs[t])), stats_mean(noises.get(t)))
               for t in tests]  # fmt: skip
        prior = judge.fit_prior(own, max_dof=1e6)
        out[figure] = {"dof": prior.dof, "tests": len(tests), "pairs_per_test": sum(d for _, d, _ in own) / len(tests)}
    return out


def rejudged(job: dict) -> str:
    """The job's recorded pairs judged by today's rule (versus.decide, no pair bought: the job can't be rerun):
    which tests fail the latency gate."""
    runs = job["versus"]["runs"]
    numbers = sorted({r["pair"] for r in runs})
    tests = sorted({t for r in runs for t in r["tests"]})

    def figures_of(arm: str, number: int, test: str) -> figures.RunFigures | None:
        run = next((r for r in runs if r["arm"] == arm and r["pair"] == number), None)
        found = (run or {}).get("tests", {}).get(test)
        if not found or found.get("median") is None:
            return None
        return figures.RunFigures(
            test, test, str(found.get("outcome", "passed")), figure="ratio" if found.get("ratio") else "median",
            ratio=found.get("ratio"), median=found.get("median"), ratio_error=found.get("ratio_error"),
            median_error=found.get("median_error"),
        )  # fmt: skip

    arms = {t: ([figures_of("base", n, t) for n in numbers], [figures_of("head", n, t) for n in numbers]) for t in tests}
    priors = decide.priors_of(arms)
    cap = job["pairs"] * MAX_PAIRS_FACTOR
    failed = [
        t.split("[")[-1].rstrip("]")
        for t in tests
        if any(g.name == "latency" and not g.passed for g in decide.decide(t, *arms[t], priors, None, LIMITS, "base", False, cap).gates)
    ]
    return f"fails {', '.join(failed)}" if failed else "all pass"


def stats_mean(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------- the simulation


def simulate_job(model: dict, pairs: int, shifts: dict[str, dict[str, float]], rng: random.Random) -> tuple[set[str], int]:
    """One job: (the tests whose latency gate failed, pair-runs measured); more pairs for the undecided.
    A run's rounds measure its own standard error as a run would: a chi-square draw on ERROR_DOF degrees of
    freedom around the test's measured rounds' variance (none where the model has none)."""
    tests = sorted(model["tests"])
    cap = pairs * MAX_PAIRS_FACTOR
    draws: dict[str, list[dict[str, float]]] = {t: [] for t in tests}
    runs = 0

    def add(count: int, which: list[str]) -> None:
        nonlocal runs
        for _ in range(count):
            common = {f: rng.gauss(0.0, model["shared"][f]) for f in FIGURES}
            for t in which:
                own = model["tests"][t]
                shift = shifts.get(t, {})
                draw = {f: common[f] + rng.gauss(0.0, own.get(f, 0.02)) + shift.get(f, 0.0) for f in FIGURES}
                for f, noise in model.get("noise", {}).get(t, {}).items():  # each run's error, as its rounds tell it
                    for arm in ("base", "head"):
                        draw[f"{f}_{arm}_error"] = math.sqrt(noise / 2 * rng.gammavariate(ERROR_DOF / 2, 2) / ERROR_DOF)
                draws[t].append(draw)
            runs += 2 * len(which)

    add(pairs, tests)
    done = pairs
    while True:
        arms = {t: _arms(t, draws[t]) for t in tests}
        priors = decide.priors_of(arms)
        decisions = {t: decide.decide(t, *arms[t], priors, None, LIMITS, "base", done < cap, cap) for t in tests}
        open_tests = [t for t, d in decisions.items() if d.more]
        if not open_tests or done >= cap:
            break
        add(2, open_tests)
        done += 2
    return {t for t, d in decisions.items() if d.failed}, runs


def _arms(test: str, draws: list[dict[str, float]]) -> decide.Arms:
    def run(d: dict[str, float], arm: str) -> figures.RunFigures:
        head = arm == "head"
        return figures.RunFigures(
            test, test, "passed",
            ratio=math.exp(d["ratio"]) if head else 1.0, median=math.exp(d["median"]) if head else 1.0,
            ratio_error=d.get(f"ratio_{arm}_error"), median_error=d.get(f"median_{arm}_error"),
        )  # fmt: skip

    return [run(d, "base") for d in draws], [run(d, "head") for d in draws]


def simulate(jobs_per: int, seed: int) -> dict:
    data = load()
    real = [j for j in data["jobs"] if j["kind"] == "aa"]
    if not real:
        sys.exit("no real A/A job measured yet: python benchmarks/base_vs_head.py aa --pairs 3")
    model = spreads(real)
    tests = sorted(model["tests"])
    techniques = [t for t in tests if not t.endswith("[fp32]")]
    rng = random.Random(seed)
    results: dict = {"model": model, "jobs_per_scenario": jobs_per, "cap_factor": MAX_PAIRS_FACTOR, "pairs": {}}
    for pairs in PAIRS:
        row: dict = {}
        failed_jobs, runs = 0, 0
        culprits: dict[str, int] = {}
        for _ in range(jobs_per):
            failed, cost = simulate_job(model, pairs, {}, rng)
            failed_jobs += bool(failed)
            runs += cost
            for test in failed:
                culprits[test] = culprits.get(test, 0) + 1
        row["aa_false_alarm"] = failed_jobs / jobs_per
        row["aa_false_alarm_tests"] = culprits
        row["aa_runs"] = runs / jobs_per / len(tests)  # full-matrix runs' worth
        for size in ("5%", "15%", "25%"):
            shift = math.log1p(float(size.rstrip("%")) / 100)
            caught = others = 0
            for index in range(jobs_per):
                victim = techniques[index % len(techniques)]
                failed, _ = simulate_job(model, pairs, {victim: {"ratio": shift, "median": shift}}, rng)
                caught += victim in failed
                others += bool(failed - {victim})
            every = sum(
                bool(simulate_job(model, pairs, {t: {"median": shift} for t in tests}, rng)[0])
                for _ in range(jobs_per // 2)
            )
            row[f"one_{size}"] = caught / jobs_per
            row[f"one_{size}_others_failed"] = others / jobs_per
            row[f"every_{size}"] = every / (jobs_per // 2)
        row["meets"] = (
            row["aa_false_alarm"] <= TARGETS["aa"] and row["one_15%"] >= TARGETS["15%"]
            and row["one_25%"] >= TARGETS["25%"] and row["one_5%"] <= TARGETS["5%"]
        )  # fmt: skip
        results["pairs"][str(pairs)] = row
        print(f"{pairs} pairs: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    data["simulation"] = results
    save(data)
    return data


def render(data: dict) -> str:
    sim = data["simulation"]
    lines = [
        "# Base vs head in one job: how good it is",
        "",
        "<!-- generated by python benchmarks/base_vs_head.py from docs/base-vs-head.json; do not edit -->",
        "",
        "Measured on this project's 2-core CPU with the example matrix (`pytest examples`, "
        f"{len(sim['model']['tests'])} tests measured). Targets: A/A at most 1 job in 100 with any latency failure; "
        "+15% in one technique caught in at least 95% of jobs, +25% in 99%; +5% failed in at most 5%.",
        "",
        "## Real jobs",
        "",
        "| job | command | pairs | runs | outcome | today's rule on its pairs | job wall | runs' own sessions | overhead |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for job in data["jobs"]:
        if not job["job_seconds"]:
            failed = [f"{t}: {v}" for t, v in job["verdicts"].items() if v and v.startswith("FAIL")]
            outcome = job["pytest_summary"] + (f" ({'; '.join(failed)})" if failed else "")
            lines.append(f"| {job['kind']} ({job['note']}) | `{job['command']}` | {job['pairs']} | {job['runs']} | {outcome} | {rejudged(job)} | - | - | - |")
            continue
        overhead = job["job_seconds"] / job["runs_session_seconds"] if job["runs_session_seconds"] else float("nan")
        failed = [f"{t}: {v}" for t, v in job["verdicts"].items() if v and v.startswith("FAIL")]
        outcome = job["pytest_summary"] + (f" ({'; '.join(failed)})" if failed else "")
        lines.append(
            f"| {job['kind']} ({job['note']}) | `{job['command']}` | {job['pairs']} | {job['runs']} | {outcome} | "
            f"{rejudged(job)} | {job['job_seconds']:.0f} s | {job['runs_session_seconds']:.0f} s | {overhead:.2f}x |"
        )
    lines += [
        "",
        "Overhead: the job's wall time over the sum of its runs' own pytest sessions (the worktree, the base's",
        "collection, each process's start and imports, the judging). Today's rule on its pairs: the job's recorded",
        "pairs judged by the rule as it is now (`versus.decide`; no pair can be bought after the fact), which tests",
        "fail the latency gate.",
        "",
        f"## Simulated jobs ({sim['jobs_per_scenario']} per row, at the measured pair spreads)",
        "",
        "| starting pairs | A/A jobs with a false alarm | runs per job (matrix runs) | +5% one | +15% one | +25% one "
        "| +5% every test | +15% every test | +25% every test | meets the targets |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pairs, row in sim["pairs"].items():
        lines.append(
            f"| {pairs} | {row['aa_false_alarm']:.2%} | {row['aa_runs']:.2f} | {row['one_5%']:.1%} | "
            f"{row['one_15%']:.1%} | {row['one_25%']:.1%} | {row['every_5%']:.1%} | {row['every_15%']:.1%} | "
            f"{row['every_25%']:.1%} | {'yes' if row['meets'] else 'no'} |"
        )
    meeting = [int(p) for p, row in sim["pairs"].items() if row["meets"]]
    default_pairs = DEFAULTS["base_runs"]
    default = sim["pairs"].get(str(default_pairs))
    if meeting:
        row = sim["pairs"][str(min(meeting))]
        verdict = (
            f"On this machine the smallest starting pairs that meet every target: **{min(meeting)}** "
            f"({row['aa_runs']:.1f} matrix runs in an A/A job, the cap {min(meeting) * sim.get('cap_factor', 3)} pairs)."
        )
    else:
        verdict = "On this machine no pair count simulated meets every target."
    if default and default.get("aa_false_alarm_tests"):
        culprits = sorted(default["aa_false_alarm_tests"].items(), key=lambda kv: -kv[1])
        typical_ratio = sorted(v["ratio"] for v in sim["model"]["tests"].values() if "ratio" in v)
        middle = typical_ratio[len(typical_ratio) // 2]
        noise = sim["model"].get("noise", {})

        def rounds(test: str) -> str:
            value = noise.get(test, {}).get("ratio")
            return "" if value is None else f", its rounds' {math.sqrt(value):.1%} of it"

        verdict += " At the default, the A/A false alarms came from " + ", ".join(
            f"{test.split('[')[-1].rstrip(']')} ({count} of {sim['jobs_per_scenario']} jobs; its own pair spread "
            f"{sim['model']['tests'][test].get('ratio', 0):.1%}{rounds(test)}, the typical {middle:.1%})"
            for test, count in culprits[:3]
        ) + "."
    if default:
        verdict += (
            f" The default, {default_pairs} pairs ({default['aa_runs']:.1f} matrix runs in an A/A job), catches +15% "
            f"in one technique in {default['one_15%']:.0%} of jobs and +25% in {default['one_25%']:.0%}"
            + (
                "."
                if default["meets"]
                else (": on a CPU this noisy, give `--diffaccel-base-runs` the count above." if meeting else ".")
            )
            + " A slowdown of every test at once is fp32's row to catch, in seconds, whose pair spread here is "
            "too wide for it."
        )
    lines += ["", verdict]
    pooled = pooled_prior([j for j in data["jobs"] if j["kind"] == "aa"])
    if pooled:
        lines += [
            "",
            "How alike the tests are: the real A/A jobs' pairs, pooled per test ("
            + ", ".join(
                f"{'ratio' if f == 'ratio' else 'seconds'}: {v['tests']} tests, {v['pairs_per_test']:.1f} pairs a test"
                for f, v in pooled.items()
            )
            + "), fit a typical spread worth "
            + " and ".join(f"{v['dof']:.1f} pairs on {'the ratio' if f == 'ratio' else 'seconds'}" for f, v in pooled.items())
            + f"; the gate counts it as {judge.MAX_PAIR_PRIOR_DOF:g} pairs at most (`judge.MAX_PAIR_PRIOR_DOF`): a job's "
            "own starting pairs, one degree of freedom each, can't tell how unalike its tests are.",
        ]
    shared = sim["model"]["shared"]
    typical = {f: sorted(v[f] for v in sim["model"]["tests"].values() if f in v) for f in FIGURES}
    lines += [
        "",
        "The model: each pair's log difference of a test is the spread its pair runs share (ratio to the "
        f"interleaved fp32 {shared['ratio']:.2%}, seconds {shared['median']:.2%}) plus the test's own "
        f"(median over the tests: ratio {typical['ratio'][len(typical['ratio']) // 2]:.2%}, seconds "
        f"{typical['median'][len(typical['median']) // 2]:.2%}), from the real A/A jobs above, each test's "
        "moderated as the gate does. Each run measures its own standard error from its rounds, drawn around what "
        "the A/A jobs that kept them measured for the test (chi-square on "
        f"{ERROR_DOF:.1f} degrees of freedom: {ROUNDS} rounds, a MAD's efficiency), and the gate expects the "
        "test's pairs to scatter by the job's between-run spread plus that. A slowdown in one technique moves its ratio and "
        "its seconds; a slowdown of every test moves the seconds only. Undecided tests get two more pairs at a "
        f"time up to {sim.get('cap_factor', 3)} times the starting pairs, and a test significant on its starting "
        "pairs two more to confirm it, as a job does.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", default="simulate", choices=("aa", "drill", "import", "simulate", "page"))
    parser.add_argument("--select", default="", help="-k expression: a part of the example matrix")
    parser.add_argument("--folder", type=Path, help="import: a stopped job's folder of arm files")
    parser.add_argument("--note", default="")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--slowdown", default="15%")
    parser.add_argument("--technique", default="fuse-qkv")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.part == "aa":
        aa(args.pairs)
    elif args.part == "drill":
        drill(args.slowdown, args.technique, args.pairs, args.select)
    elif args.part == "import":
        from_folder(args.folder, args.note)
    else:
        data = simulate(args.jobs, args.seed) if args.part == "simulate" else load()
        PAGE.write_text(render(data))
        print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
