#!/usr/bin/env python3
"""Fidelity floors from measured drift: the SSIM threshold of each class of technique.

    python benchmarks/fidelity_floors.py            # the bundled presets; writes pytest_diffaccel/floors.json
                                                    # and docs/fidelity-floors.md (about 10 minutes on 2 cores)
    python benchmarks/fidelity_floors.py --model PATH_OR_ID --out my-floors.json   # your own model
    python benchmarks/fidelity_floors.py --techniques quanto-int8,dbcache   # measure these, merge them into --out

For every built-in technique the machine can run on a model, and for ``--seeds`` seeds x the
model's caption set, the technique's images are compared with the fp32 reference's (SSIM, the
gate's own parameters). A class's *error* is the worst 1 - SSIM any clean technique of the class
showed on any image; its floor allows ``K`` times that error (PyTorch dynamo's accuracy check has
the same shape: an optimised result may be at most k times as far from a higher-precision answer
as the plain fp32 run is), and never less than ``ALLOWANCE``:

    floor = 1 - max(K * worst error, ALLOWANCE)

Beside it, the plain fp32 run's own error against float64 (how far fp32 arithmetic alone moves
this model's picture) is reported for scale. The classes: exact in fp32 (attention backends,
fused QKV, channels-last, compile, slicing, offloading), reduced precision, quantized (torchao), weights
in 8, 4 and 2 bits (quantized at load: optimum-quanto, GGUF, bitsandbytes), fp8 storage (layerwise
casting: weights kept in float8, far coarser than int8 on a tiny model), caches (diffusers' and
cache-dit's), the tiny VAE, VAE tiling, a distilled denoiser. floors.json keeps each technique's worst
error too. A technique whose backend is not installed is skipped, with the reason, like one that needs CUDA.

``--techniques`` measures only the techniques named and merges them into the existing ``--out``: every
other technique's error stays as recorded, a class's worst error becomes the larger of the recorded one
and the new ones (a partial run never tightens a floor), and the file lists the update beside the run
that recorded the rest. New techniques get their floors without re-measuring the old ones on another
machine, whose kernels would move them (bf16's error on tiny-sd is hardware's as much as the model's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_diffaccel import floors  # noqa: E402

K = 2.0
ALLOWANCE = 0.002
PRESETS = ("tiny-sd", "tiny-sdxl", "tiny-flux")
# optional backends: the versions the floors were measured with
BACKENDS = ("optimum-quanto", "gguf", "bitsandbytes", "cache-dit")


def measure_model(model: str, seeds: int, prompts: int, only: set[str] | None = None) -> dict[str, Any]:
    import numpy as np
    import torch

    from pytest_diffaccel import fidelity
    from pytest_diffaccel.config import Settings
    from pytest_diffaccel.measure import Call, generate
    from pytest_diffaccel.models import tiny
    from pytest_diffaccel.session import DiffaccelSession, TechniqueFailed
    from pytest_diffaccel.techniques import builtin_registry, unmet

    settings = Settings(model=model)
    state = DiffaccelSession(settings, builtin_registry())
    info = state.info
    captions = floors.captions(tiny, prompts) if info.kind == "preset" else list(info.prompts)
    base_call = state.call_for(settings)
    call = Call(prompts=tuple(captions), steps=base_call.steps, size=base_call.size, guidance=base_call.guidance)
    call = call.with_extra(dict(info.call_extra))
    env = state.environment()
    seed_list = list(range(seeds))
    reference = state.reference_images(call, seed_list)
    errors: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    for name, technique in sorted(state.registry.techniques.items()):
        klass = floors.CLASS_OF.get(name)
        if klass is None or technique.argument == "required" or (only is not None and name not in only):
            continue
        spec = state.registry.parse(name)
        reasons = unmet(spec.requirements, env)
        if reasons:
            skipped[name] = "; ".join(reasons)
            continue
        started = time.perf_counter()
        try:
            pipe, applied = state.apply(spec, settings)
            values = []
            for seed in seed_list:
                images = generate(pipe, call, list(applied.call_contexts), seed=seed)
                values += [1.0 - s for s in fidelity.compare(images, reference[seed]).per_image_ssim]
        except TechniqueFailed as error:
            skipped[name] = str(error)
            continue
        finally:
            pipe = None
        errors[name] = values
        print(f"  {model} {name}: worst error {max(values):.5f} ({time.perf_counter() - started:.0f} s)", flush=True)
    if only is not None:  # a partial run keeps the recorded fp32-vs-float64 scale
        return {"errors": errors, "skipped": skipped, "fp32_vs_fp64": None, "images": len(captions) * seeds}
    fp64 = None
    try:
        pipe64 = state.source().fresh("cpu", "float64")
        values = []
        for seed in seed_list:
            with torch.inference_mode():
                images = generate(pipe64, call, [], seed=seed)
            values += [1.0 - s for s in fidelity.compare(np.asarray(images), reference[seed]).per_image_ssim]
        fp64 = max(values)
    except Exception as error:  # a pipeline that can't run in float64: reported, not fatal
        print(f"  {model}: fp32 vs float64 not measured ({type(error).__name__}: {error})", flush=True)
    return {"errors": errors, "skipped": skipped, "fp32_vs_fp64": fp64, "images": len(captions) * seeds}


def derive(measured: dict[str, Any]) -> dict[str, Any]:
    """Per class: the worst error, the technique that showed it, and the floor."""
    classes: dict[str, dict[str, Any]] = {}
    for name, values in measured["errors"].items():
        klass = floors.CLASS_OF[name]
        worst = max(values)
        row = classes.setdefault(klass, {"worst_error": -1.0, "by": None})
        if worst > row["worst_error"]:
            row.update(worst_error=worst, by=name)
    for row in classes.values():
        row["floor"] = floors.floor_from(row["worst_error"], K, ALLOWANCE)
        row["worst_error"] = round(row["worst_error"], 6)
    return classes


def merge(recorded: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """A model's recorded entry with the techniques ``measured`` now: their errors replace or join the
    recorded ones; a class's worst error is the larger of its recorded one and theirs."""
    entry = json.loads(json.dumps(recorded))  # a copy
    classes = entry.setdefault("classes", {})
    for name, values in sorted(measured["errors"].items()):
        worst = max(values)
        entry.setdefault("techniques", {})[name] = round(worst, 6)
        entry.get("skipped", {}).pop(name, None)
        klass = floors.CLASS_OF[name]
        row = classes.get(klass)
        if row is None or worst > row["worst_error"]:
            classes[klass] = {
                "worst_error": round(worst, 6),
                "by": name,
                "floor": floors.floor_from(worst, K, ALLOWANCE),
            }
    for name, reason in measured["skipped"].items():
        if name not in entry.get("techniques", {}):
            entry.setdefault("skipped", {})[name] = reason
    entry["techniques"] = dict(sorted(entry.get("techniques", {}).items()))
    entry["skipped"] = dict(sorted(entry.get("skipped", {}).items()))
    return entry


def render(data: dict[str, Any], command: str) -> str:
    return "# Fidelity floors from measured drift\n\n" + render_tables(data)


def render_tables(data: dict[str, Any]) -> str:
    lines = [
        f"Command: `{data['command']}` ({data['minutes']:.0f} minutes; {data['versions']}). Each class's floor is "
        f"1 - max({data['k']:g} x the worst 1 - SSIM a clean technique of the class showed, {data['allowance']:g}), "
        f"over {data['seeds']} seeds x the captions of each model.",
    ]
    for update in data.get("updates", []):
        lines.append(
            f"Updated by `{update['command']}` ({update['minutes']:.0f} minutes, {update['date']}; "
            f"{update['versions']}): {', '.join(update['techniques'])} measured and merged, the others as recorded."
        )
    lines += [
        "",
        "| model | class | floor | worst error (1 - SSIM) | shown by | images per technique | fp32 vs float64 |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for model, entry in data["models"].items():
        fp64 = "-" if entry["fp32_vs_fp64"] is None else f"{entry['fp32_vs_fp64']:.2g}"
        for klass, row in sorted(entry["classes"].items(), key=lambda kv: -kv[1]["floor"]):
            lines.append(
                f"| {model} | {klass} | {row['floor']:.3f} | {row['worst_error']:.4g} | {row['by']} | "
                f"{entry['images']} | {fp64} |"
            )
    lines += [
        "",
        "Models without measured floors (a hub id, a local folder, the full-size architectures) start from the "
        "lowest floor of each class over the bundled presets (`default` in floors.json), capped by each "
        "technique's own registered threshold (`floors.overrides`: a default never makes the gate stricter than "
        "the technique's own threshold; the thresholds that result are in the README's \"How it decides\"):",
        "",
        "| class | default floor |",
        "|---|---:|",
    ]
    for klass, value in sorted(data["default"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {klass} | {value:.3f} |")
    lines += [
        "",
        "A real model drifts more over 30-50 steps than a tiny preset over 8: measure yours with "
        "`python benchmarks/fidelity_floors.py --model PATH_OR_ID --out floors.json` and pass "
        "`--diffaccel-floors floors.json`. The fidelity-regression gate (a technique against its own "
        "baseline) does not depend on these floors.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="model(s) to measure (default: the bundled tiny presets)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8, help="captions per call (presets: from the training set)")
    parser.add_argument("--out", type=Path, default=floors.FLOORS_FILE)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "fidelity-floors.md")
    parser.add_argument("--techniques", help="measure only these (comma-separated) and merge them into --out")
    args = parser.parse_args(argv)
    only = {t.strip() for t in args.techniques.split(",") if t.strip()} if args.techniques else None
    unknown = sorted((only or set()) - set(floors.CLASS_OF))
    if unknown:
        parser.error(f"--techniques: no floor class for {', '.join(unknown)}")
    recorded = json.loads(args.out.read_text()) if only is not None else None
    if recorded is not None and recorded.get("seeds") != args.seeds:
        parser.error(f"--techniques: {args.out} was measured over {recorded.get('seeds')} seeds; pass --seeds to match")
    given = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/fidelity_floors.py" + ("" if not given else " " + " ".join(given))
    started = time.perf_counter()
    from pytest_diffaccel.fingerprint import installed_versions

    versions = ", ".join(f"{k} {v}" for k, v in installed_versions().items() if v)
    from pytest_diffaccel.techniques.registry import installed_version

    backends = [(name, installed_version(name)) for name in BACKENDS]
    versions += "".join(f", {name} {version}" for name, version in backends if version)
    models = dict(recorded["models"]) if recorded is not None else {}
    for model in args.model or PRESETS:
        print(f"{model}:", flush=True)
        measured = measure_model(model, args.seeds, args.prompts, only)
        if recorded is not None:
            models[model] = merge(models.get(model, {}), measured)
            continue
        models[model] = {
            "classes": derive(measured),
            "fp32_vs_fp64": measured["fp32_vs_fp64"],
            "images": measured["images"],
            "skipped": measured["skipped"],
            "techniques": {name: round(max(values), 6) for name, values in sorted(measured["errors"].items())},
        }
    default: dict[str, float] = {}
    for entry in models.values():
        for klass, row in entry["classes"].items():
            default[klass] = min(default.get(klass, 1.0), row["floor"])
    minutes = (time.perf_counter() - started) / 60
    today = dt.date.today().isoformat()
    if recorded is not None:
        update = {"command": command, "date": today, "versions": versions, "minutes": minutes,
                  "techniques": sorted(only or ())}  # fmt: skip
        data = {**recorded, "models": models, "default": default, "updates": [*recorded.get("updates", []), update]}
    else:
        data = {
            "command": command,
            "date": today,
            "versions": versions,
            "k": K,
            "allowance": ALLOWANCE,
            "seeds": args.seeds,
            "models": models,
            "default": default,
            "minutes": minutes,
        }
    args.out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if args.doc:
        args.doc.write_text(render(data, command))
        print(render(data, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
