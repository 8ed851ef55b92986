"""Baselines: one JSON file per machine key, one entry per test id.

Rules that keep a reviewed baseline safe:
* read-only unless the user asked (``--diffaccel-save``);
* written atomically: a temporary file in the same folder, fsync, then ``os.replace``;
  a reader sees the old file or the new one, never half of one;
* merged, never truncated: entries of tests that did not run are kept; the file is re-read
  under an exclusive lock just before writing, so two processes saving at once keep both
  sets of entries;
* a corrupt file, or one of an unknown schema, is an error that names the file and is
  never overwritten;
* schema 2 keeps a history of runs per test (history.py); a schema-1 file is read as is and
  upgraded, every entry of it, only when a save writes the file: nothing stored is lost.

Pure Python, no torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .history import upgraded

SCHEMA = 2
READABLE = (1, 2)


class BaselineError(Exception):
    """A baseline file that can't be used; the message names it and says what to do."""


def slug(text: str) -> str:
    value = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return value or "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def machine_key(device: str, gpu_name: str | None = None, override: str | None = None) -> str:
    """The baseline file's name: ``--diffaccel-machine``, else the GPU model, else the CPU model."""
    if override:
        return slug(override)
    if device == "cuda":
        return "cuda-" + slug(gpu_name or "gpu")
    return "cpu-" + slug(cpu_model())


def _file_error(path: Path, what: str) -> BaselineError:
    return BaselineError(
        f"baseline file {path}: {what}. The file was left unchanged; fix it (git checkout {path.name}), "
        "move it away, or point --diffaccel-baselines elsewhere."
    )


def parse(path: Path, text: str) -> dict[str, Any]:
    """The entries of a baseline file's text; BaselineError naming the file if it is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _file_error(path, f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    if not isinstance(data, dict):
        raise _file_error(path, "the top level is not a JSON object")
    schema = data.get("schema")
    if schema not in READABLE:
        readable = " and ".join(str(v) for v in READABLE)
        raise _file_error(
            path,
            f"unknown schema version {schema!r} (this pytest-diffaccel reads schemas {readable}; "
            "upgrade pytest-diffaccel?)",
        )
    entries = data.get("entries")
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise _file_error(path, "'entries' is not an object of test ids to entries")
    for test_id, entry in entries.items():
        samples = entry.get("samples")
        if not isinstance(samples, list) or not all(isinstance(s, (int, float)) and s > 0 for s in samples):
            raise _file_error(path, f"entry {test_id!r}: 'samples' must be a list of positive seconds")
        runs = entry.get("runs")
        if runs is not None and (not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs)):
            raise _file_error(path, f"entry {test_id!r}: 'runs' must be a list of run records")
    return entries


def load(path: Path) -> dict[str, Any]:
    """The entries of ``path``; empty when the file doesn't exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise _file_error(path, f"can't be read ({error.strerror})") from None
    return parse(path, text)


def render(machine: str, entries: Mapping[str, Any]) -> str:
    """Sorted keys, two-space indentation, trailing newline: clean git diffs."""
    return json.dumps({"schema": SCHEMA, "machine": machine, "entries": dict(entries)}, indent=2, sort_keys=True) + "\n"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the baseline folder itself (POSIX flock; no stray lock file; elsewhere no lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Temp file in the same folder, flushed and fsynced, then renamed over ``path``."""
    write_atomic_bytes(path, text.encode("utf-8"))


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """Temp file in the same folder, flushed and fsynced, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass
class SaveReport:
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "missing" mode: already there, left alone
    path: Path | None = None


Merge = Callable[[Mapping[str, Any] | None], dict[str, Any]]


def save(
    path: Path,
    machine: str,
    updates: Mapping[str, Merge | dict[str, Any]],
    mode: str,
    files: Mapping[str, Callable[[Path], str]] | None = None,
) -> SaveReport:
    """Fold ``updates`` into ``path`` under a lock. Each update is a new entry, or a function from the
    stored entry (None if there is none) to the new one. ``mode``: 'all' updates every test that ran,
    'missing' only adds tests that have no entry. Every entry of the file is written in the current
    schema (older ones upgraded, none dropped).

    ``files``: per test id, a writer of the files its entry names (thumbnails), called under the same
    lock *before* the JSON that names them is written; afterwards, thumbnails that no baseline file of
    the folder names any more are removed."""
    if mode not in ("all", "missing"):
        raise ValueError(f"save mode {mode!r}")
    report = SaveReport(path=path)
    with locked(path):
        entries = load(path)  # re-read: another process may have saved meanwhile; corrupt -> refuse
        for test_id, update in sorted(updates.items()):
            if mode == "missing" and test_id in entries:
                report.kept.append(test_id)
                continue
            if files and test_id in files:
                files[test_id](path.parent)
            entries[test_id] = update(entries.get(test_id)) if callable(update) else dict(update)
            report.written.append(test_id)
        if report.written:
            write_atomic(path, render(machine, {k: upgraded(v) for k, v in entries.items()}))
            if files:
                collect_thumbnails(path.parent)
    return report


def named_files(entries: Mapping[str, Any]) -> set[str]:
    """The thumbnail files the entries name."""
    names = set()
    for entry in entries.values():
        fidelity = entry.get("fidelity") if isinstance(entry, dict) else None
        if isinstance(fidelity, dict):
            names.update(v for k, v in fidelity.items() if k in ("images", "reference") and isinstance(v, str))
    return names


def collect_thumbnails(folder: Path) -> list[str]:
    """Remove thumbnails no baseline file of ``folder`` names (a file that can't be read keeps them all)."""
    from .thumbnails import collect

    referenced: set[str] = set()
    for other in folder.glob("*.json"):
        try:
            referenced |= named_files(load(other))
        except BaselineError:
            return []
    return collect(folder, referenced)
