"""Parsers of option values: each takes the raw value (command line, ini or marker) and the name to blame,
returns the typed value or raises SettingError with a message that names the setting and says what is expected.

Light (no torch, no numpy): the plugin's load imports it through config.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class SettingError(ValueError):
    """A bad value; the message names the setting and says what is expected."""


def parse_percent(value: Any, name: str) -> float:
    """'5%', '5' and 5 all mean five percent; returns the fraction 0.05."""
    text = str(value).strip()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*%?", text)
    if not match:
        raise SettingError(f"{name}: {value!r} is not a percentage; write it like 5% (or 5)")
    return float(match.group(1)) / 100.0


def parse_fraction(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingError(f"{name}: {value!r} is not a number; write a value between 0 and 1, e.g. 0.95") from None
    if not 0.0 <= number <= 1.0:
        raise SettingError(f"{name}: {value!r} is outside [0, 1]; SSIM thresholds are between 0 and 1, e.g. 0.95")
    return number


def parse_positive_int(value: Any, name: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingError(f"{name}: {value!r} is not a whole number; write e.g. 8") from None
    if number < 1:
        raise SettingError(f"{name}: {value!r} must be at least 1")
    return number


def parse_int(value: Any, name: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise SettingError(f"{name}: {value!r} is not a whole number") from None


def parse_positive_float(value: Any, name: str) -> float:
    try:
        number = float(str(value).strip().rstrip("s"))
    except ValueError:
        raise SettingError(f"{name}: {value!r} is not a number; write e.g. 30") from None
    if number <= 0:
        raise SettingError(f"{name}: {value!r} must be positive")
    return number


def parse_size(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        height, width = (parse_positive_int(v, name) for v in value)
        return height, width
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", str(value))
    if not match:
        raise SettingError(f"{name}: {value!r} is not a size; write HEIGHTxWIDTH, e.g. 512x512")
    height, width = int(match.group(1)), int(match.group(2))
    if height < 8 or width < 8 or height % 8 or width % 8:
        raise SettingError(f"{name}: {value!r}: height and width must be multiples of 8, at least 8")
    return height, width


def _items(value: Any, name: str, split: Callable[[str], list[str]], expected: str, empty: str) -> tuple[str, ...]:
    """The stripped, non-empty items of a text (cut by ``split``) or of a sequence."""
    if isinstance(value, str):
        parts = split(value)
    elif isinstance(value, Sequence):
        parts = [str(p) for p in value]
    else:
        raise SettingError(f"{name}: {value!r} is not {expected}")
    items = tuple(p.strip() for p in parts if p.strip())
    if not items:
        raise SettingError(f"{name}: {empty}")
    return items


def _commas_and_lines(text: str) -> list[str]:
    return [p for line in text.splitlines() for p in line.split(",")]


def parse_list(value: Any, name: str) -> tuple[str, ...]:
    """Items separated by commas or lines, or a list of them."""
    return _items(value, name, _commas_and_lines, "a comma-separated list", "the list is empty")


def parse_prompts(value: Any, name: str) -> tuple[str, ...]:
    """One prompt per line, or a list of prompts."""
    return _items(value, name, str.splitlines, "a prompt or a list of prompts", "no prompt given")


GATE_NAMES = (
    "broken", "fidelity", "fidelity regression", "caption", "not applied", "speed-up", "syncs", "latency",
    "compile time", "cold start", "memory", "baseline", "picture vs base",
)  # fmt: skip


def parse_gates(value: Any, name: str) -> tuple[str, ...]:
    """Gate names, with dashes or spaces: latency,compile-time -> ('latency', 'compile time')."""
    gates = tuple(item.replace("-", " ").strip().lower() for item in parse_list(value, name))
    unknown = [g for g in gates if g not in GATE_NAMES]
    if unknown:
        known = ", ".join(g.replace(" ", "-") for g in GATE_NAMES)
        raise SettingError(f"{name}: unknown gate(s) {', '.join(unknown)}; known: {known}")
    return gates


ACCEPTABLE = ("fidelity",)  # what --diffaccel-accept can make the new baseline


def parse_accept(value: Any, name: str) -> tuple[str, ...]:
    """What an intended change makes the new baseline: fidelity (the picture and its SSIM)."""
    kinds = tuple(item.strip().lower() for item in parse_list(value, name))
    unknown = [k for k in kinds if k not in ACCEPTABLE]
    if unknown:
        raise SettingError(f"{name}: cannot accept {', '.join(unknown)}; known: {', '.join(ACCEPTABLE)}")
    return tuple(dict.fromkeys(kinds))


def parse_choice(choices: Sequence[str]) -> Callable[[Any, str], str]:
    def parse(value: Any, name: str) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise SettingError(f"{name}: {value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SettingError(f"{name}: {value!r} is not true or false")


def parse_text(value: Any, name: str) -> str:
    text = str(value).strip()
    if not text:
        raise SettingError(f"{name}: empty value")
    return text


def parse_path(value: Any, name: str) -> Path:
    return Path(parse_text(value, name))


def parse_location(value: Any, name: str) -> Path | str:
    """A folder, or a store's URL (``s3://bucket/prefix``, any fsspec protocol): kept as text."""
    text = parse_text(value, name)
    if "://" in text:
        protocol = text.split("://", 1)[0]
        if not re.fullmatch(r"[a-z][a-z0-9+.-]*", protocol) or not text.split("://", 1)[1].strip("/"):
            raise SettingError(f"{name}: {text!r} is not a store URL (protocol://bucket/prefix, e.g. s3://ci/perf)")
        return text.rstrip("/")
    return Path(text)


def parse_floors_file(value: Any, name: str) -> Path:
    from . import floors

    path = parse_path(value, name)
    try:
        floors.check_file(path)
    except ValueError as error:
        raise SettingError(f"{name}: {error}") from None
    return path


def parse_gpu_ids(value: Any, name: str) -> tuple[int, ...]:
    ids = tuple(parse_int(v, name) for v in parse_list(value, name))
    if any(i < 0 for i in ids):
        raise SettingError(f"{name}: {value!r}: GPU indices are 0 or more")
    return ids
