#!/usr/bin/env python3
"""Print the README's technique table: every registered technique, what it needs, its SSIM
threshold, and the SSIM and speed-up measured on tiny-sd on this CPU by a JSON report.

    pytest examples --diffaccel-json=examples.json
    python scripts/techniques_table.py examples.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_diffaccel.techniques import builtin_registry  # noqa: E402


def render(report: dict) -> str:
    """The table: every technique, its needs, its SSIM floor on tiny-sd and what the report measured."""
    from pytest_diffaccel import floors

    measured = {b["extra_info"]["technique"]: b for b in report["benchmarks"]}
    skipped = {s["technique"]: s["reason"] for s in report.get("diffaccel", {}).get("skipped", [])}
    registry = builtin_registry()
    tiny = floors.overrides("tiny-sd")
    lines = [
        "| technique | family | what it does | needs | min SSIM (tiny-sd) | SSIM on tiny-sd (CPU) "
        "| speed-up on tiny-sd (CPU) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for name, technique in registry.techniques.items():
        arg = {"required": "=VALUE", "optional": "[=VALUE]"}.get(technique.argument, "")
        bench = measured.get(name)
        if bench:
            extra = bench["extra_info"]
            ssim = f"{extra['ssim']:.4f}" if extra.get("ssim") is not None else "-"
            speed = f"{extra['speedup']:.2f}x"
        elif name in skipped:
            ssim, speed = "skipped", skipped[name].removeprefix(name + ": ").split(" (run with")[0]
        elif technique.default:  # registered after the report was recorded: `readme_figures.py --record` measures it
            ssim = speed = "not in this report"
        else:
            ssim = speed = "not in the default matrix"
        floor = tiny.get(name, technique.min_ssim)
        lines.append(
            f"| `{name}{arg}` | {technique.family} | {technique.description} | {technique.requires.describe()} "
            f"| {floor:g} | {ssim} | {speed} |"
        )
    for name, (spec, description) in registry.presets.items():
        lines.append(f"| `{name}` | preset | {description}: `{spec}` | its parts' needs | min of its parts | | |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(render(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
