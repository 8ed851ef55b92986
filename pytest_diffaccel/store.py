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

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from . import baselines
from .baselines import BaselineError, Located, SaveReport, StoredHistory


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

        try:
            return thumbnails.path_of(self.folder, name).read_bytes()
        except OSError:
            return None

    def histories(self) -> list[StoredHistory]:
        found = []
        for path in sorted(self.folder.glob("*.json")):
            text = path.read_text(encoding="utf-8")
            entries = baselines.parse(path, text)
            machine = json.loads(text).get("machine") or path.stem
            found.append(StoredHistory(str(path), str(machine), baselines.environment_of(path, text), entries))
        if not found and not self.folder.is_dir():
            raise BaselineError(f"baseline folder {self.folder} does not exist")
        return found


__all__ = ["BaselineError", "FolderStore", "Store", "StoredHistory", "is_url", "open_store"]
