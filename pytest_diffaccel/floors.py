"""Fidelity floors: the SSIM threshold of each class of technique, from measured drift.

``benchmarks/fidelity_floors.py`` measures, for each bundled preset, the worst drift (1 - SSIM vs
the fp32 reference) any clean technique of a class shows over several seeds and captions, and
writes ``floors.json`` beside this module: per model and class a floor that allows K times that
drift. A built-in technique's threshold is its class's floor for the session's model when it was
measured, else the class's lowest floor over the presets (``default``). ``--diffaccel-floors FILE``
takes a file of the same shape measured on your own model. Pure: json only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

FLOORS_FILE = Path(__file__).with_name("floors.json")

EXACT, REDUCED, QUANTIZED, FP8_STORAGE, CACHE, TINY_VAE, TILING, DISTILLED = (
    "exact", "reduced precision", "quantized", "fp8 storage", "cache", "tiny VAE", "VAE tiling", "distilled",
)  # fmt: skip
# Weights quantized at load time (optimum-quanto, GGUF, bitsandbytes), by their format: 4 and 2 bits draw
# a coarser picture than torchao's int8 ("quantized"), float8 (3 mantissa bits) a coarser one than int8
# (measured 0.15 vs 0.002 on tiny-flux); each would loosen the finer ones' floor if they shared it.
WEIGHTS_8BIT, WEIGHTS_FLOAT8, WEIGHTS_4BIT, WEIGHTS_2BIT = (
    "weights in 8 bits", "weights in float8", "weights in 4 bits", "weights in 2 bits",
)  # fmt: skip
CLASS_OF: Mapping[str, str] = {
    "fp32": EXACT,
    "sdpa-flash": EXACT,
    "sdpa-efficient": EXACT,
    "sdpa-math": EXACT,
    "sdpa-cudnn": EXACT,
    "attn-backend": EXACT,
    "xformers": EXACT,
    "attention-slicing": EXACT,
    "fuse-qkv": EXACT,
    "channels-last": EXACT,
    "compile": EXACT,
    "compile-max-autotune": EXACT,
    "compile-reduce-overhead": EXACT,
    "compile-regional": EXACT,
    "compile-vae": EXACT,
    "vae-slicing": EXACT,
    "model-offload": EXACT,
    "sequential-offload": EXACT,
    "group-offload-block": EXACT,
    "group-offload-leaf": EXACT,
    "bf16": REDUCED,
    "fp16": REDUCED,
    "tf32": REDUCED,
    "int8-dynamic": QUANTIZED,
    "int8-weight-only": QUANTIZED,
    "int4-weight-only": QUANTIZED,
    "float8-dynamic": QUANTIZED,
    "float8-weight-only": QUANTIZED,
    "quanto-int8": WEIGHTS_8BIT,
    "quanto-float8": WEIGHTS_FLOAT8,
    "gguf-q8_0": WEIGHTS_8BIT,
    "bnb-int8": WEIGHTS_8BIT,
    "quanto-int4": WEIGHTS_4BIT,
    "gguf-q4_0": WEIGHTS_4BIT,
    "bnb-nf4": WEIGHTS_4BIT,
    "bnb-fp4": WEIGHTS_4BIT,
    "quanto-int2": WEIGHTS_2BIT,
    "layerwise-fp8": FP8_STORAGE,  # weights stored in fp8 and upcast: on a tiny model far coarser than int8
    "cache-pab": CACHE,
    "cache-faster": CACHE,
    "cache-first-block": CACHE,
    "cache-taylorseer": CACHE,
    "cache-mag": CACHE,
    "cache-sea": CACHE,
    "dbcache": CACHE,
    "dbcache-taylorseer": CACHE,
    "cache-text-kv": EXACT,  # text keys and values computed once per prompt instead of per step: the same numbers
    "tiny-vae": TINY_VAE,
    "vae-tiling": TILING,
    "distilled": DISTILLED,
}


def floor_from(worst_error: float, k: float, allowance: float) -> float:
    """1 - max(k x the worst measured drift, allowance), rounded down to 3 decimals, at least 0.05."""
    import math

    return max(0.05, math.floor((1.0 - max(k * worst_error, allowance)) * 1000.0) / 1000.0)


def captions(tiny: Any, count: int) -> list[str]:
    """``count`` captions of a tiny preset's training set, spread over colours, backgrounds and shapes."""
    colours, backgrounds, shapes = list(tiny.COLOURS), list(tiny.BACKGROUNDS), list(tiny.SHAPES)
    out = []
    for i in range(count):
        out.append(
            tiny.caption(
                shapes[i % len(shapes)], colours[i % len(colours)], backgrounds[(i * 3 + 1) % len(backgrounds)]
            )
        )
    return out


def check_file(path: Path) -> None:
    """Raise ValueError, naming the file and the fault, unless ``path`` is a floors file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{path}: no such file (make one with benchmarks/fidelity_floors.py --model ... --out FILE)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a floors file ({error})") from None
    if not isinstance(data, dict) or not ({"models", "default"} & set(data)):
        raise ValueError(f"{path}: not a floors file (no 'models' or 'default'; see benchmarks/fidelity_floors.py)")
    tables = [("default", data.get("default", {}))]
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ValueError(f"{path}: 'models' is not a mapping of model name to its classes")
    for model, entry in models.items():
        classes = entry.get("classes") if isinstance(entry, dict) else None
        if not isinstance(classes, dict):
            raise ValueError(f"{path}: model {model!r} has no 'classes' mapping")
        tables.append((model, {k: v.get("floor") if isinstance(v, dict) else v for k, v in classes.items()}))
    known = sorted(set(CLASS_OF.values()))
    for where, table in tables:
        if not isinstance(table, dict):
            raise ValueError(f"{path}: {where!r} is not a mapping of class to floor")
        for klass, value in table.items():
            if klass not in known:
                raise ValueError(f"{path}: {where}: unknown class {klass!r}; known: {', '.join(known)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
                raise ValueError(f"{path}: {where}: {klass}: floor {value!r} is not an SSIM in (0, 1]")


@lru_cache(maxsize=4)
def load(path: str | None = None) -> dict[str, Any]:
    """The floors file (the packaged one by default); {} when it doesn't exist yet."""
    file = Path(path) if path else FLOORS_FILE
    try:
        return dict(json.loads(file.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return {}


def floor(klass: str, model: str | None = None, path: str | None = None) -> float | None:
    """The class's floor for ``model`` (measured), else the class's default; None when never measured."""
    value, _ = floor_and_source(klass, model, path)
    return value


def floor_and_source(klass: str, model: str | None, path: str | None) -> tuple[float | None, str]:
    """The class's floor and where it comes from: "measured" (for this model), "default" or "none"."""
    data = load(path)
    measured = data.get("models", {}).get(model or "", {}).get("classes", {}).get(klass)
    if measured is not None:
        return float(measured["floor"]), "measured"
    value = data.get("default", {}).get(klass)
    return (None, "none") if value is None else (float(value), "default")


def overrides(
    model: str | None, path: str | None = None, generic: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per built-in technique, its class's floor for this model: the thresholds a session uses.

    Where the model was not measured, the class's default (the presets' lowest floor) is capped by
    ``generic`` (each technique's registered ``min_ssim``): a tiny preset on the CPU is exact where a
    real model over 30-50 steps on a GPU's kernels is not, so a default never makes the gate stricter
    than the technique's own threshold on a model nobody measured."""
    out = {}
    for name, klass in CLASS_OF.items():
        value, source = floor_and_source(klass, model, path)
        if value is None:
            continue
        if source == "default" and generic and name in generic:
            value = min(value, generic[name])
        out[name] = value
    return out
