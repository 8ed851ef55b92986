#!/usr/bin/env python3
"""The GPU proof's search section: the recipe --diffaccel-search found, from its JSON report.

    python scripts/gpu_search.py build/gpu-proof/search.json >> docs/gpu-results.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def render(path: Path) -> str:
    lines = ["", "## Search on the SDXL architecture", ""]
    try:
        search = json.loads(path.read_text())["diffaccel"]["search"]
    except (OSError, KeyError, ValueError):
        search = None
    if not search:
        return "\n".join([*lines, "The search did not finish within its budget.", ""])
    chosen = search.get("chosen_measurement") or {}
    speed = f", {chosen['speedup']:.2f}x vs fp32" if chosen.get("speedup") else ""
    lines.append(
        f"`--diffaccel-search` ({search['elapsed_seconds']:.0f} s of a {search['budget_seconds']:.0f} s budget, "
        f"{search['stop_reason']}): fastest passing recipe **{search['chosen']}**{speed}."
    )
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    print(render(Path(sys.argv[1])))
