"""The pictures of a base-vs-head job: the runs' thumbnails against each other (SSIM, scikit-image)."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Sequence
from typing import Any

from .figures import RunFigures


def decoded(thumbnail: str | None, count: int) -> Any:
    """A run's thumbnail (base64 PNG strip) as (count, h, w, 3) floats, None without one."""
    if not thumbnail:
        return None
    from ..thumbnails import decode

    return decode(base64.b64decode(thumbnail), count)


def _pictures(run: RunFigures) -> Any:
    return decoded(run.thumbnail, run.thumbnail_count)


def _ssim(a: Any, b: Any) -> float | None:
    from ..fidelity import compare

    if a.shape != b.shape:
        return None
    return compare(a, b).ssim


def between(runs: Sequence[RunFigures]) -> list[float]:
    """The SSIM of every two of these runs' pictures (the worst picture of each two)."""
    pictures = [_pictures(r) for r in runs]
    scores = [_ssim(a, b) for a, b in itertools.combinations(pictures, 2)]
    return [s for s in scores if s is not None]


def worst_against(head: Sequence[RunFigures], base: Sequence[RunFigures]) -> float | None:
    """The worst SSIM of a head run's pictures against a base run's (same seed: the first of the call)."""
    base_pictures = [_pictures(r) for r in base]
    scores = [_ssim(_pictures(h), b) for h in head for b in base_pictures]
    found = [s for s in scores if s is not None]
    return min(found) if found else None
