"""The summary table, as rows of strings: shared by the terminal and the Markdown report. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..units import fmt_bytes, fmt_seconds, fmt_speedup

COLUMNS = ("technique", "median", "speed-up vs fp32", "vs baseline", "SSIM", "peak memory", "verdict")


def baseline_cell(result: Any) -> str:
    """'1.03x slower, 10 runs, catches >=1.16x', '1.21x slower, 2 blocks, 10 runs, ...', 'unchanged, 1 run, catches
    >=1.26x': vs the run history, and the smallest slowdown the gate can fail at the history's spread."""
    if result.verdict is not None and result.verdict.latency is not None:
        lat = result.verdict.latency
        runs = f"{lat.history_runs} run{'s' if lat.history_runs != 1 else ''}, catches >={lat.detectable:.2f}x"
        blocks = f", {len(lat.blocks)} blocks" if len(lat.blocks) > 1 else ""
        if abs(lat.ratio - 1.0) < 0.005:
            return f"unchanged{blocks}, {runs}"
        direction = "slower" if lat.ratio >= 1 else "faster"
        ratio = lat.ratio if lat.ratio >= 1 else 1 / lat.ratio
        return f"{ratio:.2f}x {direction}{blocks}, {runs}"
    if not result.measured:
        return "-"
    return "no baseline" if result.baseline_note.startswith("no baseline") else "not compared"


def row(result: Any) -> tuple[str, ...]:
    if not result.measured:
        return (result.technique, "-", "-", "-", "-", "-", result.headline)
    ssim = "-" if result.ssim is None else f"{result.ssim:.4f}"
    return (
        result.technique,
        fmt_seconds(result.median),
        fmt_speedup(result.speedup),
        baseline_cell(result),
        ssim,
        fmt_bytes(result.peak_memory),
        result.headline,
    )


def rows(results: Sequence[Any]) -> list[tuple[str, ...]]:
    return [row(r) for r in results]


def widths(table: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(str(r[i])) for r in table) for i in range(len(COLUMNS))]


def plain_lines(results: Sequence[Any]) -> list[str]:
    """Aligned text lines: header, rule, one line per result."""
    table = [COLUMNS, *rows(results)]
    sizes = widths(table)
    lines = []
    for index, cells in enumerate(table):
        lines.append(
            "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w) if i < 6 else str(c)
                for i, (c, w) in enumerate(zip(cells, sizes, strict=True))
            ).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in sizes))
    return lines
