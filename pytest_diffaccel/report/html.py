"""HTML report (the reporting issue fills it in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_html(state: Any, path: Path) -> Path:
    raise NotImplementedError("--diffaccel-html is not implemented yet")
