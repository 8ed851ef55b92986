"""A shared baseline store at an fsspec URL: append-only, so that runners saving at once lose no run.

Layout under the URL (``s3://bucket/prefix``)::

    <machine key>/<hardware hash>/runs/<UTC time>-<random>.json   one object per saved run
    thumbnails/<sha256[:16]>.png                                   the pictures, named by content

A saved run is one object written once and never changed (one PUT: a reader sees it whole or not at
all), holding what the run adds to each test's history (history.RunUpdate: the entry's fields, the run
record, how many runs to keep, whether it starts a new level, and the save sequence it claims: one more
than the highest it read). The history of an environment is the fold of its objects in save order
(sequence, then name: a skewed clock can't reorder it) into the same entries a baseline file holds, by
the same code. Two runners that save at the same time write two objects: both runs are in the next read. A
``snapshot`` object (written by ``diffaccel move`` from a folder) holds whole entries and lists the
objects it already contains.

The store is read once, when the run starts (the entries of this environment and every thumbnail they
name): one that can't be reached is a usage error naming it before any test runs. It is written once,
at the end: thumbnails first, then the run's object, so a save cut short leaves at most unnamed
thumbnails, never a half history.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from . import baselines, validate
from .baselines import BaselineError, Located, SaveReport, Stored, StoredHistory
from .history import RunUpdate, upgraded
from .locations import redact

RUNS = "runs"
THUMBNAILS = "thumbnails"
BUCKETS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}  # the first part of the path must exist
EXTRAS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}


class RemoteStore:
    """The store at ``url`` (any fsspec protocol; credentials and endpoint the backend's usual way)."""

    def __init__(self, url: str) -> None:
        target = url.rstrip("/")
        self.location = redact(target)  # what is printed: never the URL's user, password or query values
        self._secrets = _secrets(target)
        protocol = self.location.split("://", 1)[0]
        try:
            import fsspec
            from fsspec.core import url_to_fs
        except ImportError:
            raise BaselineError(self._install(protocol, "fsspec")) from None
        del fsspec
        try:
            self.fs, self.root = url_to_fs(target, skip_instance_cache=True)
        except ImportError as error:
            raise BaselineError(self._install(protocol, EXTRAS.get(protocol, str(error)))) from None
        except ValueError as error:
            raise BaselineError(f"--diffaccel-baselines {self.location}: {self._scrub(str(error))}") from None
        self.root = self.root.rstrip("/")
        self.local = "file" in _protocols(self.fs)
        self._thumbnails: dict[str, bytes] = {}
        self._sequences: dict[tuple[str, str], int] = {}  # per history: the highest save sequence read
        self._skewed: dict[tuple[str, str], int] = {}  # per history: objects whose time stamp is out of order

    def _install(self, protocol: str, package: str) -> str:
        return (
            f"--diffaccel-baselines {self.location}: the {protocol}:// store needs {package}; "
            f"install it with `pip install {package}` (or the extra: pytest-diffaccel[s3], [gcs], [azure])"
        )

    # ----------------------------------------------------------------------------- paths and errors

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def url(self, path: str) -> str:
        """The URL of a path of the store, as the user would type it."""
        relative = path[len(self.root) :].lstrip("/")
        return f"{self.location}/{relative}" if relative else self.location

    def _scrub(self, text: str) -> str:
        """``text`` without the URL's secrets (a backend's error may quote the URL it was given)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _unreachable(self, what: str, error: BaseException) -> BaselineError:
        reason = self._scrub(f"{type(error).__name__}: {error}".strip().splitlines()[0][:300])
        return BaselineError(
            f"baseline store {self.location}: {what} failed ({reason}). Check the URL, the endpoint "
            "(AWS_ENDPOINT_URL / FSSPEC_S3_ENDPOINT_URL for an S3-compatible server) and the credentials; "
            "nothing was judged against it or written to it."
        )

    def _call(self, what: str, function: Any, *args: Any, missing: Any = FileNotFoundError, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except FileNotFoundError:
            if missing is FileNotFoundError:
                raise
            return missing
        except Exception as error:  # the backends raise their own errors (botocore, aiohttp, OSError)
            raise self._unreachable(what, error) from None

    def _listing(self, path: str) -> list[str]:
        """The names directly under ``path`` as they are now (never a cached listing); empty when there is
        nothing there yet."""
        self.fs.invalidate_cache(path)
        found = self._call(f"listing {self.url(path)}", self.fs.ls, path, missing=[], detail=False)
        return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in found)

    def _read_all(self, paths: Sequence[str]) -> dict[str, bytes]:
        """The objects at ``paths`` that exist (concurrent requests where the backend is asynchronous)."""
        if not paths:
            return {}
        found = self._call(
            f"reading {len(paths)} object(s) of {self.location}", self.fs.cat, list(paths), on_error="omit"
        )
        return {str(k): v for k, v in found.items() if isinstance(v, bytes)}

    def check(self) -> None:
        """The store can be reached: its top level (the bucket) exists. A prefix that doesn't exist yet is a
        new, empty store; a bucket that doesn't is an error, never a silent 'no baseline'."""
        self._call("clearing the listing cache", self.fs.invalidate_cache)
        if not BUCKETS.intersection(_protocols(self.fs)):
            self._listing(self.root)  # an error other than "nothing there yet" is raised
            return
        top = self.root.split("/", 1)[0]
        if self._call(f"opening {self.location}", self.fs.ls, top, missing=None, detail=False) is None:
            raise BaselineError(
                f"baseline store {self.location}: {top!r} does not exist (create the bucket, or fix the URL); "
                "nothing was judged against it or written to it."
            )

    # ----------------------------------------------------------------------------- reading

    def _objects(self, key: str, digest: str) -> list[tuple[str, dict[str, Any]]]:
        """The saved runs and snapshots of one environment, parsed and validated, oldest first. An object
        listed but gone when read (a compaction deleted what its snapshot holds) means: list again, the
        snapshot is there."""
        folder = self._path(_key(key), digest, RUNS)
        for _ in range(3):
            names = self.object_names(key, digest)
            blobs = self._read_all([f"{folder}/{name}" for name in names])
            found = {name: blob for name in names if (blob := _by_name(blobs, name)) is not None}
            if len(found) == len(names):
                return [(name, self._parse_object(f"{folder}/{name}", found[name], digest)) for name in names]
        raise BaselineError(f"baseline store {self.url(folder)}: objects keep vanishing while read; try again")

    def _parse_object(self, path: str, blob: bytes, digest: str | None = None) -> dict[str, Any]:
        """One object, validated (validate.store_object) before any of it is folded or judged; an object
        recorded in another environment than the folder it lies in is refused too."""
        where = self.url(path)
        try:
            data = validate.loads(blob)
            validate.store_object(data, baselines.SCHEMA)
        except validate.Invalid as error:
            raise BaselineError(
                f"baseline store object {where}: {error}. Nothing was judged against it or written; delete the "
                "object or restore it."
            ) from None
        if digest is not None:
            from .fingerprint import hardware_hash

            if hardware_hash(data["environment"]["hardware"]) != digest:
                raise BaselineError(
                    f"baseline store object {where}: recorded in another environment than {digest}, the folder it "
                    "lies in. Nothing was judged against it or written; delete the object or move it to its folder."
                )
        return dict(data)

    def _environments(self, key: str) -> list[str]:
        return [d for d in self._listing(self._path(key)) if _is_hash(d)]

    def _history(self, key: str, digest: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The entries of one environment's history (its objects folded in order) and its environment; the
        highest save sequence read is kept, so that this runner's save claims the next one."""
        objects = self._objects(key, digest)
        self._sequences[(key, digest)] = max((sequence_of(data) for _, data in objects), default=0)
        self._skewed[(key, digest)] = out_of_clock_order(objects)
        return fold(objects)

    def locate(self, key: str, environment: Mapping[str, Any] | None) -> Located:
        self.check()
        if environment is None:
            raise BaselineError(f"baseline store {self.location}: a run without an environment fingerprint")
        others: list[Stored] = []
        notes: list[str] = []
        for digest in self._environments(key):
            if digest == environment["hash"]:
                continue
            try:
                entries, stored = self._history(key, digest)
            except BaselineError as error:  # another environment's: this run does not need it
                notes.append(baselines.skipped_note(error))
                continue
            others.append(Stored(path=self.url(self._path(key, digest)), environment=stored, tests=len(entries)))
        entries, stored = self._history(key, environment["hash"])
        path = self.url(self._path(key, environment["hash"]))
        notes += self._skew_notes(key, environment["hash"], path)
        self._prefetch(baselines.named_files(entries))
        return Located(
            path=path, entries=entries, environment=dict(environment), others=others, matched=bool(entries), notes=notes
        )

    def _prefetch(self, names: set[str]) -> None:
        """Every thumbnail this environment's entries name, read now: a test never waits on the store."""
        paths = {name: self._thumbnail_path(name) for name in sorted(names) if name not in self._thumbnails}
        if not paths:
            return
        found = self._read_all(list(paths.values()))
        for name in paths:
            blob = _by_name(found, name)
            if blob is not None:
                self._thumbnails[name] = blob

    def thumbnail(self, name: str, count: int) -> Any | None:
        from .thumbnails import decode

        blob = self._thumbnails.get(name)
        if blob is None:
            return None
        try:
            return decode(blob, count)
        except Exception:
            return None

    def histories(self) -> list[StoredHistory]:
        self.check()
        found = []
        for key in self._listing(self.root):
            if key == THUMBNAILS or not validate.is_machine(key):  # not a history this plugin wrote
                continue
            for digest in self._environments(key):
                entries, environment = self._history(key, digest)
                url = self.url(self._path(key, digest))
                found.append(StoredHistory(url, key, environment, entries, self._skew_notes(key, digest, url)))
        return found

    def _skew_notes(self, key: str, digest: str, where: str) -> list[str]:
        """What the last read of this history found out of clock order, said (a pytest run and diffaccel history)."""
        skewed = self._skewed.get((key, digest), 0)
        if not skewed:
            return []
        return [
            f"{where}: {skewed} saved run(s) carry a time stamp out of the order they were saved in (a runner's "
            "clock was skewed); the history is folded in the order of the saves, not by time stamp"
        ]

    # ----------------------------------------------------------------------------- writing

    def save(
        self,
        located: Located,
        machine: str,
        updates: Mapping[str, Any],
        mode: str,
        thumbnails: Mapping[str, Sequence[bytes]] | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> SaveReport:
        """This run as one new object of its environment's history (and the thumbnails it names, first)."""
        if environment is None:
            raise BaselineError(f"baseline store {self.location}: a run without an environment fingerprint")
        report = SaveReport()
        current = {}
        if mode == "missing":  # what is there now ('all' writes every update, whatever is stored)
            current, _ = self._history(machine, environment["hash"])
        baselines.updated(dict(current), updates, mode, report)
        if not report.written:
            report.path = located.path
            return report
        from .thumbnails import name_of

        for test_id in report.written:
            for blob in (thumbnails or {}).get(test_id, ()):
                self._put(self._path(THUMBNAILS, name_of(blob)), blob, once=True)
        tests = {}
        for test_id in report.written:
            update = updates[test_id]
            if not isinstance(update, RunUpdate):  # a whole entry (tests, tools): kept as it is
                update = RunUpdate(fields=dict(update), record={}, keep=0, new_level=False)
            tests[test_id] = update.as_dict()
        body = {
            "schema": baselines.SCHEMA,
            "kind": "run",
            "machine": machine,
            "mode": mode,
            "sequence": self._sequences.get((machine, environment["hash"]), 0) + 1,
            "saved": _now(),
            "environment": dict(environment),
            "tests": tests,
        }
        path = self._path(_key(machine), _digest(environment), RUNS, _object_name())
        self._put(path, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8"))
        report.path = self.url(path)
        return report

    def write_snapshot(
        self,
        machine: str,
        environment: Mapping[str, Any],
        entries: Mapping[str, Any],
        covers: Sequence[str] = (),
        sequence: int = 0,
    ) -> str:
        """Whole entries as one object (a folder's history moved in, or a compaction); its URL. ``sequence``:
        the highest save sequence of the objects it holds (a run saved after them claims a higher one)."""
        body = {
            "schema": baselines.SCHEMA,
            "kind": "snapshot",
            "machine": machine,
            "sequence": sequence,
            "saved": _now(),
            "environment": dict(environment),
            "entries": {k: upgraded(v) for k, v in entries.items()},
            "covers": list(covers),
        }
        path = self._path(_key(machine), _digest(environment), RUNS, _object_name())
        self._put(path, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode("utf-8"))
        return self.url(path)

    def compact(self) -> list[str]:
        """Each environment's history as one snapshot object, written before the objects it holds are deleted:
        a reader sees the old objects or the snapshot, and a run saved meanwhile (not in the snapshot) stays.

        Two compactions at once: each, after writing its snapshot, lists the history again. A snapshot of
        another compaction that neither holds nor is held by its own means they overlapped: it deletes its own
        snapshot and nothing else, and says so (``rival``). So a run is deleted only by a compaction that saw no
        rival after its snapshot was written, and only when that snapshot holds it; the rival, if it comes
        later, sees this snapshot and backs off. Objects another compaction deleted first are not an error."""
        self.check()
        lines = []
        for stored in self.histories():
            digest = stored.environment["hash"] if stored.environment else ""
            objects = self._objects(stored.machine, digest)
            if len(objects) < 2:
                continue
            entries, environment = fold(objects)
            assert environment is not None
            names = [name for name, _ in objects]
            sequence = max(sequence_of(data) for _, data in objects)
            url = self.write_snapshot(stored.machine, environment, entries, covers=names, sequence=sequence)
            folder = self._path(_key(stored.machine), digest, RUNS)
            mine = url.rsplit("/", 1)[-1]
            rivals = rival_snapshots(self._objects(stored.machine, digest), mine, names)
            if rivals:
                self._call(f"deleting {self.url(folder)}/{mine}", self.fs.rm, f"{folder}/{mine}", missing=None)
                lines.append(
                    f"not compacted {stored.label}: another compaction ran at the same time ({rivals[0]}); "
                    "nothing deleted, run it again"
                )
                continue
            self._delete(folder, names)
            lines.append(f"compacted {stored.label}: {len(names)} objects -> 1 snapshot ({len(entries)} tests): {url}")
        return lines or [f"{self.location}: nothing to compact (one object or none per history)"]

    def _delete(self, folder: str, names: Sequence[str]) -> None:
        """Delete the objects ``names`` of ``folder``; one that is gone already (another compaction) is fine."""
        paths = [f"{folder}/{n}" for n in names]
        what = f"deleting {len(names)} object(s) of {self.url(folder)}"
        if self._call(what, self.fs.rm, paths, missing="gone") == "gone":  # some were gone: one at a time
            for path in paths:
                self._call(f"deleting {self.url(path)}", self.fs.rm, path, missing=False)

    def _thumbnail_path(self, name: str) -> str:
        """The object of thumbnail ``name`` under the store's thumbnail prefix; only a content name is joined."""
        try:
            return self._path(THUMBNAILS, validate.thumbnail(name))
        except validate.Invalid as error:
            raise BaselineError(
                f"baseline store {self.location}: {error}; fix or restore the history naming it"
            ) from None

    def put_thumbnail(self, name: str, blob: bytes) -> None:
        self._put(self._thumbnail_path(name), blob, once=True)

    def thumbnail_bytes(self, name: str) -> bytes | None:
        path = self._thumbnail_path(name)
        return self._call(f"reading {self.url(path)}", self.fs.cat_file, path, missing=None)

    def object_names(self, key: str, digest: str) -> list[str]:
        """The saved runs and snapshots of one environment's history, oldest first."""
        return [n for n in self._listing(self._path(_key(key), _digest({"hash": digest}), RUNS)) if n.endswith(".json")]

    def _put(self, path: str, blob: bytes, once: bool = False) -> None:
        """One whole object. A content-named one (``once``) that exists already is the same bytes: kept."""
        if once and self._call(f"checking {self.url(path)}", self.fs.exists, path):
            return
        if self.local:
            from pathlib import Path

            from .atomic import write_atomic_bytes

            write_atomic_bytes(Path(path), blob)  # a local "store": atomic as the folder layout is
            return
        self._call(f"writing {self.url(path)}", self.fs.pipe_file, path, blob)


# ----------------------------------------------------------------------------- the fold (pure)


def sequence_of(data: Mapping[str, Any]) -> int:
    """The save sequence an object claims: one more than the highest its saver read. Objects written before
    sequences (no field) read as 0: they come first, as the older objects they are."""
    sequence = data.get("sequence", 0)
    return sequence if isinstance(sequence, int) and not isinstance(sequence, bool) and sequence >= 0 else 0


def in_fold_order(objects: Sequence[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, Mapping[str, Any]]]:
    """The objects in the order they were saved: by the sequence each save claimed (what its runner had read
    of the history), then by name. A name starts with the saver's wall clock, and a clock an hour fast
    would otherwise put an old run after a newer accepted change, into its level."""
    return sorted(objects, key=lambda item: (sequence_of(item[1]), item[0]))


def out_of_clock_order(objects: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
    """How many objects carry a time stamp (name) later than that of an object saved after them."""
    count = 0
    earliest_later: str | None = None
    for name, _ in reversed(in_fold_order(objects)):
        if earliest_later is not None and name > earliest_later:
            count += 1
        earliest_later = name if earliest_later is None else min(name, earliest_later)
    return count


def rival_snapshots(objects: Sequence[tuple[str, Mapping[str, Any]]], mine: str, covers: Sequence[str]) -> list[str]:
    """The snapshots of another compaction that overlapped with the one that wrote ``mine`` (holding
    ``covers``): neither holds the other."""
    held = set(covers)
    return [
        name
        for name, data in objects
        if data.get("kind") == "snapshot" and name != mine and name not in held and mine not in data.get("covers", ())
    ]


def newest_snapshot(snapshots: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[str, Mapping[str, Any]]:
    """Of the snapshots no other holds, the one that holds the most of the history: the highest sequence,
    then the most objects (two compactions that read the history at once), then the name."""
    return max(snapshots, key=lambda item: (sequence_of(item[1]), len(item[1].get("covers", ())), item[0]))


def fold(objects: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The entries the objects of one environment make, and the environment (the newest object's). The
    newest snapshot (one no other snapshot holds) gives the entries it holds; then every run it does not
    already contain is folded in, in the order of the saves (``in_fold_order``), exactly as a save into a
    baseline file would have folded it."""
    ordered = in_fold_order(objects)
    snapshots = [(name, data) for name, data in ordered if data.get("kind") == "snapshot"]
    held = {covered for _, data in snapshots for covered in data.get("covers", ())}
    snapshots = [(name, data) for name, data in snapshots if name not in held] or snapshots
    entries: dict[str, Any] = {}
    covered: set[str] = set()
    if snapshots:
        name, snapshot = newest_snapshot(snapshots)
        entries = {k: dict(v) for k, v in snapshot.get("entries", {}).items()}
        covered = {name, *snapshot.get("covers", ())}
    environment = None
    for name, data in ordered:
        environment = dict(data.get("environment") or {}) or environment
        if name in covered or data.get("kind") != "run":
            continue
        report = SaveReport()
        updates = {test_id: _update(update) for test_id, update in data.get("tests", {}).items()}
        baselines.updated(entries, updates, str(data.get("mode", "all")), report)
    if environment is not None and isinstance(environment.get("hardware"), dict):
        from .fingerprint import hardware_hash

        environment["hash"] = hardware_hash(environment["hardware"])
    return entries, environment


def _update(data: Mapping[str, Any]) -> Any:
    update = RunUpdate.from_dict(data)
    if update.keep == 0 and not update.record:  # a whole entry
        return dict(update.fields)
    return update


def _by_name(blobs: Mapping[str, bytes], name: str) -> bytes | None:
    """The blob of the object named ``name`` (fsspec's keys may keep or drop the protocol)."""
    return next((blob for key, blob in blobs.items() if key == name or key.endswith("/" + name)), None)


def _secrets(url: str) -> list[str]:
    """The parts of a URL that must never be printed: its user, password and query values."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
        found = [parts.username, parts.password]
    except ValueError:
        return []
    found += [pair.split("=", 1)[1] for pair in parts.query.split("&") if "=" in pair]
    secrets = {text for value in found if value for text in (value, unquote(value))}
    return sorted(secrets, key=len, reverse=True)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _key(machine: str) -> str:
    """``machine`` as a path part of the store: a machine key, else BaselineError (a history's 'machine' field
    of '../../outside' would write outside the store)."""
    try:
        return validate.machine(machine)
    except validate.Invalid as error:
        raise BaselineError(f"{error}: refused as a folder of the store; fix the history's 'machine' field") from None


def _digest(environment: Mapping[str, Any]) -> str:
    digest = environment.get("hash")
    if not validate.is_hash(digest):
        raise BaselineError(
            f"environment hash {digest!r} is not {validate.HASH.pattern}: refused as a folder of the store"
        )
    return str(digest)


def _is_hash(name: str) -> bool:
    from .fingerprint import HASH_LENGTH

    return len(name) == HASH_LENGTH and all(c in "0123456789abcdef" for c in name)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _object_name() -> str:
    """Time first (the fold's order), then randomness (two runners in the same microsecond)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:12]}.json"
