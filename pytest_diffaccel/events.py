"""Many tests moving together are one event, not many regressions. Pure, no torch.

When a large share of the judged tests of one run fail or move beyond max-slowdown in the same
direction, the likely cause is the machine or the stack (another CPU under the same name, a busy
neighbour, a library upgrade), not every technique at once. Perfherder groups such alerts into one
summary; the summary here does the same, first, before the per-test lines. Every test keeps its
own verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_TESTS = 3  # fewer moving tests are never called an event
MIN_SHARE = 0.25  # of the judged tests


@dataclass(frozen=True)
class Movement:
    """What one judged test did in this run."""

    technique: str
    ratio: float | None  # latency estimate over its history's mean (None: latency not judged)
    beyond: float  # max-slowdown of its gate (the ratio counts as moved beyond 1 + beyond)
    picture_moved: bool = False  # its fidelity regression gate failed
    reference: bool = False  # fp32 itself, judged in seconds


def moved(m: Movement) -> str | None:
    """'slower', 'faster', 'picture' or None."""
    if m.ratio is not None and m.ratio > 0:
        if math.log(m.ratio) > math.log1p(m.beyond):
            return "slower"
        if math.log(m.ratio) < -math.log1p(m.beyond):
            return "faster"
    return "picture" if m.picture_moved else None


def together(movements: Sequence[Movement], stack_changes: Sequence[str] = ()) -> str | None:
    """One line when many judged tests moved in one run, else None:
    '5 of 17 tests moved together (3 slower, 2 pictures moved); fp32 itself 1.31x slower: look at the
    machine or the stack before the techniques'."""
    judged = [m for m in movements if m.ratio is not None or m.picture_moved]
    kinds = [(m, moved(m)) for m in judged]
    moving = [(m, k) for m, k in kinds if k is not None]
    if len(moving) < MIN_TESTS or len(moving) < MIN_SHARE * len(judged):
        return None
    counts = {k: sum(1 for _, kind in moving if kind == k) for k in ("slower", "faster", "picture")}
    parts = [f"{counts['slower']} slower"] if counts["slower"] else []
    if counts["faster"]:
        parts.append(f"{counts['faster']} faster")
    if counts["picture"]:
        parts.append(f"{counts['picture']} picture{'s' if counts['picture'] > 1 else ''} moved")
    line = f"{len(moving)} of {len(judged)} tests moved together ({', '.join(parts)})"
    fp32 = next((m for m in judged if m.reference and m.ratio is not None), None)
    if fp32 is not None and fp32.ratio is not None:
        size = fp32.ratio if fp32.ratio >= 1 else 1.0 / fp32.ratio
        line += f"; fp32 itself {size:.2f}x {'slower' if fp32.ratio >= 1 else 'faster'} in seconds"
    if stack_changes:
        line += f"; the stack changed: {', '.join(stack_changes)}"
    return line + ": look at the machine or the stack before the techniques"
