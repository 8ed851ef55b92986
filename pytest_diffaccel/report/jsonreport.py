"""The JSON report, in pytest-benchmark's format (``pytest-benchmark compare`` reads it).

Statistics come from pytest-benchmark's own ``Stats`` class over our timed samples, and
``machine_info``/``commit_info`` from its own helpers, so that its tools see a file of their
own. Our fields live in ``extra_info``; ``machine_info['diffaccel']`` holds device and versions.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import json
import math
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def benchmark_entry(result: Any, state: Any) -> dict[str, Any]:
    """One result as a ``benchmarks[]`` entry of pytest-benchmark's format, our fields in ``extra_info``."""
    test_id = result.test_id
    return {
        "group": "diffaccel",
        "name": test_id.split("::")[-1],
        "fullname": test_id,
        "params": {"diffaccel_technique": result.technique},
        "param": result.technique,
        "extra_info": _extra_info(result),
        "options": _options(result, state.settings),
        "stats": _stats(result.samples),
    }


def _stats(samples: list[float]) -> dict[str, Any]:
    """pytest-benchmark's own statistics of the timed samples, one pipeline call per round."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for sample in samples:
        stats.update(sample)
    stats_dict = stats.as_dict()
    stats_dict["iterations"] = 1
    stats_dict["data"] = list(samples)
    return stats_dict


def _options(result: Any, settings: Any) -> dict[str, Any]:
    return {
        "disable_gc": True,
        "timer": result.timer,
        "min_rounds": settings.rounds,
        "max_time": settings.max_time,
        "min_time": 0,
        "warmup": len(result.warmup),
    }


def _extra_info(result: Any) -> dict[str, Any]:
    """Our fields: technique, fidelity, speed-up, memory, the run's figures, the baseline comparison, verdict."""
    return {
        "technique": result.technique,
        "model": result.model,
        "random_weights": result.random_weights,
        "device": result.device,
        "ssim": result.ssim,
        "psnr": result.psnr,
        "min_ssim": result.min_ssim,
        "speedup": result.speedup,
        "reference_median": result.reference_median,
        "peak_memory": result.peak_memory,
        "memory_kind": result.memory_kind,
        "syncs_per_step": result.syncs_per_step,
        "compile_seconds": result.compile_seconds,
        "cold_start_seconds": result.cold_start_seconds,
        "load_seconds": result.load_seconds,
        "apply_seconds": result.apply_seconds,
        "compile_cache": result.compile_cache,
        "blocks": list(result.blocks),
        "effect": result.effect_line,
        "effects": list(result.effects),
        "wall_seconds": result.wall_seconds,
        "warmup": list(result.warmup),
        "stop_reason": result.stop_reason,
        "breakdown": result.breakdown,
        "graph_breaks": result.graph_breaks,
        "relative_samples": list(result.relative_samples),
        "relative_kind": result.relative_kind,
        "compare_mode": result.compare_mode,
        "baseline": _baseline(result),
        "verdict": result.headline,
        "gates": [
            {"gate": g.name, "passed": g.passed, "judged": g.judged, "message": g.message}
            for g in (result.verdict.gates if result.verdict else ())
        ],
        "notes": list(result.notes),
        "call": result.call,
    }


def _baseline(result: Any) -> dict[str, Any]:
    """The comparison with the test's history: the latency judgement (None when there was none), the history."""
    latency = result.verdict.latency if result.verdict else None
    return {
        "note": result.baseline_note,
        "judged_on": result.figure,
        "ratio": latency.ratio if latency else None,
        "ci95": [latency.low, latency.high] if latency else None,
        "p_value": latency.p_value if latency else None,
        "blocks": list(latency.blocks) if latency else None,
        "history_runs": latency.history_runs if latency else 0,
        "history": list(result.history),
        "series": list(result.series),
        "spread": latency.spread.as_dict() if latency else None,
        "detectable": latency.detectable if latency else None,
        "reason": latency.reason if latency else None,
        "max_slowdown": latency.max_slowdown if latency else None,
        "regression": latency.regression if latency else False,
        "undecided": latency.undecided if latency else False,
        "deciding_runs": latency.deciding_runs if latency else None,
        "stack_changes": list(result.stack_changes),
    }


@functools.lru_cache(maxsize=1)
def _machine_and_commit() -> tuple[dict[str, Any], dict[str, Any]]:
    """pytest-benchmark's own machine and commit info (computed once: cpuinfo is slow)."""
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_commit_info

    return pytest_benchmark_generate_machine_info(), get_commit_info()


def render_json(state: Any) -> dict[str, Any]:
    import pytest_benchmark

    from . import environment

    machine_info, commit_info = _machine_and_commit()
    machine = copy.deepcopy(machine_info)
    machine["diffaccel"] = {
        "device": state.device,
        "gpu": state.gpu_name(),
        "machine_key": state.machine,
        "model": state.info.label,
        "versions": state.versions(),
        "environment": environment.as_dict(state),
    }
    measured = [r for r in state.results if r.measured]
    return _clean(
        {
            "machine_info": machine,
            "commit_info": commit_info,
            "benchmarks": [benchmark_entry(r, state) for r in measured],
            "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "version": pytest_benchmark.__version__,
            "diffaccel": {
                "settings": state.settings.describe(),
                "search": state.search.as_dict() if getattr(state, "search", None) is not None else None,
                "skipped": [
                    {"test": r.test_id, "technique": r.technique, "reason": r.reason}
                    for r in state.results
                    if r.outcome == "skipped"
                ],
                "failed": [
                    {"test": r.test_id, "technique": r.technique, "reason": r.reason}
                    for r in state.results
                    if r.outcome == "failed" and not r.measured
                ],
            },
        }
    )


def write_json(state: Any, path: Path) -> Path:
    from ..atomic import write_atomic

    path = Path(path)
    write_atomic(path, json.dumps(render_json(state), indent=2, sort_keys=False) + "\n")
    return path
