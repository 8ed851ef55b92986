"""The readers of stored data fed arbitrary JSON and bytes shaped like baseline files, store objects and shards.

Whatever a history holds (a field poisoned with ``Infinity``, ``true``, a path, a negative time; bytes that
are not JSON at all), each reader either returns data every later step can judge, or refuses it with the
one documented error, in one line:

* a baseline folder (``baselines.load``, ``locate``, ``diffaccel move`` into a ``file://`` store);
* a shared store's objects (``RemoteStore.locate`` on a ``file://`` store);
* a shard's JSON report (``diffaccel merge``).

And what it returns never holds a value a verdict could be drawn from that is not finite and positive,
never names a thumbnail outside the thumbnail folder, and no file is written outside the destination.
A few seconds of examples (``max_examples``), no deadline (the file system is slow on a busy runner).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pytest_diffaccel import baselines, history, thumbnails, transfer
from pytest_diffaccel.baselines import BaselineError
from pytest_diffaccel.cli import main
from pytest_diffaccel.fingerprint import hardware_hash
from pytest_diffaccel.remote import RemoteStore

HARDWARE = {"cpu": {"vendor": "GenuineIntel", "model_name": "test cpu"}, "cores": 2}
ENVIRONMENT = {"hash": hardware_hash(HARDWARE), "hardware": HARDWARE, "software": {"torch": "2.13.0"}}
OUTSIDE = Path(tempfile.mkdtemp(prefix="diffaccel-secret-"))
SECRET = OUTSIDE / "credentials"
SECRET.write_bytes(b"SECRET-BYTES-42")
GOOD_PNG = "0123456789abcdef.png"
FIGURES = ("ratio", "median", "compile_seconds", "cold_start_seconds")
RUN = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

POISON = st.sampled_from(
    [math.inf, -math.inf, math.nan, True, False, None, 0, 0.0, -1.0, 1e-300, 1e300, 10**400, "1.0", "", [], {}]
)
ANYTHING = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
BAD_NAMES = [str(SECRET), "/dev/zero", "../x.png", f"../../{SECRET.name}", f"{GOOD_PNG}/../../x", "..", ""]
BAD_MACHINES = ["../../outside", "/abs", "a/b", "..", "CPU"]


def maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a good value (nine in ten), sometimes a poisoned or arbitrary one: a document of a dozen fields
    is then accepted often enough for the accepted path to be checked too."""
    return st.integers(0, 9).flatmap(lambda draw: good if draw else st.one_of(POISON, ANYTHING))


NAME = maybe(st.just(GOOD_PNG)) | st.sampled_from(BAD_NAMES)
MACHINE = maybe(st.just("cpu-test")) | st.sampled_from(BAD_MACHINES)


seconds = st.floats(0.001, 10.0)
RECORD = st.fixed_dictionaries(
    {"level": maybe(st.integers(0, 3)), "ratio": maybe(st.floats(0.2, 5.0)), "median": maybe(seconds)},
    optional={"compile_seconds": maybe(seconds), "cold_start_seconds": maybe(seconds), "recorded": ANYTHING},
)
ENTRY = st.fixed_dictionaries(
    {"samples": maybe(st.lists(seconds, max_size=3)), "runs": maybe(st.lists(RECORD, max_size=3))},
    optional={
        "fidelity": maybe(st.fixed_dictionaries({"images": NAME, "reference": NAME})),
        "relative_samples": maybe(st.lists(st.floats(0.2, 5.0), max_size=3)),
        "median": maybe(seconds),
        "call": ANYTHING,
    },
)
ENTRIES = maybe(st.dictionaries(st.text(max_size=8), maybe(ENTRY), max_size=2))
ENVIRONMENTS = maybe(st.fixed_dictionaries({"hardware": maybe(st.just(HARDWARE))}, optional={"software": ANYTHING}))
FILE = st.fixed_dictionaries(
    {"schema": maybe(st.sampled_from([1, 2, 3])), "machine": MACHINE, "entries": ENTRIES},
    optional={"environment": ENVIRONMENTS},
)
UPDATE = st.fixed_dictionaries(
    {
        "fields": maybe(ENTRY),
        "record": maybe(RECORD),
        "keep": maybe(st.integers(0, 10)),
        "new_level": maybe(st.booleans()),
    }
)
OBJECT = st.fixed_dictionaries(
    {
        "schema": maybe(st.just(3)),
        "kind": maybe(st.sampled_from(["run", "snapshot"])),
        "environment": ENVIRONMENTS,
        "mode": maybe(st.sampled_from(["all", "missing"])),
        "tests": maybe(st.dictionaries(st.text(max_size=8), maybe(UPDATE), max_size=2)),
        "entries": ENTRIES,
    },
    optional={"covers": maybe(st.lists(st.text(max_size=8), max_size=2)), "machine": MACHINE},
)
GATE = st.fixed_dictionaries({"gate": maybe(st.text(max_size=6)), "passed": maybe(st.booleans())})
BENCH = st.fixed_dictionaries(
    {"fullname": maybe(st.text(min_size=1, max_size=8))},
    optional={
        "extra_info": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "gates": maybe(st.lists(maybe(GATE), max_size=2)),
                    "baseline": maybe(st.fixed_dictionaries({"ratio": maybe(st.floats(0.2, 5.0))})),
                    "speedup": maybe(st.floats(0.2, 5.0)),
                    "technique": maybe(st.text(max_size=6)),
                    "ssim": maybe(st.floats(0.0, 1.0)),
                },
            )
        ),
        "stats": maybe(st.fixed_dictionaries({"median": maybe(seconds)})),
    },
)
SHARD = st.fixed_dictionaries(
    {
        "machine_info": maybe(st.just({"node": "x"})),
        "commit_info": maybe(st.just({})),
        "benchmarks": maybe(st.lists(maybe(BENCH), max_size=3)),
    },
    optional={"diffaccel": maybe(st.fixed_dictionaries({"skipped": maybe(st.lists(ANYTHING, max_size=2))}))},
)


def encoded(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """The documents as JSON (NaN and Infinity written as Python writes them), cut and spliced, or bytes."""
    dumped = documents.map(lambda d: json.dumps(d).encode())
    spliced = st.tuples(dumped, st.integers(0, 400), st.binary(max_size=6)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
    )
    return st.integers(0, 9).flatmap(lambda draw: dumped if draw > 1 else spliced if draw else st.binary(max_size=64))


def one_line(error: BaseException | str) -> None:
    assert "\n" not in str(error).strip(), str(error)


def assert_judgeable(entries: dict[str, Any], folder: Path | None = None) -> None:
    """What a reader accepted holds no value a verdict could come from that is not finite and positive, and
    names no thumbnail outside the thumbnail folder."""
    for entry in entries.values():
        for name in ("samples", "relative_samples"):
            assert all(math.isfinite(v) and v > 0 for v in entry.get(name) or [])
        records = history.runs_of(entry)
        for record in records:
            for figure in FIGURES:
                raw = record.get(figure)
                assert raw is None or (not isinstance(raw, bool) and math.isfinite(raw) and raw > 0), (figure, raw)
        for figure in FIGURES:
            for level in history.levels(records, figure):
                assert all(math.isfinite(v) for v in level)
    for name in baselines.named_files(entries):
        if folder is not None:
            assert thumbnails.path_of(folder, name).parent == folder / thumbnails.FOLDER


def files_outside(root: Path, *inside: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and not any(p.is_relative_to(i) for i in inside)}


VALID_FILE = json.dumps(
    {
        "schema": 3,
        "machine": "cpu-test",
        "environment": ENVIRONMENT,
        "entries": {"t::a": {"samples": [0.2], "runs": [{"level": 0, "ratio": 1.1}], "fidelity": {"images": GOOD_PNG}}},
    }
).encode()


@RUN
@given(data=encoded(FILE))
@example(data=VALID_FILE)
@example(data=VALID_FILE.replace(b"1.1", b"Infinity"))
@example(data=VALID_FILE.replace(GOOD_PNG.encode(), str(SECRET).encode()))
@example(data=VALID_FILE.replace(b'"cpu-test"', b'"../../outside"'))
def test_a_baseline_folder_is_judged_or_refused_never_escaped(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as sandbox:
        root = Path(sandbox)
        folder = root / "b"
        folder.mkdir()
        (folder / "cpu-test.json").write_bytes(data)
        try:
            entries = baselines.load(folder / "cpu-test.json")
        except BaselineError as error:
            one_line(error)
        else:
            assert_judgeable(entries, folder)
        try:
            located = baselines.locate(folder, "cpu-test", ENVIRONMENT)
            located.mismatch()
            assert_judgeable(located.entries, folder)
        except BaselineError as error:
            one_line(error)
        store = root / "store"
        try:
            transfer.move(str(folder), f"file://{store}")
        except BaselineError as error:
            one_line(error)
        assert files_outside(root, folder, store) == set()
        for path in files_outside(store, store / "thumbnails"):
            assert "/runs/" in str(path) and path.parent.parent.parent.parent == store
        for path in store.rglob("*"):
            assert not path.is_file() or b"SECRET-BYTES" not in path.read_bytes()


@RUN
@given(data=encoded(OBJECT))
def test_a_store_object_is_judged_or_refused(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as sandbox:
        root = Path(sandbox) / "s"
        runs = root / "cpu-test" / ENVIRONMENT["hash"] / "runs"
        runs.mkdir(parents=True)
        (runs / "20261201T000000000000Z-000000000000.json").write_bytes(data)
        store = RemoteStore(f"file://{root}")
        try:
            located = store.locate("cpu-test", ENVIRONMENT)
        except BaselineError as error:
            one_line(error)
        else:
            located.mismatch()
            assert_judgeable(located.entries)
        other = {**ENVIRONMENT, "hash": "0" * 8}
        located = store.locate("cpu-test", other)  # another environment's bad object: skipped, never an error
        assert all("\n" not in note for note in located.notes)


@RUN
@given(data=encoded(SHARD))
def test_a_shard_is_merged_or_named(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as sandbox:
        path = Path(sandbox) / "shard-1.json"
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["merge", str(path)])
        assert status in (0, 1, 2)
        if status == 2:
            one_line(err.getvalue())
            assert err.getvalue().startswith("error: ") and str(path) in err.getvalue()


@pytest.fixture(scope="module", autouse=True)
def _secret_folder() -> Any:
    yield
    SECRET.unlink(missing_ok=True)
    OUTSIDE.rmdir()
