#!/usr/bin/env python3
"""Every figure of the README and of the docs pages comes from a committed file: this script renders them.

    python scripts/readme_figures.py            # rewrite the figure sections of README.md and docs/**/*.md
    python scripts/readme_figures.py --check    # exit 1 when a section differs (tests/test_readme.py runs it)
    python scripts/readme_figures.py --record   # run `pytest examples` (against the committed baselines) and
                                                # commit its JSON report and terminal output under docs/, and
                                                # docs/report-screenshot.png: its HTML report in headless Chromium

A section sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` in any page (README.md
or a page under docs/); it says which command made the numbers. Links a section holds are written
relative to the repository root (``docs/verdict-quality.md``) and rewritten relative to the page they
land in. Sections and their sources:
* ``examples-output``: the terminal summary of `pytest examples` (docs/examples-output.txt, --record);
* ``examples-excerpt``: a few rows of it, for the README;
* ``quickstart``: the README's three steps, with how long each took here (docs/examples-output.txt,
  docs/examples.json);
* ``drill-output``: the failure a fire drill gives (docs/drill-output.txt, --record);
* ``search-output``: a real `--diffaccel-search` run (docs/search-output.txt, --record);
* ``techniques``: the technique table (scripts/techniques_table.py over docs/examples.json);
* ``floors``: the SSIM floors (pytest_diffaccel/floors.json, benchmarks/fidelity_floors.py);
* ``captions``: how many captions each bundled preset draws right, per seed (models/presets/TRAINING.json);
* ``default-floors``: the floors a model nobody measured gets, in one sentence (floors.json);
* ``verdict``: the latency verdict's quality (docs/verdict-quality.json, benchmarks/verdict_quality.py);
* ``same-threshold``: pytest-benchmark's rule at our threshold on the same samples (docs/verdict-quality.json);
* ``fidelity``: the fidelity gates against mutations (docs/verdict-quality.json);
* ``options``: the options reference (pytest_diffaccel.config.OPTIONS, scripts/docs_reference.py);
* ``versions``: the declared lower bounds and the stack of the recorded run (pyproject.toml, docs/examples.json).
"""

from __future__ import annotations

import argparse
import json
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
DOCS = ROOT / "docs"
EXCERPT = ("fp32", "bf16", "tf32", "sdpa-flash", "fuse-qkv", "tiny-vae", "int8-dynamic", "compile", "vae-tiling")
EXAMPLES_JSON = DOCS / "examples.json"
EXAMPLES_OUTPUT = DOCS / "examples-output.txt"
DRILL_OUTPUT = DOCS / "drill-output.txt"
SEARCH_OUTPUT = DOCS / "search-output.txt"
SEARCH_BUDGET = 5
DRILL = "fuse-qkv=30%"
VERDICT_JSON = DOCS / "verdict-quality.json"
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
    """The header, the table's columns and a few of its rows, and pytest's last line."""
    lines = _examples_lines()
    head = next(i for i, line in enumerate(lines) if line.startswith("technique "))
    rows = [line for line in lines[head + 2 :] if line.split(" ", 1)[0] in EXCERPT]
    shown = [lines[0], lines[head], lines[head + 1], *rows, "...", lines[-1]]
    return (
        f"`pytest examples` on 2 CPU cores, {len(rows)} of its rows (the whole output: "
        "[docs/index.md](docs/index.md#what-a-run-prints); recorded by `python scripts/readme_figures.py --record`):"
        "\n\n" + _fenced("\n".join(shown))
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def quickstart() -> str:
    """The three steps, each with how long it took on the machine that recorded docs/ (2 CPU cores)."""
    last = _examples_lines()[-1]
    found = re.search(r"in ([0-9.]+)s", last)
    assert found, last
    run = float(found.group(1))
    report = json.loads(EXAMPLES_JSON.read_text())
    walls = {b["extra_info"]["technique"]: b["extra_info"] for b in report["benchmarks"]}
    drilled = walls[DRILL.split("=")[0]]
    steps = [
        ("pytest examples", f"1. {_minutes(run)} here"),
        ("pytest examples --diffaccel-save=all --diffaccel-save-runs=5", f"2. about 5 x step 1: {_minutes(5 * run)}"),
        (f'DIFFACCEL_SLOWDOWN="{DRILL}" pytest examples -k fuse-qkv', "3. one test, see below"),
    ]
    width = max(len(command) for command, _ in steps) + 2
    return "\n".join(
        [
            "```bash",
            *(f"{command.ljust(width)}# {comment}" for command, comment in steps),
            "```",
            "",
            f"Times on the 2 CPU cores that recorded `docs/examples-output.txt` ({run:.0f} s for step 1). "
            f"Step 3 runs one test: fuse-qkv's took {drilled['wall_seconds']:.0f} s in step 1; the session loads "
            f"the model first ({drilled['load_seconds']:.0f} s) and the drill's slowdown earns the test a "
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
    return fidelity_floors.render_tables(data)


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


SECTIONS: dict[str, Callable[[], str]] = {
    "examples-output": examples_output,
    "examples-excerpt": examples_excerpt,
    "quickstart": quickstart,
    "drill-output": drill_output,
    "search-output": search_output,
    "techniques": techniques,
    "floors": floors,
    "captions": captions,
    "default-floors": default_floors,
    "verdict": verdict,
    "same-threshold": same_threshold,
    "fidelity": fidelity,
    "options": options,
    "versions": versions,
}


def pages() -> list[Path]:
    """Every page that may hold a section: README.md and the Markdown pages under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


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
    """A page's text with every section rendered anew, and the names of the sections that changed."""
    changed = []
    for name, render in SECTIONS.items():
        found = pattern(name).search(text)
        if found is None:
            continue
        body = "\n" + relinked(render().strip("\n"), page) + "\n"
        if found.group(2) != body:
            changed.append(name)
            text = text[: found.start(2)] + body + text[found.end(2) :]
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
    for page in pages():
        text = page.read_text()
        new, changed = rendered(text, page)
        if not changed:
            continue
        where = page.relative_to(ROOT)
        stale += [f"{where}: {name}" for name in changed]
        if not args.check:
            page.write_text(new)
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
