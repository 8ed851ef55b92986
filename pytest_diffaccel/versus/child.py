"""Inside an arm's process: run the tests the job asks for, write what was measured, say where the code came from.

The job (``job.py``) starts each run with ``PYTEST_DIFFACCEL_ARM`` set (arms.py). Such a process
saves no baseline, writes no report and starts no further process; it reads no history (its
baselines folder is an empty one of the job's), so its verdicts hold only the gates that need none.
At its end it writes one JSON file: each result as pytest-xdist workers send it (without the
full-size images: the thumbnails carry the pictures), the interpreter and versions, and every module
it imported from the folder it was told to keep away from (the head's tree, for the base arm).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from .env import ARM_ENV, FORBID_ENV, ONLY_ENV, OUT_ENV

SITE_FOLDERS = ("site-packages", "dist-packages")


def select(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the tests the job asked for (the undecided ones, in the pairs after the first)."""
    asked = os.environ.get(ONLY_ENV)
    if not asked:
        return
    wanted = set(json.loads(asked))
    kept = [item for item in items if item.nodeid in wanted]
    dropped = [item for item in items if item.nodeid not in wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def violations(forbid: Path, modules: dict[str, Any] | None = None) -> list[str]:
    """'name (path)' of each imported module whose file lies in ``forbid`` (installed packages excepted:
    a virtualenv kept inside the repository is not the head's code)."""
    found = []
    root = forbid.resolve()
    for name, module in sorted((modules if modules is not None else dict(sys.modules)).items()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if any(part in SITE_FOLDERS for part in path.parts):
            continue
        try:
            path.relative_to(root)
        except ValueError:
            continue
        found.append(f"{name} ({path})")
    return found


def write(config: pytest.Config, state: Any, exitstatus: int) -> None:
    """The run's results file (``PYTEST_DIFFACCEL_ARM_OUT``)."""
    out = os.environ.get(OUT_ENV)
    if not out:
        return
    payloads = []
    if state is not None:
        from ..results import to_payload

        for result in state.results:
            payload = to_payload(result)
            payload["thumbnail_count"] = None if result.images is None else len(result.images)
            payload["images"] = None
            payload["reference_images"] = None
            payloads.append(payload)
    forbid = os.environ.get(FORBID_ENV)
    versions: dict[str, Any] = {}
    if state is not None and getattr(state, "used", False):
        try:
            versions = dict(state.versions())
        except Exception:  # the versions are context; a run's results must still be written
            versions = {}
    data = {
        "arm": os.environ.get(ARM_ENV, ""),
        "status": int(exitstatus),
        "python": sys.executable,
        "versions": versions,
        "violations": violations(Path(forbid)) if forbid else [],
        "results": payloads,
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, sort_keys=True, default=str), encoding="utf-8")
    temporary.replace(path)
