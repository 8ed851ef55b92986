"""The search's front plot: latency (x) vs SSIM (y) of every candidate measured, as a PNG data URI.

Passing candidates in blue, failing ones as red crosses (an image that broke sits at SSIM 0), the
latency-vs-SSIM Pareto front of the passing ones drawn as a staircase, the chosen recipe starred
and labelled. Each candidate's last measurement is plotted. matplotlib with the Agg backend.
"""

from __future__ import annotations

import base64
import io
from typing import Any

PASS_COLOUR = "#2e86c1"
FAIL_COLOUR = "#c0392b"
CHOSEN_COLOUR = "#f39c12"


def _x_label(trials: list[Any]) -> str:
    relative = any(t.measurement.ratios or t.measurement.speedup for t in trials)
    return "latency, fraction of fp32's (lower is faster)" if relative else "latency, seconds per call"


def _points(trials: list[Any], passed: bool) -> tuple[list[float], list[float]]:
    chosen = [t for t in trials if t.measurement.passed == passed and t.measurement.score is not None]
    xs = [float(t.measurement.score) for t in chosen]
    ys = [float(t.measurement.ssim) if t.measurement.ssim is not None else 0.0 for t in chosen]
    return xs, ys


def _staircase(front: list[Any]) -> tuple[list[float], list[float]]:
    """The front as steps: fastest first, each step up to the next candidate's (higher) SSIM."""
    xs: list[float] = []
    ys: list[float] = []
    for trial in front:
        x, y = float(trial.measurement.score), float(trial.measurement.ssim or 0.0)
        if xs:
            xs.append(x)
            ys.append(ys[-1])
        xs.append(x)
        ys.append(y)
    return xs, ys


def _uri(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def front_plot(result: Any) -> str:
    """The plot of a SearchResult (search/result.py) as a ``data:image/png;base64,...`` URI."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .series import plain

    trials = list(result.latest().values())
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    xs, ys = _points(trials, passed=True)
    axis.scatter(xs, ys, s=28, color=PASS_COLOUR, label="passed every gate", zorder=3)
    xs, ys = _points(trials, passed=False)
    if xs:
        axis.scatter(xs, ys, s=32, color=FAIL_COLOUR, marker="x", label="failed a gate", zorder=3)
    front = result.front()
    if front:
        sx, sy = _staircase(front)
        axis.plot(sx, sy, color=PASS_COLOUR, linewidth=1.0, alpha=0.7, label="front (latency vs SSIM)")
        for trial in front:
            if trial.spec == result.chosen:
                continue  # labelled below
            axis.annotate(
                plain(trial.spec),
                (trial.measurement.score, trial.measurement.ssim or 0.0),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
                color="#555555",
            )
    chosen = result.chosen_trial
    if chosen is not None and chosen.measurement.score is not None:
        point = (chosen.measurement.score, chosen.measurement.ssim or 0.0)
        axis.scatter(*point, s=160, marker="*", color=CHOSEN_COLOUR, edgecolor="black", zorder=4, label="chosen")
        axis.annotate(
            plain(f"chosen: {chosen.spec}"), point, textcoords="offset points", xytext=(6, 6), fontsize=8, weight="bold"
        )
    if not trials:
        axis.text(0.5, 0.5, "no candidate was measured", ha="center", va="center", transform=axis.transAxes)
    axis.set_xlabel(_x_label(trials))
    axis.set_ylabel("SSIM vs the fp32 reference")
    axis.grid(alpha=0.3)
    if trials:
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _uri(figure)
