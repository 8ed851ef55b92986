#!/usr/bin/env python3
"""Every figure of the README comes from a committed file: this script renders them.

    python scripts/readme_figures.py            # rewrite README's figure sections from the committed files
    python scripts/readme_figures.py --check    # exit 1 when a section differs (tests/test_readme.py runs it)
    python scripts/readme_figures.py --record   # run `pytest examples` (against the committed baselines) and
                                                # commit its JSON report and terminal output under docs/

A section sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->``; its first line says
which command made the numbers. Sections and their sources:
* ``examples-output``: the terminal summary of `pytest examples` (docs/examples-output.txt, --record);
* ``drill-output``: the failure a fire drill gives (docs/drill-output.txt, --record);
* ``search-output``: a real `--diffaccel-search` run (docs/search-output.txt, --record);
* ``techniques``: the technique table (scripts/techniques_table.py over docs/examples.json);
* ``floors``: the SSIM floors (pytest_diffaccel/floors.json, benchmarks/fidelity_floors.py);
* ``verdict``: the latency verdict's quality (docs/verdict-quality.json, benchmarks/verdict_quality.py);
* ``fidelity``: the fidelity gates against mutations (docs/verdict-quality.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

README = ROOT / "README.md"
DOCS = ROOT / "docs"
EXAMPLES_JSON = DOCS / "examples.json"
EXAMPLES_OUTPUT = DOCS / "examples-output.txt"
DRILL_OUTPUT = DOCS / "drill-output.txt"
SEARCH_OUTPUT = DOCS / "search-output.txt"
SEARCH_BUDGET = 5
DRILL = "fuse-qkv=30%"
VERDICT_JSON = DOCS / "verdict-quality.json"


def _fenced(text: str) -> str:
    return "```\n" + text.rstrip("\n") + "\n```"


def examples_output() -> str:
    return "Output of `python scripts/readme_figures.py --record` (`pytest examples` on 2 CPU cores):\n\n" + _fenced(
        EXAMPLES_OUTPUT.read_text()
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


def verdict() -> str:
    import verdict_quality

    return verdict_quality.summary(json.loads(VERDICT_JSON.read_text()))


def fidelity() -> str:
    import verdict_quality

    return verdict_quality.fidelity_table(json.loads(VERDICT_JSON.read_text()))


SECTIONS: dict[str, Callable[[], str]] = {
    "examples-output": examples_output,
    "drill-output": drill_output,
    "search-output": search_output,
    "techniques": techniques,
    "floors": floors,
    "verdict": verdict,
    "fidelity": fidelity,
}


def pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- figures:{re.escape(name)} -->)(.*?)(<!-- /figures:{re.escape(name)} -->)", re.S)


def rendered(text: str) -> tuple[str, list[str]]:
    """README text with every section rendered anew, and the names of the sections that changed."""
    changed = []
    for name, render in SECTIONS.items():
        found = pattern(name).search(text)
        if found is None:
            continue
        body = "\n" + render().strip("\n") + "\n"
        if found.group(2) != body:
            changed.append(name)
            text = text[: found.start(2)] + body + text[found.end(2) :]
    return text, changed


def record() -> None:
    """Run the README's main job against the committed baselines; keep its JSON report and terminal summary."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "examples", "-p", "no:cacheprovider", f"--diffaccel-json={EXAMPLES_JSON}"],
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when README differs from the committed numbers")
    parser.add_argument("--record", action="store_true", help="run pytest examples and keep its report under docs/")
    args = parser.parse_args(argv)
    if args.record:
        record()
    text = README.read_text()
    new, changed = rendered(text)
    if args.check:
        if changed:
            print("README sections out of date with their committed numbers: " + ", ".join(changed), file=sys.stderr)
            print("run: python scripts/readme_figures.py", file=sys.stderr)
            return 1
        return 0
    if changed:
        README.write_text(new)
    print("updated: " + (", ".join(changed) or "nothing"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
