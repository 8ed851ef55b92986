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
* schema 2 keeps a history of runs per test (history.py); schema 3 adds the environment the file
  was recorded in (fingerprint.py). One folder holds one file per hardware environment:
  ``<machine key>.json``, and ``<machine key>-<hash>.json`` for another environment under the same key.
  A run reads only the file of its own hardware fingerprint; files of other environments, and
  files recorded before fingerprints (schema 1 and 2: hardware unknown), are kept and named, never
  judged against and never written into.

Pure Python, no torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import validate
from .atomic import write_atomic
from .history import upgraded
from .validate import BaselineError

SCHEMA = 3
READABLE = (1, 2, 3)
FINGERPRINTED = 3  # the first schema whose files say which environment recorded them


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


def document(path: Path, text: str | bytes) -> dict[str, Any]:
    """A baseline file's whole content, validated (validate.py); BaselineError naming the file if it is not one.

    Everything is checked before anything is used: the JSON strictly (no NaN, Infinity or overflowing
    numbers), the schema, every entry (positive finite samples and judged figures, run records, thumbnail
    names of their one fixed form), the machine key (it becomes a path part when moved), and the
    environment of a schema-3 file."""
    try:
        data = validate.loads(text)
    except validate.Invalid as error:
        raise _file_error(path, str(error)) from None
    if not isinstance(data, dict):
        raise _file_error(path, "the top level is not a JSON object")
    schema = data.get("schema")
    if isinstance(schema, bool) or schema not in READABLE:
        readable = " and ".join(str(v) for v in READABLE)
        raise _file_error(
            path,
            f"unknown schema version {schema!r} (this pytest-diffaccel reads schemas {readable}; "
            "upgrade pytest-diffaccel?)",
        )
    try:
        validate.entries(data.get("entries"))
        if data.get("machine") is not None:
            validate.machine(data["machine"])
        if schema >= FINGERPRINTED and "environment" in data:  # absent: written by a caller without one
            validate.environment(data["environment"], "schema 3: 'environment'")
    except validate.Invalid as error:
        raise _file_error(path, str(error)) from None
    return data


def parse(path: Path, text: str | bytes) -> dict[str, Any]:
    """The entries of a baseline file's text; BaselineError naming the file if it is not one."""
    entries: dict[str, Any] = document(path, text)["entries"]
    return entries


def read_bytes(path: Path) -> bytes:
    """A file of the folder's content; BaselineError naming it when it can't be read."""
    text = _read(path)
    if text is None:
        raise _file_error(path, "vanished while read")
    return text


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _file_error(path, f"can't be read ({error.strerror})") from None


def load(path: Path) -> dict[str, Any]:
    """The entries of ``path``; empty when the file doesn't exist."""
    text = _read(path)
    return {} if text is None else parse(path, text)


def environment_of(path: Path, text: str | bytes) -> dict[str, Any] | None:
    """The environment a file was recorded in (its hash recomputed from its hardware), None before schema 3."""
    data = document(path, text)
    if data["schema"] < FINGERPRINTED:
        return None
    environment = data.get("environment")
    if not isinstance(environment, dict):
        raise _file_error(path, "schema 3 without an 'environment' object holding 'hardware'")
    from .fingerprint import hardware_hash

    return {**environment, "hash": hardware_hash(environment["hardware"])}


def render(machine: str, entries: Mapping[str, Any], environment: Mapping[str, Any] | None = None) -> str:
    """Sorted keys, two-space indentation, trailing newline: clean git diffs."""
    data: dict[str, Any] = {"schema": SCHEMA, "machine": machine, "entries": dict(entries)}
    if environment is not None:
        data["environment"] = dict(environment)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


# ----------------------------------------------------------------------------- one file per environment


@dataclass(frozen=True)
class Stored:
    """A baseline file of the folder: where it is, the environment it was recorded in (None: unknown)."""

    path: Path | str
    environment: dict[str, Any] | None
    tests: int


@dataclass(frozen=True)
class StoredHistory:
    """One environment's histories, as a store (store.py) holds them: where, which machine key, which environment."""

    label: str  # the file's path or the store's URL of this environment
    machine: str
    environment: dict[str, Any] | None  # None: recorded before environment fingerprints
    entries: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what a reader should know of it (runs saved out of clock order)


@dataclass
class Located:
    """This environment's baseline file (it may not exist yet) and the files of the same key recorded elsewhere."""

    path: Path | str  # a file of the folder, or the URL of this environment's history in a shared store
    entries: dict[str, Any]
    environment: dict[str, Any] | None  # this run's fingerprint
    others: list[Stored] = field(default_factory=list)
    matched: bool = False  # a file recorded in this environment exists
    notes: list[str] = field(default_factory=list)  # histories of other environments skipped as unreadable

    def mismatch(self) -> str | None:
        """One line on why the files of this key can't judge this run, or None when one of them is this
        environment's (or there is none at all)."""
        if self.matched or not self.others or self.environment is None:
            return None
        from .fingerprint import hardware_differences

        now = _hardware(self.environment) or {}

        def differences(stored: Stored) -> str:
            return hardware_differences(_hardware(stored.environment), now)

        nearest = min(self.others, key=lambda stored: (stored.environment is None, len(differences(stored))))
        more = f" (and {len(self.others) - 1} more file(s) of other environments)" if len(self.others) > 1 else ""
        return f"{nearest.path} {differences(nearest)}{more}"


def _hardware(environment: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The hardware half of an environment, None when it has none (recorded before fingerprints, or damaged):
    a missing half reads as 'unknown', never as a KeyError."""
    hardware = environment.get("hardware") if isinstance(environment, Mapping) else None
    return hardware if isinstance(hardware, dict) else None


def skipped_note(error: BaseException) -> str:
    """The one line a run prints for another environment's history it could not read and did not need."""
    return f"skipped another environment's history it does not need: {error}"


def _foreign(text: bytes, environment: Mapping[str, Any]) -> bool:
    """Whether an unusable file was recorded in another environment than ``environment`` (or before
    fingerprints): then it can't judge this run and is skipped. False when that can't be told (the file
    may be this environment's, and is refused)."""
    import json

    try:
        data = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    if not isinstance(data, dict) or isinstance(data.get("schema"), bool) or data.get("schema") not in READABLE:
        return False
    if data["schema"] < FINGERPRINTED:
        return True
    hardware = _hardware(data.get("environment"))
    if hardware is None:
        return False
    from .fingerprint import hardware_hash

    try:
        return hardware_hash(hardware) != environment.get("hash")
    except (TypeError, ValueError):
        return False


def candidates(folder: Path, key: str) -> list[Path]:
    """The files a machine key may use: ``<key>.json``, then ``<key>-<hash>.json`` (one per other environment)."""
    from .fingerprint import HASH_LENGTH

    pattern = re.compile(re.escape(key) + r"-[0-9a-f]{" + str(HASH_LENGTH) + r"}\.json")
    found = [folder / f"{key}.json"] if (folder / f"{key}.json").is_file() else []
    return found + sorted(p for p in folder.glob(f"{key}-*.json") if pattern.fullmatch(p.name))


def locate(folder: Path, key: str, environment: Mapping[str, Any] | None) -> Located:
    """The file of this key recorded in this hardware environment (by fingerprint, whatever its name), or the
    name a first save will give it: ``<key>.json`` when free, else ``<key>-<hash>.json``. ``environment``
    None (a caller that doesn't fingerprint) reads ``<key>.json`` as before."""
    if environment is None:
        path = folder / f"{key}.json"
        return Located(path=path, entries=load(path), environment=None)
    others: list[Stored] = []
    notes: list[str] = []
    for path in candidates(folder, key):
        text = _read(path)
        if text is None:
            continue
        try:
            entries = parse(path, text)
            stored = environment_of(path, text)
        except BaselineError as error:
            if not _foreign(text, environment):
                raise
            notes.append(skipped_note(error))
            continue
        if stored is not None and stored["hash"] == environment["hash"]:
            return Located(
                path=path, entries=entries, environment=dict(environment), others=others, matched=True, notes=notes
            )
        others.append(Stored(path=path, environment=stored, tests=len(entries)))
    free = folder / f"{key}.json"
    path = free if not free.exists() else folder / f"{key}-{environment['hash']}.json"
    return Located(path=path, entries={}, environment=dict(environment), others=others, notes=notes)


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


@dataclass
class SaveReport:
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "missing" mode: already there, left alone
    path: Path | str | None = None


Merge = Callable[[Mapping[str, Any] | None], dict[str, Any]]


def updated(
    entries: dict[str, Any], updates: Mapping[str, Merge | dict[str, Any]], mode: str, report: SaveReport
) -> list[str]:
    """Fold ``updates`` into ``entries`` in place ('missing': only tests without an entry); the ids written."""
    if mode not in ("all", "missing"):
        raise ValueError(f"save mode {mode!r}")
    written = []
    for test_id, update in sorted(updates.items()):
        if mode == "missing" and test_id in entries:
            report.kept.append(test_id)
            continue
        entries[test_id] = update(entries.get(test_id)) if callable(update) else dict(update)
        written.append(test_id)
    report.written += written
    return written


def save(
    path: Path,
    machine: str,
    updates: Mapping[str, Merge | dict[str, Any]],
    mode: str,
    thumbnails: Mapping[str, Sequence[bytes]] | None = None,
    environment: Mapping[str, Any] | None = None,
) -> SaveReport:
    """Fold ``updates`` into ``path`` under a lock. Each update is a new entry, or a function from the
    stored entry (None if there is none) to the new one. ``mode``: 'all' updates every test that ran,
    'missing' only adds tests that have no entry. Every entry of the file is written in the current
    schema (older ones upgraded, none dropped).

    ``thumbnails``: per test id, the PNG files its entry names, written under the same lock *before* the
    JSON that names them; afterwards, thumbnails that no baseline file of the folder names any more are
    removed.

    ``environment``: this run's fingerprint. The file is then found again under the lock by its hardware
    hash (``path`` names the key's folder and name), so that two environments saving at once into one
    folder each write their own file; the file records the environment."""
    if mode not in ("all", "missing"):
        raise ValueError(f"save mode {mode!r}")
    with locked(path):
        if environment is not None:  # re-read: another process may have saved meanwhile; corrupt -> refuse
            path = Path(locate(path.parent, machine, environment).path)
        report = SaveReport(path=path)
        entries = load(path)
        written = updated(entries, updates, mode, report)
        if written:
            from . import thumbnails as pictures

            for test_id in written:
                for blob in (thumbnails or {}).get(test_id, ()):
                    pictures.write(path.parent, blob)
            write_atomic(path, render(machine, {k: upgraded(v) for k, v in entries.items()}, environment))
            if thumbnails:
                collect_thumbnails(path.parent)
    return report


def named_files(entries: Mapping[str, Any]) -> set[str]:
    """The thumbnail files the entries name."""
    names: set[str] = set()
    for entry in entries.values():
        fidelity = entry.get("fidelity") if isinstance(entry, dict) else None
        if isinstance(fidelity, dict):
            names.update(v for k, v in fidelity.items() if k in ("images", "reference") and validate.is_thumbnail(v))
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
