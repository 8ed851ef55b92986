#!/usr/bin/env python3
"""Every figure of the README and of the docs pages comes from a committed file: this script renders them.

    python scripts/readme_figures.py            # rewrite the figure sections of README.md and docs/**/*.md
    python scripts/readme_figures.py --check    # exit 1 when a section differs (tests/test_readme.py runs it)
    python scripts/readme_figures.py --record   # run `pytest examples` (against the committed baselines) and
                                                # commit its JSON report and terminal output under docs/, and
                                                # docs/report-screenshot.png: its HTML report in headless Chromium

A section sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` in any page (README.md,
CHANGELOG.md or a page under docs/); it says which command made the numbers. A section whose markers
stand on one line (``<!-- figures:NAME -->1.84x<!-- /figures:NAME -->``) is an inline figure inside a
sentence; a name may be placed any number of times. Links a section holds are written relative to the
repository root (``docs/verdict-quality.md``) and rewritten relative to the page they land in. Sections
and their sources:
* ``examples-output``: the terminal summary of `pytest examples` (docs/examples-output.txt, --record);
* ``examples-excerpt``: a few rows of it, for the README, and the history it was judged against
  (docs/examples.json);
* ``quickstart``: the README's three steps, with how long step 1 took here and the estimate for a
  recording (docs/examples-output.txt, docs/examples.json);
* ``examples-time``, ``recording-estimate``: step 1's time and the estimated time of a 5-run recording,
  inline (docs/examples-output.txt; no recording's log is committed);
* ``drill-output``: the failure a fire drill gives (docs/drill-output.txt, --record);
* ``search-output``: a real `--diffaccel-search` run (docs/search-output.txt, --record);
* ``search-left-out``: the line of that run that leaves a lossy candidate out (docs/search-output.txt);
* ``techniques``: the technique table (scripts/techniques_table.py over docs/examples.json);
* ``cpu-speedups``: bf16's and int8-dynamic's speed-up on this CPU, inline (docs/examples.json);
* ``bf16-two-cpus``: bf16 on this Intel Xeon and on the committed AMD EPYC history, inline
  (docs/examples.json, baselines/cpu-amd-epyc.json);
* ``floors``: the SSIM floors (pytest_diffaccel/floors.json, benchmarks/fidelity_floors.py);
* ``floors-minutes``: how long that measurement took, inline (floors.json);
* ``captions``: how many captions each bundled preset draws right, per seed (models/presets/TRAINING.json);
* ``training-time``: how long the confirmed full training rerun took, inline (TRAINING.json);
* ``default-floors``: the floors a model nobody measured gets, in one sentence (floors.json);
* ``one-run``: what a one-run history catches and how many runs decide an undecided slowdown
  (pytest_diffaccel.latency at the defaults); ``one-run-catches``: the same figure, inline;
* ``verdict``: the latency verdict's quality (docs/verdict-quality.json, benchmarks/verdict_quality.py);
* ``verdict-minutes``: how long that measurement took, inline (docs/verdict-quality.json);
* ``same-threshold``: pytest-benchmark's rule at our threshold on the same samples (docs/verdict-quality.json);
* ``false-alarms``: what alpha promises and what a whole clean matrix measured (docs/latency-calibration.json,
  docs/verdict-quality.json); ``matrix-false-alarms``: the simulated range, inline;
* ``calibration-time``: how long the calibration simulation took, inline (docs/latency-calibration.json);
* ``base-vs-head-cost``: what a default base-vs-head job costs in runs (docs/base-vs-head.json);
* ``history-table``: `diffaccel history baselines/ -k ...` on the committed baselines;
* ``gpu-results``: the GPU proof's tables (docs/gpu-results/*.json, scripts/gpu_results.py);
* ``fidelity``: the fidelity gates against mutations (docs/verdict-quality.json);
* ``options``: the options reference (pytest_diffaccel.config.OPTIONS, scripts/docs_reference.py);
* ``versions``: the declared lower bounds and the stack of the recorded run (pyproject.toml, docs/examples.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"
DOCS = ROOT / "docs"
BASELINES = ROOT / "baselines"
EXCERPT = ("fp32", "bf16", "tf32", "sdpa-flash", "fuse-qkv", "tiny-vae", "int8-dynamic", "compile", "vae-tiling")
EXAMPLES_JSON = DOCS / "examples.json"
EXAMPLES_OUTPUT = DOCS / "examples-output.txt"
DRILL_OUTPUT = DOCS / "drill-output.txt"
SEARCH_OUTPUT = DOCS / "search-output.txt"
SEARCH_BUDGET = 5
DRILL = "fuse-qkv=30%"
VERDICT_JSON = DOCS / "verdict-quality.json"
CALIBRATION_JSON = DOCS / "latency-calibration.json"
BASE_VS_HEAD_JSON = DOCS / "base-vs-head.json"
GPU_REPORTS = ("tiny", "sd15", "sdxl-run1", "sdxl-run2")  # docs/gpu-results/<name>.json, in the order they ran
HISTORY_K = "compile or fp32 or fuse"  # the tests docs/reports.md shows `diffaccel history` on
RECORD_RUNS = 5  # the README's step 2: --diffaccel-save-runs=5
UNUSED_EXAMPLE = 1.24  # the slowdown docs/environments.md shows undecided against a one-run history
SCREENSHOT = DOCS / "report-screenshot.png"


def _fenced(text: str) -> str:
    return "```\n" + text.rstrip("\n") + "\n```"


def examples_output() -> str:
    return "Output of `python scripts/readme_figures.py --record` (`pytest examples` on 2 CPU cores):\n\n" + _fenced(
        EXAMPLES_OUTPUT.read_text()
    )


def _examples_lines() -> list[str]:
    return EXAMPLES_OUTPUT.read_text().splitlines()


def examples_excerpt() -> str:
    """The header, the table's columns and a few of its rows, pytest's last line, and the history it was
    judged against (why fp32 rests on fewer runs than the others)."""
    lines = _examples_lines()
    head = next(i for i, line in enumerate(lines) if line.startswith("technique "))
    rows = [line for line in lines[head + 2 :] if line.split(" ", 1)[0] in EXCERPT]
    shown = [lines[0], lines[head], lines[head + 1], *rows, "...", lines[-1]]
    return (
        f"`pytest examples` on 2 CPU cores, {len(rows)} of its rows (the whole output: "
        "[docs/index.md](docs/index.md#what-a-run-prints); recorded by `python scripts/readme_figures.py --record`):"
        "\n\n" + _fenced("\n".join(shown)) + "\n\n" + _judged_against()
    )


def _judged_against() -> str:
    """The committed history the recorded run was judged against, from the run's own JSON report."""
    report = json.loads(EXAMPLES_JSON.read_text())
    series = {
        b["extra_info"]["technique"]: (b["extra_info"].get("baseline") or {}).get("series") or []
        for b in report["benchmarks"]
    }
    series = {name: points for name, points in series.items() if points}
    runs = sorted({len(points) for points in series.values()})
    dates = sorted({p["recorded"][:10] for points in series.values() for p in points})
    fp32 = series["fp32"]
    newest = max(p["level"] for p in fp32)
    new = [math.log(p["value"]) for p in fp32 if p["level"] == newest]
    before = [math.log(p["value"]) for p in fp32 if p["level"] == newest - 1]
    moved = math.exp(sum(new) / len(new) - sum(before) / len(before)) if new and before else None
    text = (
        f"It was judged against the committed history: {' to '.join(map(str, runs))} saved runs of each of its "
        f"{len(series)} tests ({', '.join(dates)}), not one recorded by step 2. "
    )
    if moved is not None:
        runs_of_level = f"{len(new)} run{'s' if len(new) != 1 else ''}"
        text += (
            f'fp32, judged in seconds, says "{runs_of_level}": its newest saved run was {moved:.2f}x '
            f"{'slower' if moved >= 1 else 'faster'} than the {len(before)} before it, and saving that run started "
            f"a new [level](docs/glossary.md#level), so its gate rests on the {runs_of_level} of that level (its "
            "spread still pools every run)."
        )
    return text


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _step1() -> tuple[float, int, int]:
    """`pytest examples`'s wall time, passed and skipped tests, from pytest's last line of the recorded run."""
    last = _examples_lines()[-1]
    found = re.search(r"(\d+) passed, (\d+) skipped.* in ([0-9.]+)s", last)
    assert found, last
    return float(found.group(3)), int(found.group(1)), int(found.group(2))


def examples_time() -> str:
    return f"{_step1()[0]:.0f} s"


def recording_estimate() -> str:
    return f"about {_minutes(RECORD_RUNS * _step1()[0])}"


def quickstart() -> str:
    """The three steps, step 1 with how long it took on the machine that recorded docs/ (2 CPU cores), step 2
    with an estimate (no log of a recording is committed)."""
    run, passed, skipped = _step1()
    report = json.loads(EXAMPLES_JSON.read_text())
    walls = {b["extra_info"]["technique"]: b["extra_info"] for b in report["benchmarks"]}
    drilled = walls[DRILL.split("=")[0]]
    steps = [
        ("pytest examples", f"1. {_minutes(run)} here"),
        (
            f"pytest examples --diffaccel-save=all --diffaccel-save-runs={RECORD_RUNS}",
            f"2. estimate: {_minutes(RECORD_RUNS * run)}",
        ),
        (f'DIFFACCEL_SLOWDOWN="{DRILL}" pytest examples -k fuse-qkv', "3. one test, see below"),
    ]
    width = max(len(command) for command, _ in steps) + 2
    return "\n".join(
        [
            "```bash",
            *(f"{command.ljust(width)}# {comment}" for command, comment in steps),
            "```",
            "",
            f"Step 1 took {run:.0f} s on the 2 CPU cores that recorded `docs/examples-output.txt`: {passed} tests "
            f"passed, {skipped} skipped with their reason. No log of a {RECORD_RUNS}-run recording is committed: "
            f"step 2's time is an estimate, {RECORD_RUNS} x step 1, plus a process start per run. Step 3 runs one "
            f"test: fuse-qkv's took {drilled['wall_seconds']:.0f} s in step 1; the session loads the model first "
            f"({drilled['load_seconds']:.0f} s) and the drill's slowdown earns the test a "
            "[confirmation block](docs/glossary.md#suspect-confirmation-block).",
        ]
    )


def drill_output() -> str:
    return (
        f'Output of `DIFFACCEL_SLOWDOWN="{DRILL}" pytest examples -k fuse-qkv` '
        "(recorded by `python scripts/readme_figures.py --record`):\n\n" + _fenced(DRILL_OUTPUT.read_text())
    )


def search_output() -> str:
    return (
        f"Output of `pytest examples --diffaccel-search --diffaccel-search-budget {SEARCH_BUDGET}` on 2 CPU cores "
        "(recorded by `python scripts/readme_figures.py --record`):\n\n" + _fenced(SEARCH_OUTPUT.read_text())
    )


def techniques() -> str:
    import techniques_table

    report = json.loads(EXAMPLES_JSON.read_text())
    return (
        "Measured by `python scripts/readme_figures.py --record` "
        "(`pytest examples --diffaccel-json=docs/examples.json`) on 2 CPU cores:\n\n" + techniques_table.render(report)
    )


def floors() -> str:
    import fidelity_floors

    from pytest_diffaccel import floors as floors_module

    data = json.loads(floors_module.FLOORS_FILE.read_text())
    tables = fidelity_floors.render_tables(data)
    # the per-model table only: the presets' lowest floor per class (floors.json's `default`) is not what a model
    # nobody measured gets, since each is capped by the technique's own threshold (the next section says what it gets)
    measured, _, rest = tables.partition("\nModels without measured floors")
    closing = rest[rest.index("A real model drifts") :] if "A real model drifts" in rest else ""
    return (
        measured.rstrip("\n")
        + "\n\nA model nobody measured takes each class's lowest floor over the presets (`default` in floors.json), "
        "capped by the technique's own threshold: what it gets is "
        "[below](docs/how-it-decides.md#what-the-floors-do-not-promise).\n\n" + closing
    )


def captions() -> str:
    """How many of the 30 colour x background captions each bundled preset draws, per seed (TRAINING.json)."""
    from pytest_diffaccel.models import PRESETS_DIR

    info = json.loads((PRESETS_DIR / "TRAINING.json").read_text())
    by_seed = info.get("caption_score_seeds", {})
    seeds = sorted({seed for scores in by_seed.values() for seed in scores}, key=int)
    rows = ["| preset | " + " | ".join(f"seed {seed}" for seed in seeds) + " |", "|---|" + "---|" * len(seeds)]
    rows += [f"| `{name}` | " + " | ".join(by_seed[name][seed] for seed in seeds) + " |" for name in sorted(by_seed)]
    return (
        f"Captions drawn right at the preset's default call (`{info.get('caption_score_command', '')}`, "
        "recorded in `pytest_diffaccel/models/presets/TRAINING.json`; a picture is right when its background "
        "and its shape's colour are the named ones, nearest of the palette, and the shape covers 2-50% of it):\n\n"
        + "\n".join(rows)
    )


def default_floors() -> str:
    """The fidelity thresholds on a model nobody measured, per class of technique, weakest last."""
    from pytest_diffaccel import floors as floors_module
    from pytest_diffaccel.techniques import builtin_registry

    registry = builtin_registry()
    own = {name: t.min_ssim for name, t in registry.techniques.items()}
    unmeasured = floors_module.overrides("a model nobody measured", generic=own)
    by_class: dict[str, dict[str, float]] = {}
    for name in registry.techniques:
        klass = floors_module.CLASS_OF.get(name, "registered")
        by_class.setdefault(klass, {})[name] = unmeasured.get(name, own[name])
    weakest = min(min(values.values()) for values in by_class.values())

    def shown(values: dict[str, float]) -> str:
        low, high = min(values.values()), max(values.values())
        return f"{low:g}" if low == high else f"{low:g}-{high:g}"

    ordered = sorted(by_class.items(), key=lambda kv: (-min(kv[1].values()), kv[0]))
    strong = [f"{klass} {shown(values)}" for klass, values in ordered if min(values.values()) > weakest]
    weak = sorted(name for _, values in ordered for name, value in values.items() if value == weakest)
    measured = json.loads(floors_module.FLOORS_FILE.read_text())["models"]
    presets = [
        f"{model}: " + ", ".join(sorted(k for k, v in data["classes"].items() if v["floor"] <= weakest))
        for model, data in sorted(measured.items())
        if any(v["floor"] <= weakest for v in data["classes"].values())
    ]
    return (
        "On a model nobody measured (a hub id, a local folder) the fidelity gate's thresholds are, per class of "
        "technique (the presets' lowest floor in `pytest_diffaccel/floors.json`, capped by the technique's own): "
        + "; ".join(strong)
        + "; and "
        + ", ".join(f"`{n}`" for n in weak[:-1])
        + f" and `{weak[-1]}` {weakest:g}, a floor only a broken image fails. On the bundled presets the classes "
        f"measured at that floor are " + "; ".join(presets) + "."
    )


def verdict() -> str:
    import verdict_quality

    return verdict_quality.summary(json.loads(VERDICT_JSON.read_text()))


def same_threshold() -> str:
    """pytest-benchmark's rule (median beyond a threshold) on the same samples, at 5% and at our 10%."""
    import verdict_quality

    from pytest_diffaccel import stats

    raw = json.loads(VERDICT_JSON.read_text())
    matrix, entries = set(raw["matrix"]), raw["baselines"]
    analysis = raw["analysis"]
    levels = sorted(analysis["detection"], key=float)

    def ratio(row: dict) -> float | None:  # this run's block-1 rounds over the newest stored run's
        entry = entries.get(row["test"])
        if entry is None or row["technique"] not in matrix:
            return None
        key = "relative_samples" if row["judged_on"] == "ratio" else "samples"
        candidate, baseline = row.get(key), entry.get(key)
        return stats.median(candidate) / stats.median(baseline) if candidate and baseline else None

    def cells(threshold: float) -> list[str]:
        per_run = [[r for r in (ratio(row) for row in run["rows"]) if r is not None] for run in raw["aa"]]
        hits = sum(r > 1 + threshold for run in per_run for r in run)
        judged = sum(len(run) for run in per_run)
        runs = sum(any(r > 1 + threshold for r in run) for run in per_run)
        out = [verdict_quality.rate(hits, judged), verdict_quality.rate(runs, len(per_run))]
        for level in levels:
            seen = [r for r in (ratio(row) for row in raw["slow"] if f"{row['level']:g}" == level) if r is not None]
            out.append(f"{sum(r > 1 + threshold for r in seen) / len(seen):.0%}" if seen else "-")
        return out

    per_test, judged = analysis["per_test"]
    failed, runs = analysis["runs_failed"]
    ours = [verdict_quality.rate(per_test, judged), verdict_quality.rate(failed, runs)]
    ours += [f"{analysis['detection'][level][0]:.0%}" for level in levels]
    header = " | ".join(f"+{float(level):.0%} detected" for level in levels)
    same = cells(0.10)
    rows = [
        ("**this plugin**: run-level, max-slowdown 10%, alpha 0.0005", ours),
        ("pytest-benchmark `--benchmark-compare-fail=median:10%` (the same threshold)", same),
        ("pytest-benchmark `--benchmark-compare-fail=median:5%` (the table above)", cells(0.05)),
    ]
    detection = "the same slowdowns" if same[2:] == ours[2:] else "different slowdowns (see the columns)"
    return "\n".join(
        [
            f"Rendered by `python scripts/readme_figures.py` from the samples in `docs/verdict-quality.json` "
            f"(`{raw['command']}`): each judgement again, this run's block-1 rounds against the newest stored "
            "run's rounds, by pytest-benchmark's rule at our threshold and at 5%.",
            "",
            f"| rule | A/A false alarms per test | A/A runs with any | {header} |",
            "|---|---:|---:|" + "---:|" * len(levels),
            *(f"| {name} | " + " | ".join(values) + " |" for name, values in rows),
            "",
            f"At the same threshold the two rules detect {detection} here; false alarms per test: {ours[0]} for "
            f"this plugin, {same[0]} for pytest-benchmark's rule, over {judged} judgements in {runs} A/A runs"
            + (": too few to tell the two apart with confidence." if judged < 200 else "."),
        ]
    )


def fidelity() -> str:
    import verdict_quality

    return verdict_quality.fidelity_table(json.loads(VERDICT_JSON.read_text()))


def options() -> str:
    import docs_reference

    return docs_reference.render()


def versions() -> str:
    """The declared lower bounds (pyproject.toml) and the stack of the recorded run (docs/examples.json)."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = ", ".join(d.replace(">=", " ") + "+" for d in declared if ">=" in d)
    report = json.loads(EXAMPLES_JSON.read_text())
    info = report["machine_info"]["diffaccel"]
    environment = info.get("environment") or {}
    stack = environment.get("software") or info.get("versions") or {}
    shown = ", ".join(f"{k} {v}" for k, v in stack.items() if v is not None)
    from pytest_diffaccel.fingerprint import describe_hardware

    hardware = describe_hardware(environment["hardware"]) if environment.get("hardware") else "not recorded"
    return (
        f"Declared lower bounds (`pyproject.toml`): {bounds}; `bash scripts/min-versions.sh` runs the suite in a "
        "venv with exactly them.\n\n"
        f"The recorded run of `pytest examples` (`docs/examples.json`, {report['datetime'][:10]}) ran on: {shown}; "
        f"hardware: {hardware}."
    )


def search_left_out() -> str:
    """The line of the real search (docs/search-output.txt) that leaves a lossy candidate out."""
    found = [line for line in SEARCH_OUTPUT.read_text().splitlines() if line.strip().startswith("left out:")]
    if not found:
        return "(The recorded search in `docs/search-output.txt` left no candidate out.)"
    return "From the real search below (`docs/search-output.txt`):\n\n" + _fenced("\n".join(found))


def _speedups() -> dict[str, float]:
    report = json.loads(EXAMPLES_JSON.read_text())
    return {b["extra_info"]["technique"]: b["extra_info"]["speedup"] for b in report["benchmarks"]}


def cpu_speedups() -> str:
    speed = _speedups()
    return f"bf16 ran at {speed['bf16']:.2f}x and int8-dynamic at {speed['int8-dynamic']:.2f}x fp32's speed"


def bf16_two_cpus() -> str:
    """bf16 on this project's Intel Xeon (docs/examples.json) and on the committed AMD EPYC history."""
    intel = _speedups()["bf16"]
    amd = json.loads((BASELINES / "cpu-amd-epyc.json").read_text())["entries"]
    epyc = amd["examples/test_acceleration.py::test_acceleration[bf16]"]["speedup"]
    return (
        f"bf16 ran at {intel:.2f}x fp32's speed on this project's Intel Xeon with AVX-512 BF16 "
        f"(`docs/examples.json`) and at {epyc:.2f}x, {1 / epyc:.1f}x slower than fp32, on the AMD EPYC whose "
        "history is also committed (`baselines/cpu-amd-epyc.json`, recorded before fingerprints, so which "
        "instruction sets it had is not recorded)"
    )


def floors_minutes() -> str:
    from pytest_diffaccel import floors as floors_module

    return f"{json.loads(floors_module.FLOORS_FILE.read_text())['minutes']:.0f} minutes"


def training_time() -> str:
    """The confirmed full rerun of scripts/train_tiny.py (TRAINING.json's ``confirmed``)."""
    from pytest_diffaccel.models import PRESETS_DIR

    confirmed = json.loads((PRESETS_DIR / "TRAINING.json").read_text())["confirmed"]
    return f"{confirmed['seconds']:.0f} s ({confirmed['seconds'] / 60:.0f} minutes, {confirmed['date']})"


def _one_run() -> tuple[float, int | None, object, float, float]:
    """The smallest slowdown a one-run history can fail, and the runs that would decide UNUSED_EXAMPLE."""
    from pytest_diffaccel import config, history, latency

    slow, alpha = config.DEFAULTS["max_slowdown"], config.DEFAULTS["alpha"]
    spread = history.spread([[0.0]], "ratio")
    catches = latency.detectable_ratio(spread, 1, slow, alpha)
    deciding = latency.deciding_runs(math.log(UNUSED_EXAMPLE), spread, alpha)
    return catches, deciding, spread, slow, alpha


def one_run_catches() -> str:
    return f"{_one_run()[0]:.2f}x"


def one_run() -> str:
    catches, deciding, spread, slow, alpha = _one_run()
    decide = f"about {deciding} runs of history would decide it" if deciding else "no history length would decide it"
    return (
        f"A history saved once has one run; its spread is assumed ({spread.sigma:.0%}, worth {spread.prior_dof:g} "
        f"runs), and the smallest slowdown it can make significant is {catches:.2f}x (the table says "
        f"`1 run, catches >={catches:.2f}x`). When the confirmation blocks agree beyond max-slowdown but the history "
        "can't make it significant, the verdict is **undecided**: its own word in the table, the summary "
        f"(`undecided bf16: {UNUSED_EXAMPLE:.2f}x beyond max-slowdown {slow:.0%} against 1 run(s), not significant: "
        f"{decide}`) and the JSON (`extra_info.baseline.undecided`, `deciding_runs`). Both figures are the gate's "
        f"own code at the defaults (max-slowdown {slow:.0%}, alpha {alpha:g}: `latency.detectable_ratio`, "
        "`latency.deciding_runs`), rendered by `python scripts/readme_figures.py`."
    )


def verdict_minutes() -> str:
    return f"{json.loads(VERDICT_JSON.read_text())['minutes']:.0f} minutes"


def calibration_time() -> str:
    return f"{json.loads(CALIBRATION_JSON.read_text())['seconds']:.0f} s"


PLUGIN_RULE = "plugin (fitted prior, Student's t)"
SCENARIOS = {"busy": "2 busy cores", "idle": "2 idle cores", "alike": "every technique at one spread"}


def _matrix_rates() -> tuple[dict[tuple[str, int], float], int]:
    data = json.loads(CALIBRATION_JSON.read_text())
    rates = {
        (scenario, int(runs)): numbers["false_alarm"]
        for scenario, rules in data["scenarios"].items()
        for runs, numbers in rules[PLUGIN_RULE].items()
    }
    return rates, len(data["spreads"]["busy"])


def matrix_false_alarms() -> str:
    rates, size = _matrix_rates()
    low, high = min(rates, key=rates.__getitem__), max(rates, key=rates.__getitem__)
    return (
        f"from {rates[low]:.2%} to {rates[high]:.2%} of clean runs of the {size}-technique matrix (the most on "
        f"{SCENARIOS[high[0]]} with {high[1]} runs of history)"
    )


def false_alarms() -> str:
    """What alpha bounds, and what a whole clean matrix measured: simulated and counted."""
    from pytest_diffaccel import config

    alpha = config.DEFAULTS["alpha"]
    rates, size = _matrix_rates()
    low, high = min(rates, key=rates.__getitem__), max(rates, key=rates.__getitem__)
    target = sum(rate > 0.02 for rate in rates.values())
    failed, runs = json.loads(VERDICT_JSON.read_text())["analysis"]["runs_failed"]
    return (
        f"alpha {alpha:g} per test: were the tests independent and their spread known, 1 - (1 - alpha)^20 = "
        f"{1 - (1 - alpha) ** 20:.1%} would bound the false alarms of a clean 20-test matrix. Neither holds (the "
        "spread is estimated from a short history), so no such bound is promised; what the gate does is measured. "
        f"Simulated with the run-to-run spreads measured on this project's CPU, a clean run of the {size}-technique "
        f"matrix fails from {rates[low]:.2%} ({SCENARIOS[low[0]]}, {low[1]} runs of history) to {rates[high]:.2%} "
        f"({SCENARIOS[high[0]]}, {high[1]} runs of history), {'above' if target else 'within'} the 2% target "
        f"{'in ' + str(target) + ' of the ' + str(len(rates)) + ' cases' if target else 'in every case'} "
        "([Latency gate calibration](docs/latency-calibration.md), `docs/latency-calibration.json`); counted on "
        f"real runs, {failed} of {runs} A/A runs failed, too few to show a rate "
        "([Verdict quality](docs/verdict-quality.md))."
    )


def base_vs_head_cost() -> str:
    """What a default base-vs-head job costs, from the simulated jobs of docs/base-vs-head.json."""
    from pytest_diffaccel import config

    pairs = config.DEFAULTS["base_runs"]
    simulation = json.loads(BASE_VS_HEAD_JSON.read_text())["simulation"]
    row = simulation["pairs"][str(pairs)]
    return (
        f"**What it costs**: a default job starts with {pairs} pairs, {2 * pairs} runs of your selection "
        f"(`--diffaccel-base-runs`), and a test still undecided gets two more pairs at a time, up to "
        f"{simulation['cap_factor'] * pairs} pairs. Simulated at the pair spreads measured on this project's "
        f"2-core CPU, an A/A job of the example matrix cost {row['aa_runs']:.1f} runs of the whole selection "
        f"on average ({simulation['jobs_per_scenario']} simulated jobs; `docs/base-vs-head.json`, "
        "`python benchmarks/base_vs_head.py`; the rates and the real job: [Base vs head](docs/base-vs-head.md))."
    )


def history_table() -> str:
    """`diffaccel history baselines/ -k HISTORY_K` on the committed baselines, as the command prints it."""
    from pytest_diffaccel import history_command

    select = history_command.matcher(HISTORY_K)
    blocks = []
    for stored in history_command.read(str(BASELINES)):
        rows = history_command.rows_of(stored.entries, select, history_command.FIGURES["auto"])
        if rows:
            blocks.append("\n".join([*history_command.heading(stored), *history_command.table_lines(rows)]))
    text = "\n\n".join(blocks).replace(str(ROOT) + os.sep, "")
    return (
        f'Output of `diffaccel history baselines/ -k "{HISTORY_K}"` on the committed `baselines/` '
        "(rendered by `python scripts/readme_figures.py`):\n\n" + _fenced(text)
    )


def gpu_tables() -> str:
    """The GPU proof's tables, from its committed JSON reports (scripts/gpu_results.py renders each)."""
    import gpu_results

    reports = [json.loads((DOCS / "gpu-results" / f"{name}.json").read_text()) for name in GPU_REPORTS]
    info = reports[0]["machine_info"]
    stack = info["diffaccel"].get("versions") or {}
    lines = [
        f"Rendered by `python scripts/readme_figures.py` from the JSON reports `bash scripts/gpu-proof.sh` wrote "
        f"(`docs/gpu-results/{{{','.join(GPU_REPORTS)}}}.json`), measured {reports[0]['datetime'][:10]} on one "
        f"{info['diffaccel'].get('gpu')} with "
        + ", ".join(f"{k} {v}" for k, v in stack.items() if v)
        + f", Python {info['python_version']}. The driver is not recorded: these reports predate environment "
        "fingerprints.",
        "",
    ]
    for report in reports:
        lines += gpu_results.table(report)
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[], str]] = {
    "examples-output": examples_output,
    "examples-excerpt": examples_excerpt,
    "quickstart": quickstart,
    "examples-time": examples_time,
    "recording-estimate": recording_estimate,
    "drill-output": drill_output,
    "search-output": search_output,
    "search-left-out": search_left_out,
    "techniques": techniques,
    "cpu-speedups": cpu_speedups,
    "bf16-two-cpus": bf16_two_cpus,
    "floors": floors,
    "floors-minutes": floors_minutes,
    "captions": captions,
    "training-time": training_time,
    "default-floors": default_floors,
    "one-run": one_run,
    "one-run-catches": one_run_catches,
    "verdict": verdict,
    "verdict-minutes": verdict_minutes,
    "same-threshold": same_threshold,
    "false-alarms": false_alarms,
    "matrix-false-alarms": matrix_false_alarms,
    "calibration-time": calibration_time,
    "base-vs-head-cost": base_vs_head_cost,
    "history-table": history_table,
    "gpu-results": gpu_tables,
    "fidelity": fidelity,
    "options": options,
    "versions": versions,
}


def pages() -> list[Path]:
    """Every page that may hold a section: README.md, CHANGELOG.md and the Markdown pages under docs/."""
    return [README, CHANGELOG, *sorted(DOCS.rglob("*.md"))]


def sources() -> list[tuple[Path, Path]]:
    """(the file read, the page it stands for): each page itself. A test points one at an edited copy."""
    return [(page, page) for page in pages()]


def pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- figures:{re.escape(name)} -->)(.*?)(<!-- /figures:{re.escape(name)} -->)", re.S)


def relinked(body: str, page: Path) -> str:
    """Links written relative to the repository root, made relative to ``page`` (a docs page links to
    ``verdict-quality.md``, the README to ``docs/verdict-quality.md``)."""
    if page.parent == ROOT:
        return body

    def local(found: re.Match[str]) -> str:
        target, anchor = found.group(2), found.group(3) or ""
        if "://" in target or target.startswith(("#", "/")):
            return found.group(0)
        return f"]({os.path.relpath(ROOT / target, page.parent)}{anchor})"

    return re.sub(r"(\]\()([^)#\s]+)(#[^)\s]*)?\)", local, body)


def rendered(text: str, page: Path = README) -> tuple[str, list[str]]:
    """A page's text with every section rendered anew (every place of it), and the names of the sections that
    changed. A section whose markers stand on one line is inline: its figure is written without line breaks."""
    changed = []
    for name, render in SECTIONS.items():
        if pattern(name).search(text) is None:
            continue
        fresh = relinked(render().strip("\n"), page)
        differs = False

        def place(found: re.Match[str], fresh: str = fresh, name: str = name) -> str:
            nonlocal differs
            inline = "\n" not in found.group(2)
            if inline and "\n" in fresh:
                raise ValueError(f"{page.name}: section {name} is inline, but its figure spans lines")
            if inline and not found.string[: found.start()].rsplit("\n", 1)[-1].strip():
                # a line that starts with an HTML comment is an HTML block in Markdown: it ends the paragraph
                raise ValueError(f"{page.name}: inline section {name} starts a line; put words before it")
            body = fresh if inline else "\n" + fresh + "\n"
            differs = differs or found.group(2) != body
            return found.group(1) + body + found.group(3)

        text = pattern(name).sub(place, text)
        if differs:
            changed.append(name)
    return text, changed


def placed() -> dict[str, list[Path]]:
    """Each section's pages."""
    where: dict[str, list[Path]] = {name: [] for name in SECTIONS}
    for page in pages():
        text = page.read_text()
        for name in SECTIONS:
            if pattern(name).search(text):
                where[name].append(page)
    return where


def record() -> None:
    """Run the README's main job against the committed baselines; keep its JSON report and terminal summary."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    html = Path(tempfile.mkdtemp(prefix="diffaccel-figures-")) / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "examples", "-p", "no:cacheprovider", f"--diffaccel-json={EXAMPLES_JSON}",
         f"--diffaccel-html={html}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if " diffaccel " in line and line.startswith("="))
    summary = [line for line in lines[start + 1 :] if line.strip()]
    EXAMPLES_OUTPUT.write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    screenshot(html, SCREENSHOT)
    drill = subprocess.run(
        [sys.executable, "-m", "pytest", "examples", "-p", "no:cacheprovider", "-k", "fuse-qkv"],
        cwd=ROOT,
        env={**env, "DIFFACCEL_SLOWDOWN": DRILL},
        capture_output=True,
        text=True,
        check=False,
    )
    lines = drill.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("diffaccel verdict for"))
    end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("(median"))
    DRILL_OUTPUT.write_text("\n".join(lines[start : end + 1]) + "\n")
    print("\n".join(lines[start : end + 1]))
    search = subprocess.run(
        [sys.executable, "-m", "pytest", "examples", "-p", "no:cacheprovider", "--diffaccel-search",
         f"--diffaccel-search-budget={SEARCH_BUDGET}"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = search.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("diffaccel search:"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("effects:"))
    tail = [line for line in lines if line.startswith("=") and " in " in line][-1:]
    SEARCH_OUTPUT.write_text("\n".join(lines[start:end] + tail) + "\n")
    print("\n".join(lines[start:end] + tail))


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 1600) -> None:
    """The HTML report as a person sees it: headless Chromium (Debian's `chromium` package) draws it to a PNG."""
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium (the screenshot needs a real browser)")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={width},{height}",
         f"--screenshot={png}", html.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    print(f"screenshot: {png}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when a page differs from the committed numbers")
    parser.add_argument("--record", action="store_true", help="run pytest examples and keep its report under docs/")
    args = parser.parse_args(argv)
    if args.record:
        record()
    stale: list[str] = []
    for read, page in sources():
        text = read.read_text()
        new, changed = rendered(text, page)
        if not changed:
            continue
        where = page.relative_to(ROOT)
        stale += [f"{where}: {name}" for name in changed]
        if not args.check:
            read.write_text(new)
    if args.check:
        if stale:
            print("sections out of date with their committed numbers: " + ", ".join(stale), file=sys.stderr)
            print("run: python scripts/readme_figures.py", file=sys.stderr)
            return 1
        return 0
    print("updated: " + (", ".join(stale) or "nothing"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
