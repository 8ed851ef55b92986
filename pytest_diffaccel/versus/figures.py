"""One run's figures of one test, as an arm's process reported them. Pure: no torch.

An arm's process writes each test's result as the payload pytest-xdist workers send
(``results.to_payload``); this module reads the few figures a base-vs-head decision needs, on the
footing the history gate judges them on: the run's estimate is the geometric mean of its clean
blocks (all its blocks when every one drifted), the ratio to the interleaved fp32 and the median in
seconds. The components of the call are put on the same footing as the figure: in relative mode a
component's seconds over the interleaved fp32's call (the run's ratio times the component's share of
the technique's call), so that head over base of a component compares like with like.

Each figure also carries how precisely the run's own rounds fixed it (``ratio_error``, ``median_error``:
the standard error of its log, ``stats.median_log_error``): a technique whose rounds scatter (fp16
emulated on a CPU without it) gives pairs that scatter more, and the judge expects that of it
(judge.pair_prior) instead of holding it to the typical test's spread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import stats
from ..breakdown import COMPONENTS
from ..verdict import PICTURE_GATES


@dataclass(frozen=True)
class RunFigures:
    test_id: str
    technique: str
    outcome: str  # passed, failed, skipped, error (the arm's own verdict: picture gates only, no history)
    reason: str = ""
    figure: str = "ratio"  # what the latency gate judges first: "ratio", or "median" for fp32 itself
    ratio: float | None = None
    median: float | None = None
    compile_seconds: float | None = None
    cold_start_seconds: float | None = None
    peak_memory: int | None = None
    memory_kind: str = ""
    speedup: float | None = None
    ssim: float | None = None
    components: Mapping[str, float] = field(default_factory=dict)
    picture_failures: tuple[tuple[str, str], ...] = ()  # (gate, message) of the picture gates that failed
    thumbnail: str | None = None  # base64 PNG of the first seed's pictures (thumbnails.py)
    thumbnail_count: int = 1  # the pictures side by side in it
    payload: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    ratio_error: float | None = None  # standard error of log(ratio) from the run's rounds
    median_error: float | None = None  # standard error of log(median) from the run's rounds

    @property
    def measured(self) -> bool:
        return self.median is not None

    def value(self, figure: str) -> float | None:
        return {
            "ratio": self.ratio,
            "median": self.median,
            "compile_seconds": self.compile_seconds,
            "cold_start_seconds": self.cold_start_seconds,
        }[figure]

    def error(self, figure: str) -> float | None:
        """The standard error of log(figure) from the run's own rounds; None for a one-off figure (compile
        time, cold start) or too few rounds."""
        return {"ratio": self.ratio_error, "median": self.median_error}.get(figure)


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value > 0 and math.isfinite(value) else None


def from_payload(data: Mapping[str, Any]) -> RunFigures:
    """The figures of one result payload (``results.to_payload``) of an arm's run."""
    blocks = [b for b in data.get("blocks") or [] if isinstance(b, Mapping)]
    clean = [b for b in blocks if not b.get("drift")] or blocks
    medians = [m for m in (_positive(b.get("median")) for b in clean) if m is not None]
    ratios = [r for r in (_positive(b.get("ratio")) for b in clean) if r is not None]
    samples = [s for s in (_positive(v) for v in data.get("samples") or []) if s is not None]
    relative = [s for s in (_positive(v) for v in data.get("relative_samples") or []) if s is not None]
    median = stats.geometric_mean(medians) if medians else (stats.median(samples) if samples else None)
    ratio = stats.geometric_mean(ratios) if ratios and data.get("relative_kind") else None
    figure = "ratio" if ratio is not None and data.get("compare_mode") == "relative" else "median"
    verdict = data.get("verdict") or {}
    failures = tuple(
        (str(g.get("name")), str(g.get("message", "")))
        for g in verdict.get("gates", [])
        if isinstance(g, Mapping) and not g.get("passed", True) and g.get("name") in PICTURE_GATES
    )
    return RunFigures(
        test_id=str(data.get("test_id", "")),
        technique=str(data.get("technique", "")),
        outcome=str(data.get("outcome", "")),
        reason=str(data.get("reason", "")),
        figure=figure,
        ratio=ratio,
        median=median,
        compile_seconds=_positive(data.get("compile_seconds")),
        cold_start_seconds=_positive(data.get("cold_start_seconds")),
        peak_memory=int(data["peak_memory"]) if _positive(data.get("peak_memory")) else None,
        memory_kind=str(data.get("memory_kind") or ""),
        speedup=_positive(data.get("speedup")),
        ssim=data.get("ssim") if isinstance(data.get("ssim"), (int, float)) else None,
        components=components(data, figure, ratio, median),
        picture_failures=failures,
        thumbnail=data.get("thumbnail") if isinstance(data.get("thumbnail"), str) else None,
        thumbnail_count=int(data["thumbnail_count"]) if _positive(data.get("thumbnail_count")) else 1,
        payload=data,
        ratio_error=stats.median_log_error(relative) if ratio is not None else None,
        median_error=stats.median_log_error(samples),
    )


def components(data: Mapping[str, Any], figure: str, ratio: float | None, median: float | None) -> dict[str, float]:
    """The call's components on the figure's footing: seconds, or (relative mode) each component's seconds
    over the interleaved fp32's call: the run's ratio times the component's share of this call's median.
    The run computed them itself (Result.components); an older plugin's run did not: computed here."""
    kept = data.get("components")
    if isinstance(kept, Mapping) and kept:
        return {c: v for c in COMPONENTS if (v := _positive(kept.get(c))) is not None}
    breakdown = data.get("breakdown") or {}
    seconds = {c: v for c in COMPONENTS if (v := _positive(breakdown.get(c))) is not None}
    if figure != "ratio" or ratio is None or median is None:
        return seconds
    return {c: ratio * v / median for c, v in seconds.items()}
