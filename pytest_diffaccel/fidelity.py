"""Fidelity: image sanity checks, then SSIM and PSNR against the fp32 reference.

Images are float arrays of shape (N, H, W, 3) in [0, 1]. SSIM is scikit-image's
``structural_similarity`` with the parameters of Wang et al. (2004): Gaussian weights with
sigma 1.5, population covariance, ``data_range=1.0``; over a batch the lowest image counts,
because one ruined image is a ruined result. No torch here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONSTANT_RANGE = 1.0 / 255.0  # an image whose pixels span less than one 8-bit level is constant


@dataclass(frozen=True)
class Fidelity:
    ssim: float  # lowest over the batch (and the seeds)
    psnr: float  # lowest over the batch (inf when identical)
    per_image_ssim: tuple[float, ...]
    per_seed: tuple[float, ...] = ()  # lowest of each seed's batch, in seed order


def worst(scores: list[Fidelity]) -> Fidelity:
    """Several seeds' fidelity as one: the lowest SSIM and PSNR over all of them."""
    return Fidelity(
        ssim=min(s.ssim for s in scores),
        psnr=min(s.psnr for s in scores),
        per_image_ssim=tuple(x for s in scores for x in s.per_image_ssim),
        per_seed=tuple(s.ssim for s in scores),
    )


def broken(images: Any) -> str | None:
    """Why these images are broken (none, NaN/Inf, or constant), or None when they are sound."""
    if images is None:
        return "no image was produced"
    array = np.asarray(images, dtype=np.float64)
    if array.size == 0:
        return "no image was produced"
    finite = np.isfinite(array)
    if not finite.all():
        nan = int(np.isnan(array).sum())
        inf = int(np.isinf(array).sum())
        return f"image has {nan} NaN and {inf} Inf values"
    for index, image in enumerate(array):
        low, high = float(image.min()), float(image.max())
        if high - low < CONSTANT_RANGE:
            return f"image {index} is constant (every pixel {low:.3f}): a black or blank image"
    return None


def _pairs(images: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    b = np.clip(np.asarray(reference, dtype=np.float64), 0.0, 1.0)
    if a.shape != b.shape:
        raise ValueError(f"image shape {a.shape} differs from the reference's {b.shape}; the calls differ")
    return a, b


def ssim_image(a: Any, b: Any, full: bool = False) -> Any:
    """SSIM of two HxWx3 images in [0, 1] (Wang et al. parameters); with ``full``, also the map."""
    from skimage.metrics import structural_similarity

    return structural_similarity(
        np.asarray(a, dtype=np.float64),
        np.asarray(b, dtype=np.float64),
        data_range=1.0,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=full,
    )


def psnr_image(a: Any, b: Any) -> float:
    """PSNR of two images in [0, 1]: scikit-image's, inf when they are identical."""
    from skimage.metrics import peak_signal_noise_ratio

    with np.errstate(divide="ignore"):  # identical images: 1 / 0 is the inf PSNR means
        return float(
            peak_signal_noise_ratio(np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64), data_range=1.0)
        )


def compare(images: Any, reference: Any) -> Fidelity:
    a, b = _pairs(images, reference)
    scores = tuple(float(ssim_image(x, y)) for x, y in zip(a, b, strict=True))
    psnrs = [psnr_image(x, y) for x, y in zip(a, b, strict=True)]
    return Fidelity(ssim=min(scores), psnr=min(psnrs), per_image_ssim=scores)


def over_seeds(seeded: Sequence[tuple[int, Any, Any]]) -> tuple[Fidelity | None, str | None]:
    """(seed, images, reference images) of each seed -> the worst fidelity over them, or None and why
    when any image is broken (one ruined image is a ruined result; the seed named when there are several)."""
    for seed, images, _ in seeded:
        why = broken(images)
        if why:
            return None, why if len(seeded) == 1 else f"seed {seed}: {why}"
    return worst([compare(images, reference) for _, images, reference in seeded]), None


def ssim_maps(images: Any, reference: Any) -> list[np.ndarray]:
    """Per-image SSIM maps (H, W), averaged over the colour channels, for the HTML report."""
    a, b = _pairs(images, reference)
    maps = []
    for x, y in zip(a, b, strict=True):
        _, full_map = ssim_image(x, y, full=True)
        maps.append(np.asarray(full_map).mean(axis=-1))
    return maps


# ----------------------------------------------------------------------------- fidelity vs its own baseline

TIGHT_TOLERANCE = 0.002  # same versions, same device: the CPU is deterministic, the gate can be tight
REFERENCE_DRIFT_FACTOR = 3.0  # a technique may move 3x as far as the fp32 reference itself moved
ASSUMED_TOLERANCE = 0.02  # another stack and no stored reference to measure its drift by
IDENTICAL_TOLERANCE = 1e-6  # 1 - SSIM of identical pictures is 0 up to float rounding (as versus.judge's)


@dataclass(frozen=True)
class Tolerance:
    value: float
    basis: str


def tolerance(reference_drift: float | None, same_stack: bool, identical_runs: int = 0) -> Tolerance:
    """How far a technique's fidelity may move from its baseline: measured, not guessed. The fp32
    reference's own drift between then and now (1 - SSIM of its images) is what the versions and the
    device changed; with none, the gate is tight. ``identical_runs``: the runs of the history on this
    stack that all gave the very picture stored (``identical_pictures``): two or more leave no room at
    all (a deterministic CPU stack), where 0.002 let a move to SSIM 0.9985 pass."""
    if same_stack and identical_runs >= 2 and (reference_drift is None or reference_drift <= IDENTICAL_TOLERANCE):
        basis = f"the history's {identical_runs} runs on this stack gave identical pictures"
        return Tolerance(IDENTICAL_TOLERANCE, basis)
    if reference_drift is not None:
        scaled = REFERENCE_DRIFT_FACTOR * reference_drift
        if scaled > TIGHT_TOLERANCE:
            return Tolerance(
                scaled, f"{REFERENCE_DRIFT_FACTOR:g}x the fp32 reference's own drift {reference_drift:.4f} since then"
            )
        return Tolerance(TIGHT_TOLERANCE, "the fp32 reference did not move")
    if same_stack:
        return Tolerance(TIGHT_TOLERANCE, "same versions and device")
    return Tolerance(ASSUMED_TOLERANCE, "other versions or device and no stored reference: assumed")


@dataclass(frozen=True)
class Regression:
    ssim_then: float | None  # SSIM vs the reference when the baseline was recorded (over the common seeds)
    ssim_now: float | None
    moved: float | None  # SSIM of this run's images vs the baseline's (thumbnails)
    tolerance: Tolerance
    changes: tuple[str, ...] = ()  # the software changes since the baseline ("torch 2.12.0 -> 2.13.0")
    unread: str = ""  # why the stored picture could not be compared ("thumbnails/ab12.png is missing"), if so

    @property
    def dropped(self) -> bool:
        return (
            self.ssim_then is not None
            and self.ssim_now is not None
            and self.ssim_then - self.ssim_now > self.tolerance.value
        )

    @property
    def image_moved(self) -> bool:
        return self.moved is not None and 1.0 - self.moved > self.tolerance.value

    @property
    def failed(self) -> bool:
        return self.dropped or self.image_moved

    def describe(self) -> str:
        parts = []
        if self.ssim_then is not None and self.ssim_now is not None:
            parts.append(f"SSIM {self.ssim_then:.4f} -> {self.ssim_now:.4f} vs its baseline")
        if self.moved is not None:
            parts.append(f"image vs its baseline image SSIM {self.moved:.4f}")
        elif self.unread:
            parts.append(f"image not compared: {self.unread}")
        stack = f"after {', '.join(self.changes)}: " if self.changes else ""
        return stack + "; ".join(parts) + f" (tolerance {self.tolerance.value:.3g}: {self.tolerance.basis})"


def common_worst(then: Sequence[float], now: Sequence[float]) -> tuple[float | None, float | None]:
    """The lowest SSIM of each over the seeds both measured (the first ``min(len)`` seeds)."""
    count = min(len(then), len(now))
    if count == 0:
        return None, None
    return min(then[:count]), min(now[:count])


def identical_pictures(runs: Sequence[Mapping[str, Any]], stored: str, versions: Mapping[str, Any]) -> int:
    """How many runs of the history's newest level, recorded on these versions, gave the stored picture
    itself (their ``picture`` names it); 0 when any such run gave another picture (the stack's pictures vary
    from run to run, as some GPU kernels' do: the measured tolerances apply)."""
    if not runs or not stored:
        return 0
    level = max(int(r.get("level", 0)) for r in runs)
    pictures = [r.get("picture") for r in runs if int(r.get("level", 0)) == level and r.get("versions") == versions]
    named = [p for p in pictures if p]
    if any(p != stored for p in named):
        return 0
    return len(named)
