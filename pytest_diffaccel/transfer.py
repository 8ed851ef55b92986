"""``diffaccel move SOURCE DESTINATION``: histories from a folder into a shared store, or back.

    diffaccel move baselines/ s3://perf-ci/diffaccel        a committed folder becomes the fleet's store
    diffaccel move s3://perf-ci/diffaccel baselines/        the store's histories as reviewable files

Every environment's history is copied whole, with the thumbnails its entries name; the source is
left as it is. Into a store, a history arrives as one snapshot object; into a folder, as the
environment's baseline file (``<key>.json``, or ``<key>-<hash>.json`` when that name is taken),
written atomically. A destination that already holds a history for the same environment is left
alone unless ``--replace``; files recorded before environment fingerprints (schemas 1 and 2) judge
nothing and are not moved (named in the output).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .baselines import BaselineError
from .store import StoredHistory, is_url, open_store, redact

HELP = "copy baseline histories from a folder into a shared store (s3://...), or from a store into a folder"
COMPACT_HELP = "fold each history of a shared store into one snapshot object (runs saved meanwhile are kept)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a baseline folder or a store URL")
    parser.add_argument("destination", help="a store URL or a baseline folder")
    parser.add_argument(
        "--replace", action="store_true", help="replace a history the destination already holds for an environment"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return _report("move", lambda: move(args.source, args.destination, replace=args.replace))


def add_compact_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a store URL (s3://bucket/prefix, ...)")
    parser.set_defaults(run=run_compact)


def run_compact(args: argparse.Namespace) -> int:
    def compact() -> list[str]:
        if not is_url(args.store):
            raise BaselineError(
                f"{redact(args.store)}: not a store URL (a folder holds one file per environment already)"
            )
        from .remote import RemoteStore

        return RemoteStore(args.store).compact()

    return _report("compact", compact)


def _report(command: str, action: Any) -> int:
    try:
        lines = action()
    except BaselineError as error:
        print(f"diffaccel {command}: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def move(source: str, destination: str, replace: bool = False) -> list[str]:
    """Copy every fingerprinted history of ``source`` into ``destination``; a line per history."""
    if str(source).rstrip("/") == str(destination).rstrip("/"):
        raise BaselineError(f"source and destination are the same: {redact(source)}")
    origin = open_store(source if is_url(source) else Path(source))
    histories = origin.histories()
    lines = []
    movable = []
    for stored in histories:
        if stored.environment is None:
            lines.append(f"not moved: {stored.label} was recorded before environment fingerprints (it judges nothing)")
        else:
            movable.append(stored)
    if not movable:
        raise BaselineError(f"{redact(source)}: no history recorded with an environment fingerprint to move")
    for stored in movable:
        _confined(stored)
        pictures = _thumbnails(origin, stored)
        if is_url(destination):
            target = _into_store(destination, stored, pictures, replace)
        else:
            target = _into_folder(Path(destination), stored, pictures, replace)
        runs = sum(len(entry.get("runs") or [None]) for entry in stored.entries.values())
        lines.append(
            f"moved {stored.label} ({stored.machine}, environment {stored.environment['hash']}, "  # type: ignore[index]
            f"{len(stored.entries)} tests, {runs} runs, {len(pictures)} thumbnails) -> {target}"
        )
    return lines


def _confined(stored: StoredHistory) -> None:
    """The history's machine key and hash are path parts of the destination: refused unless of their alphabet
    (the readers refuse them already; this keeps a caller that builds a StoredHistory itself confined too)."""
    from . import validate

    digest = (stored.environment or {}).get("hash")
    if not validate.is_machine(stored.machine) or not validate.is_hash(digest):
        raise BaselineError(
            f"{stored.label}: machine {stored.machine!r} or environment hash {digest!r} is not a key this plugin "
            "writes (lowercase letters, digits, single dashes; 8 hex digits); fix its 'machine' field"
        )


def _thumbnails(origin: Any, stored: StoredHistory) -> dict[str, bytes]:
    from .baselines import named_files

    found = {}
    for name in sorted(named_files(stored.entries)):
        blob = origin.thumbnail_bytes(name)
        if blob is not None:
            found[name] = blob
    return found


def _into_store(url: str, stored: StoredHistory, pictures: dict[str, bytes], replace: bool) -> str:
    from .remote import RemoteStore

    store = RemoteStore(url)
    store.check()
    environment = stored.environment
    assert environment is not None
    existing = store.object_names(stored.machine, environment["hash"])
    if existing and not replace:
        raise BaselineError(
            f"{store.location} already holds a history of {stored.machine} for environment {environment['hash']} "
            f"({len(existing)} saved runs); pass --replace to put {stored.label}'s in its place"
        )
    for name, blob in pictures.items():
        store.put_thumbnail(name, blob)
    return store.write_snapshot(stored.machine, environment, stored.entries, covers=existing)


def _into_folder(folder: Path, stored: StoredHistory, pictures: dict[str, bytes], replace: bool) -> str:
    from . import baselines, thumbnails
    from .atomic import write_atomic

    environment = stored.environment
    assert environment is not None
    located = baselines.locate(folder, stored.machine, environment)
    if located.matched and not replace:
        raise BaselineError(
            f"{located.path} already holds the history of {stored.machine} for environment {environment['hash']}; "
            f"pass --replace to put {stored.label}'s in its place"
        )
    with baselines.locked(Path(located.path)):
        for blob in pictures.values():
            thumbnails.write(folder, blob)
        entries = {k: baselines.upgraded(v) for k, v in stored.entries.items()}
        write_atomic(Path(located.path), baselines.render(stored.machine, entries, environment))
    return str(located.path)
