"""Where the baselines live: a folder of reviewed JSON files, or a shared store at an fsspec URL.

``--diffaccel-baselines`` takes either:

* a folder (the default ``baselines/``): one JSON file per hardware environment, read-modify-written
  under a lock (baselines.py); made to be committed and reviewed in git, for a machine that persists;
* a URL (``s3://bucket/prefix``, ``gs://``, ``az://``, ``file://``, any fsspec protocol): an
  append-only store that ephemeral CI runners share (remote.py). Each saved run is one immutable
  object, read back as one history, so runners that save at the same time lose no run.

Both give the run the same thing: this environment's entries (``Located``), the thumbnails they name,
and a ``save`` that folds this run in. Pure Python; fsspec is imported only for a URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from . import baselines, validate
from .baselines import BaselineError, Located, SaveReport, StoredHistory
from .locations import redact


class Store(Protocol):
    location: str

    def locate(self, key: str, environment: Mapping[str, Any] | None) -> Located: ...

    def save(
        self,
        located: Located,
        machine: str,
        updates: Mapping[str, Any],
        mode: str,
        thumbnails: Mapping[str, Sequence[bytes]] | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> SaveReport: ...

    def thumbnail(self, name: str, count: int) -> Any | None: ...

    def thumbnail_bytes(self, name: str) -> bytes | None: ...

    def histories(self) -> list[StoredHistory]: ...


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and "://" in location


def open_store(location: str | Path) -> Store:
    """The store at ``location``: a URL opens the shared store, anything else is a folder."""
    if is_url(location):
        from .remote import RemoteStore

        return RemoteStore(str(location))
    return FolderStore(Path(location))


class FolderStore:
    """The folder layout: ``<key>.json`` / ``<key>-<hash>.json`` and ``thumbnails/`` (baselines.py)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.location = str(folder)

    def locate(self, key: str, environment: Mapping[str, Any] | None) -> Located:
        return baselines.locate(self.folder, key, environment)

    def save(
        self,
        located: Located,
        machine: str,
        updates: Mapping[str, Any],
        mode: str,
        thumbnails: Mapping[str, Sequence[bytes]] | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> SaveReport:
        return baselines.save(Path(located.path), machine, updates, mode, thumbnails, environment)

    def thumbnail(self, name: str, count: int) -> Any | None:
        from . import thumbnails

        return thumbnails.read(self.folder, name, count)

    def thumbnail_bytes(self, name: str) -> bytes | None:
        from . import thumbnails

        return thumbnails.read_bytes(self.folder, name)

    def histories(self) -> list[StoredHistory]:
        """Every file's history, validated (baselines.document): its machine key is a path part wherever the
        history is moved, so one outside the machine-key alphabet is refused, naming the file."""
        found = []
        for path in sorted(self.folder.glob("*.json")):
            text = baselines.read_bytes(path)
            data = baselines.document(path, text)
            machine = data.get("machine") or path.stem
            if not validate.is_machine(machine):
                raise BaselineError(
                    f"baseline file {path}: its name {path.stem!r} is no machine key and it holds no 'machine' "
                    "field; rename the file to <machine key>.json (lowercase letters, digits, single dashes)"
                )
            environment = baselines.environment_of(path, text)
            found.append(StoredHistory(str(path), str(machine), environment, data["entries"]))
        if not found and not self.folder.is_dir():
            raise BaselineError(f"baseline folder {self.folder} does not exist")
        return found


__all__ = ["BaselineError", "FolderStore", "Store", "StoredHistory", "is_url", "open_store", "redact"]
