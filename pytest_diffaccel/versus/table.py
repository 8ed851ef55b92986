"""The terminal's table of a base-vs-head job: base and head side by side. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import stats
from ..units import fmt_seconds

COLUMNS = ("technique", "base median", "head median", "head vs base (95% CI)", "pairs", "picture vs base", "verdict")


def _median(runs: Sequence[Any]) -> str:
    values = [r.median for r in runs if r is not None and r.median]
    return fmt_seconds(stats.median(values)) if values else "-"


def row(decision: Any, arms: tuple[Sequence[Any], Sequence[Any]], label: str) -> tuple[str, ...]:
    base, head = arms
    latency = decision.latency
    change = "-"
    if latency is not None:
        change = "unchanged" if abs(latency.ratio - 1.0) < 0.005 else latency.size()
        change += f" ({latency.low:.2f}-{latency.high:.2f})"
    picture = "-"
    if decision.picture is not None:
        picture = "changed" if decision.picture.changed else "same"
        picture += f" {decision.picture.ssim:.4f}"
    pairs = str(len(latency.pairs)) if latency is not None else "-"
    return (label, _median(base), _median(head), change, pairs, picture, decision.headline)


def lines(job: Any) -> list[str]:
    """Header, rule, one line per test; then the tests gone from the head."""
    table = [COLUMNS]
    decisions = sorted(job.decisions.items(), key=lambda kv: _order(job, kv[0]))
    functions = {test_id.split("::")[-1].split("[")[0] for test_id, _ in decisions}
    for test_id, decision in decisions:
        # the technique names the row; with several test functions, the test's own name does
        label = decision.technique if len(functions) == 1 else test_id.split("::")[-1]
        table.append(row(decision, job.arms_of(test_id), label))
    sizes = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    out = []
    for index, cells in enumerate(table):
        aligned = (c.rjust(s) if 0 < i < 5 else c.ljust(s) for i, (c, s) in enumerate(zip(cells, sizes, strict=True)))
        out.append("  ".join(aligned))
        if index == 0:
            out.append("  ".join("-" * s for s in sizes))
    return [line.rstrip() for line in out]


def _order(job: Any, test_id: str) -> int:
    """The order the head's session has its tests in."""
    order = getattr(job, "order", [])
    base = test_id.split("#")[0]
    return order.index(base) if base in order else len(order)
