"""One validator for everything read back from storage: baseline files, store objects, snapshots, shards.

A history is shared: committed by pull requests from anyone, written by every runner of a fleet into one
bucket, moved and compacted by commands. Whatever it holds is untrusted input, checked here before any of
it is joined onto a folder, uploaded, or judged:

* names are confined: a thumbnail name is a content hash of one fixed form (``<16 hex>.png``, as
  ``thumbnails.name_of`` writes it), a machine key is lowercase letters and digits joined by single
  dashes (as ``baselines.machine_key`` makes it), an environment hash is hex of a fixed length;
* numbers are finite and in range: JSON's ``NaN``, ``Infinity`` and overflowing literals (``1e999``)
  are refused when parsed, a boolean is never a number, samples and judged figures are positive;
* required fields are present and of their type, an unknown schema is named.

Each check raises ``Invalid`` with what is wrong (one clause); the reader that knows the file or the
object adds where it is and what to do, and raises ``BaselineError`` (a usage error in a pytest run,
exit 4; status 2 in the ``diffaccel`` commands). Pure standard library: no torch, no numpy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

THUMBNAIL = re.compile(r"[0-9a-f]{16}\.png")
MACHINE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MACHINE_LENGTH = 200
HASH = re.compile(r"[0-9a-f]{8}")  # fingerprint.HASH_LENGTH hex digits
FIGURES = ("ratio", "median", "compile_seconds", "cold_start_seconds")  # what history.levels judges
POSITIVE_FIELDS = ("median", "reference_median", "speedup")
# The widest a judged figure can be and still be a measurement: a ratio to fp32 of 1e-9 (or 1e9) is no
# technique's, and seconds beyond 11 days are no call's. Outside: refused, never judged.
RATIO_RANGE = (1e-6, 1e6)
SECONDS_MAX = 1e6
LARGEST_INT = 2**63  # an integer beyond this is no count or size the plugin writes


class BaselineError(Exception):
    """A baseline file or store object that can't be used; the message names it and says what to do."""


class Invalid(ValueError):
    """What is wrong with a value read from storage, in one clause (the caller names where it is)."""


# ----------------------------------------------------------------------------- parsing


def _refuse_constant(name: str) -> Any:
    raise Invalid(f"{name} is not a number JSON allows (non-finite values are refused)")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise Invalid(f"{text} is out of range (not a finite number)")
    return number


def _bounded_int(text: str) -> int:
    number = int(text)
    if abs(number) > LARGEST_INT:
        raise Invalid(f"the integer {text[:20]}... is out of range")
    return number


def loads(data: str | bytes) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, no literal that overflows a float, bounded integers and depth."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except Invalid:
        raise
    except UnicodeDecodeError as error:
        raise Invalid(f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise Invalid(f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    except (ValueError, RecursionError) as error:
        raise Invalid(f"not valid JSON ({type(error).__name__})") from None


# ----------------------------------------------------------------------------- values


def is_number(value: Any) -> bool:
    """A JSON number that is finite (``true`` is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_positive(value: Any) -> bool:
    """A finite number above zero: what a time, a ratio, a level's estimate must be to be judged."""
    return is_number(value) and value > 0


def is_thumbnail(name: Any) -> bool:
    return isinstance(name, str) and THUMBNAIL.fullmatch(name) is not None


def is_machine(key: Any) -> bool:
    return isinstance(key, str) and len(key) <= MACHINE_LENGTH and MACHINE.fullmatch(key) is not None


def is_hash(digest: Any) -> bool:
    return isinstance(digest, str) and HASH.fullmatch(digest) is not None


def thumbnail(name: Any) -> str:
    """``name`` when it is a thumbnail's content name; a path, a dot or another form is refused."""
    if not is_thumbnail(name):
        raise Invalid(f"thumbnail name {_short(name)} is not a content name of the form <16 hex digits>.png")
    return str(name)


def machine(key: Any) -> str:
    """``key`` when it is a machine key; anything that could be a path part outside its folder is refused."""
    if not is_machine(key):
        raise Invalid(
            f"machine key {_short(key)} is not lowercase letters and digits joined by single dashes "
            "(as --diffaccel-machine makes them)"
        )
    return str(key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"{what} is not a JSON object")
    return value


def _in_range(name: str, value: Any, what: str) -> None:
    """A judged value: finite and above zero, then within the range its kind can have."""
    if not is_positive(value):
        raise Invalid(f"{what}: {name!r} is {_short(value)}, not a finite number above zero")
    low, high = RATIO_RANGE if "ratio" in name or name in ("relative_samples", "speedup") else (0.0, SECONDS_MAX)
    if not low <= value <= high:
        raise Invalid(f"{what}: {name!r} is {_short(value)}, out of range ({low:g} to {high:g})")


def _optional_positive(container: Mapping[str, Any], name: str, what: str) -> None:
    value = container.get(name)
    if value is not None:
        _in_range(name, value, what)


def _optional_number(container: Mapping[str, Any], name: str, what: str, low: float | None = None) -> None:
    value = container.get(name)
    if value is None:
        return
    if not is_number(value) or (low is not None and value < low):
        floor = "" if low is None else f" at least {low:g}"
        raise Invalid(f"{what}: {name!r} is {_short(value)}, not a finite number{floor}")


def _positive_list(container: Mapping[str, Any], name: str, what: str, required: bool = False) -> None:
    value = container.get(name)
    if value is None and not required:
        return
    if not isinstance(value, list) or not all(is_positive(v) for v in value):
        raise Invalid(f"{what}: {name!r} must be a list of finite numbers above zero")
    for item in value:
        _in_range(name, item, what)


# ----------------------------------------------------------------------------- entries and records


def record(data: Any, what: str) -> Mapping[str, Any]:
    """A run record of a history: its level a count, each judged figure absent, null or positive."""
    found = _object(data, what)
    level = found.get("level", 0)
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= LARGEST_INT:
        raise Invalid(f"{what}: 'level' is {_short(level)}, not a count from 0")
    for figure in FIGURES:
        _optional_positive(found, figure, what)
    if found.get("picture") is not None:  # the run's thumbnail name: a content hash, compared, never opened
        try:
            thumbnail(found["picture"])
        except Invalid as error:
            raise Invalid(f"{what}: 'picture': {error}") from None
    return found


def entry(test_id: str, data: Any, require_samples: bool = True) -> Mapping[str, Any]:
    """One test's entry: positive samples, positive judged fields, valid run records, confined thumbnails."""
    what = f"entry {_short(test_id)}"
    found = _object(data, what)
    _positive_list(found, "samples", what, required=require_samples)
    _positive_list(found, "relative_samples", what)
    for name in POSITIVE_FIELDS:
        _optional_positive(found, name, what)
    _optional_number(found, "iqr", what, low=0.0)
    _optional_number(found, "peak_memory", what, low=0.0)
    _optional_number(found, "ssim", what)
    runs = found.get("runs")
    if runs is not None:
        if not isinstance(runs, list):
            raise Invalid(f"{what}: 'runs' must be a list of run records")
        for index, run in enumerate(runs):
            record(run, f"{what}, run {index + 1}")
    fidelity = found.get("fidelity")
    if fidelity is not None:
        fidelity = _object(fidelity, f"{what}: 'fidelity'")
        for name in ("images", "reference"):
            if fidelity.get(name) is not None:
                try:
                    thumbnail(fidelity[name])
                except Invalid as error:
                    raise Invalid(f"{what}: 'fidelity' {name!r}: {error}") from None
        _optional_number(fidelity, "ssim", f"{what}: 'fidelity'")
    return found


def entries(data: Any) -> dict[str, Any]:
    """A file's or a snapshot's entries: an object of test ids to valid entries."""
    if not isinstance(data, dict):
        raise Invalid("'entries' is not an object of test ids to entries")
    for test_id, value in data.items():
        entry(test_id, value)
    return data


def environment(data: Any, what: str = "'environment'") -> Mapping[str, Any]:
    """A recorded environment: an object holding a 'hardware' object (its hash is recomputed from it)."""
    found = _object(data, what)
    if not isinstance(found.get("hardware"), dict):
        raise Invalid(f"{what} holds no 'hardware' object")
    software = found.get("software")
    if software is not None and not isinstance(software, dict):
        raise Invalid(f"{what}: 'software' is not an object")
    return found


def run_update(test_id: str, data: Any) -> Mapping[str, Any]:
    """What one saved run adds to a test's history (history.RunUpdate.as_dict)."""
    what = f"test {_short(test_id)}"
    found = _object(data, what)
    missing = [name for name in ("fields", "record", "keep", "new_level") if name not in found]
    if missing:
        raise Invalid(f"{what}: missing {', '.join(repr(m) for m in missing)}")
    keep = found["keep"]
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= LARGEST_INT:
        raise Invalid(f"{what}: 'keep' is {_short(keep)}, not a count from 0")
    if not isinstance(found["new_level"], bool):
        raise Invalid(f"{what}: 'new_level' is {_short(found['new_level'])}, not true or false")
    whole = keep == 0 and not found["record"]  # a whole entry, kept as it is
    entry(test_id, found["fields"], require_samples=whole)
    record(found["record"], f"{what}: 'record'")
    return found


def store_object(data: Any, schema: int) -> Mapping[str, Any]:
    """A saved run or a snapshot of a shared store, of ``schema``."""
    found = _object(data, "the object")
    kind = found.get("kind")
    if kind not in ("run", "snapshot"):
        raise Invalid(f"'kind' is {_short(kind)}: not a saved run or snapshot of pytest-diffaccel")
    if found.get("schema") != schema or isinstance(found.get("schema"), bool):
        raise Invalid(f"schema {_short(found.get('schema'))} (this pytest-diffaccel reads {schema}; upgrade it?)")
    environment(found.get("environment"))
    sequence = found.get("sequence", 0)
    if isinstance(sequence, bool) or not isinstance(sequence, int) or not 0 <= sequence <= LARGEST_INT:
        raise Invalid(f"'sequence' is {_short(sequence)}, not a count from 0")
    if kind == "run":
        if found.get("mode", "all") not in ("all", "missing"):
            raise Invalid(f"'mode' is {_short(found.get('mode'))}, not 'all' or 'missing'")
        tests = found.get("tests")
        if not isinstance(tests, dict):
            raise Invalid("'tests' is not an object of test ids to saved runs")
        for test_id, update in tests.items():
            run_update(test_id, update)
    else:
        entries(found.get("entries"))
        covers = found.get("covers", [])
        if not isinstance(covers, list) or not all(isinstance(c, str) for c in covers):
            raise Invalid("'covers' is not a list of object names")
    return found


# ----------------------------------------------------------------------------- shards (JSON reports)


def shard(data: Any) -> Mapping[str, Any]:
    """A shard's JSON report as ``diffaccel merge`` reads it: pytest-benchmark's top level, benchmarks that
    name their test, objects where the merged report reads objects."""
    found = _object(data, "the report")
    for name in ("machine_info", "commit_info"):
        if name not in found:
            raise Invalid(f"not a pytest-benchmark JSON report (no {name!r})")
        _object(found[name], repr(name))
    benchmarks = found.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise Invalid("not a pytest-benchmark JSON report ('benchmarks' is not a list)")
    for index, bench in enumerate(benchmarks):
        what = f"benchmark {index + 1}"
        _object(bench, what)
        if not isinstance(bench.get("fullname") or bench.get("name"), str):
            raise Invalid(f"{what} names no test ('fullname' or 'name')")
        if "extra_info" in bench:
            _object(bench["extra_info"], f"{what}: 'extra_info'")
        if bench.get("stats") is not None:
            _object(bench["stats"], f"{what}: 'stats'")
    if "diffaccel" in found:
        extra = _object(found["diffaccel"], "'diffaccel'")
        for name in ("skipped", "failed"):
            listed = extra.get(name, [])
            if not isinstance(listed, list) or not all(isinstance(item, dict) for item in listed):
                raise Invalid(f"'diffaccel' {name!r} is not a list of objects")
    return found
