"""A stable description of the arguments a test gives ``diffaccel_benchmark``: what keys its history.

A history is compared only for the same call, so the call's description must be the same in every
process that makes the same call. ``repr()`` is not: a PIL image, a callback or a generator prints its
memory address, which changes every run, and a test keyed by it was "recorded for another call" forever,
never judged. Here every argument becomes text that depends on its value only:

- plain values (None, bool, numbers, strings) as ``repr``; lists, tuples and dicts element by element;
- pictures and arrays (PIL images, numpy arrays, torch tensors) as their type, shape, dtype and a
  digest of their bytes: the same pixels give the same key, one changed pixel another;
- a ``torch.Generator`` as its seed; a function, class or method as its qualified name; an enum
  member as its name;
- anything else whose ``repr`` holds no memory address, as its ``repr``.

An argument that can't be described stably is an error naming it (``UnstableArgument``), never a key
that silently changes each run. Pure: no torch or numpy import (types are recognised by name).
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from typing import Any

ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")
DIGEST = 16


class UnstableArgument(ValueError):
    """An argument of the call whose description would change from one process to the next."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:DIGEST]


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def describe(name: str, value: Any) -> str:
    """The stable text of argument ``name``'s value (UnstableArgument when there is none)."""
    return _describe(name, value, depth=0)


def _describe(name: str, value: Any, depth: int) -> str:
    if depth > 20:
        raise UnstableArgument(f"argument {name!r} of diffaccel_benchmark nests too deep to describe")
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_describe(name, v, depth + 1) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, Mapping):
        items = sorted((str(k), _describe(name, v, depth + 1)) for k, v in value.items())
        return "{" + ", ".join(f"{k!r}: {v}" for k, v in items) + "}"
    kind = _type_name(value)
    if kind.startswith("PIL.") and hasattr(value, "tobytes") and hasattr(value, "mode"):
        return f"PIL.Image({value.mode}, {value.size[0]}x{value.size[1]}, sha256 {_digest(value.tobytes())})"
    if kind == "numpy.ndarray":
        return f"ndarray({value.dtype}, {tuple(value.shape)}, sha256 {_digest(value.tobytes())})"
    if kind == "torch.Tensor" or kind.startswith("torch.nn.parameter."):
        import torch  # a tensor was given: torch is imported already

        data = value.detach().cpu().contiguous()
        raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
        return f"Tensor({data.dtype}, {tuple(data.shape)}, sha256 {_digest(raw)})"
    if kind == "torch._C.Generator" or kind == "torch.Generator":
        return f"Generator({value.device}, seed {value.initial_seed()})"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    text = repr(value)
    if ADDRESS.search(text):
        raise UnstableArgument(
            f"argument {name!r} of diffaccel_benchmark ({kind}) has no stable description: its repr holds a memory "
            f"address ({text[:80]}), so the history it keys would change every run and the test would never be "
            "judged; pass plain values, an image, an array or a tensor, or a function, instead"
        )
    return text


def describe_all(kwargs: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Each argument's stable text, by name: the ``extra`` of a call's key."""
    return tuple(sorted((k, describe(k, v)) for k, v in kwargs.items()))
