"""The result of one technique's test: what the table, the reports and the baselines are made of."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import stats
from .units import fmt_bytes, fmt_seconds
from .verdict import PICTURE_GATES, Verdict


@dataclass
class Result:
    """Returned by ``diffaccel_benchmark(pipe)``; the verdict fails the test at its end."""

    test_id: str
    technique: str
    outcome: str = "passed"  # passed, failed, skipped, error
    reason: str = ""  # skip reason or failure in one line
    samples: list[float] = field(default_factory=list)
    warmup: list[float] = field(default_factory=list)
    compile_seconds: float | None = None
    stop_reason: str = ""
    timer: str = ""
    peak_memory: int | None = None
    memory_kind: str = ""
    syncs_per_step: float | None = None
    ssim: float | None = None
    psnr: float | None = None
    min_ssim: float | None = None
    speedup: float | None = None
    reference_median: float | None = None
    baseline_note: str = "no baseline"
    verdict: Verdict | None = None
    notes: list[str] = field(default_factory=list)
    call: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    weights: str | None = None  # which weights (models.identity): a history on other weights is not compared
    random_weights: bool = False
    device: str = ""
    images: Any = None  # numpy NHWC, not serialized
    reference_images: Any = None
    relative_samples: list[float] = field(default_factory=list)  # latency over the fp32 reference's
    relative_kind: str = ""  # "paired" (interleaved) or "over the reference median"
    compare_mode: str = "absolute"
    breakdown: dict[str, float] = field(default_factory=dict)  # median seconds per component
    breakdown_relative: dict[str, float] = field(default_factory=dict)  # over the fp32 reference's components
    # each component on the footing the latency gate judges: in relative mode its seconds over the interleaved
    # fp32's call (block 1's ratio times the component's share of the call), in absolute mode its seconds
    components: dict[str, float] = field(default_factory=dict)
    graph_breaks: int | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)  # one summary per block (blocks.Block.summary)
    figure: str = "ratio"  # what the latency gate compares: "ratio" (to fp32) or "median" (seconds)
    load_seconds: float | None = None  # the model's load in this run
    apply_seconds: float | None = None  # a fresh pipeline with the technique applied
    cold_start_seconds: float | None = None  # load + apply + the first call
    compile_cache: str = ""  # "warm" or "cold": torch.compile's cache at the start of the run
    fidelity_seeds: list[int] = field(default_factory=list)  # the seeds fidelity was judged on
    per_seed_ssim: list[float] = field(default_factory=list)  # the lowest SSIM of each seed's batch
    thumbnail: str | None = None  # base64 PNG of the first seed's images, reduced (thumbnails.py)
    reference_thumbnail: str | None = None
    effects: list[dict[str, Any]] = field(default_factory=list)  # per part: applied, checked, line
    wall_seconds: float | None = None  # the whole diffaccel_benchmark call: every block, fidelity, checks
    recipe: bool = False  # chosen by --diffaccel-search: saved marked, so the plain matrix gates it
    history: list[float] = field(default_factory=list)  # the baseline history's runs (newest level), same figure
    series: list[dict[str, Any]] = field(default_factory=list)  # every kept run, oldest first (series_of)
    stack_changes: list[str] = field(default_factory=list)  # software changes since the history ("torch a -> b")
    recorded: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    @property
    def measured(self) -> bool:
        return bool(self.samples)

    @property
    def median(self) -> float | None:
        return stats.median(self.samples) if self.samples else None

    @property
    def iqr(self) -> float | None:
        return stats.iqr(self.samples) if self.samples else None

    @property
    def headline(self) -> str:
        if self.outcome == "skipped":
            return "skipped"
        if self.outcome in ("error",) or (self.outcome == "failed" and self.verdict is None):
            return "ERROR" if self.outcome == "error" else "FAIL"
        return self.verdict.headline if self.verdict else self.outcome

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "error") or bool(self.verdict and self.verdict.failed)

    @property
    def fidelity_ok(self) -> bool:
        """Broken-image, fidelity (vs the reference and its own baseline), caption and measurement gates passed:
        the only results that may become a baseline."""
        if self.verdict is None or not self.measured:
            return False
        return all(g.passed for g in self.verdict.gates if g.name in PICTURE_GATES)

    def failure_message(self) -> str:
        lines = [f"diffaccel verdict for {self.technique}: {self.headline}"]
        if self.verdict:
            lines += [f"  {g.name} gate failed: {g.message}" for g in self.verdict.failures]
        context = []
        if self.median is not None:
            context.append(f"median {fmt_seconds(self.median)} over {len(self.samples)} rounds")
        if self.speedup is not None:
            context.append(f"{self.speedup:.2f}x vs fp32")
        if self.ssim is not None:
            context.append(f"SSIM {self.ssim:.4f}")
        if self.peak_memory is not None:
            context.append(f"peak {fmt_bytes(self.peak_memory)}")
        if context:
            lines.append("  (" + ", ".join(context) + ")")
        return "\n".join(lines)

    @property
    def effect_line(self) -> str:
        """One line: what the effect checks saw ("effect not checked" when none was declared)."""
        from .techniques import Effect
        from .techniques.effects import summary

        return summary([(e["part"], Effect(e["applied"], e["line"], e["checked"])) for e in self.effects])

    @property
    def changed_level(self) -> bool:
        """Saving this run accepts a change: its latency was judged a regression or significantly faster."""
        latency = self.verdict.latency if self.verdict else None
        return bool(latency and (latency.regression or latency.improvement))

    def clean_blocks(self) -> list[dict[str, Any]]:
        return [b for b in self.blocks if not b.get("drift")]

    def drift_text(self) -> str:
        return "; ".join(f"block {i}: {b['drift']}" for i, b in enumerate(self.blocks, 1) if b.get("drift"))

    def run_record(self, versions: dict[str, str | None]) -> dict[str, Any] | None:
        """This run as one record of the test's history; None when every block's rounds drifted."""
        assert self.samples, "only measured results become baselines"
        blocks = self.clean_blocks() if self.blocks else [{"ratio": None, "median": self.median}]
        if not blocks:
            return None
        record: dict[str, Any] = {
            "recorded": self.recorded,
            "median": round(stats.geometric_mean([b["median"] for b in blocks]), 6),
            "blocks": len(self.blocks) or 1,
            "relative_kind": self.relative_kind,
            "compile_seconds": None if self.compile_seconds is None else round(self.compile_seconds, 4),
            "cold_start_seconds": None if self.cold_start_seconds is None else round(self.cold_start_seconds, 4),
            "compile_cache": self.compile_cache,
            "versions": versions,
        }
        ratios = [b["ratio"] for b in blocks if b.get("ratio")]
        if ratios and self.relative_kind:
            record["ratio"] = round(stats.geometric_mean(ratios), 6)
        if self.components:  # per run, as the ratios are: a later run's breakdown is judged against them
            record["components"] = {k: round(v, 6) for k, v in self.components.items()}
        if self.thumbnail:  # its picture's name (a content hash): runs that gave the same picture name the same
            from .thumbnails import name_of

            record["picture"] = name_of(_decoded(self.thumbnail))
        return record

    def baseline_fields(self, versions: dict[str, str | None]) -> dict[str, Any]:
        """The newest run's details, kept beside the history for the reports and the memory gate."""
        fields = self.baseline_entry(versions)
        fields["breakdown_relative"] = {k: round(v, 6) for k, v in self.breakdown_relative.items()}
        if self.recipe:
            fields["recipe"] = True
        if self.ssim is not None and self.thumbnail and self.reference_thumbnail:
            from .thumbnails import name_of

            fields["fidelity"] = {
                "ssim": round(self.ssim, 5),
                "psnr": None if self.psnr is None or self.psnr == float("inf") else round(self.psnr, 3),
                "per_seed": [round(v, 5) for v in self.per_seed_ssim],
                "seeds": self.fidelity_seeds,
                "images": name_of(_decoded(self.thumbnail)),
                "reference": name_of(_decoded(self.reference_thumbnail)),
                "versions": versions,
                "device": self.device,
            }
        return fields

    def thumbnail_files(self) -> dict[str, bytes]:
        """The thumbnail files its baseline entry names, by name."""
        from .thumbnails import name_of

        files = {}
        for encoded in (self.thumbnail, self.reference_thumbnail):
            if encoded:
                data = _decoded(encoded)
                files[name_of(data)] = data
        return files

    def baseline_entry(self, versions: dict[str, str | None]) -> dict[str, Any]:
        assert self.samples, "only measured results become baselines"
        return {
            "technique": self.technique,
            "samples": [round(s, 6) for s in self.samples],
            "median": round(stats.median(self.samples), 6),
            "iqr": round(stats.iqr(self.samples), 6),
            "rounds": len(self.samples),
            "peak_memory": self.peak_memory,
            "memory_kind": self.memory_kind,
            "ssim": None if self.ssim is None else round(self.ssim, 5),
            "speedup": None if self.speedup is None else round(self.speedup, 4),
            "relative_samples": [round(r, 6) for r in self.relative_samples],
            "relative_kind": self.relative_kind,
            "breakdown": {k: round(v, 6) for k, v in self.breakdown.items()},
            "reference_median": None if self.reference_median is None else round(self.reference_median, 6),
            "call": self.call,
            "model": self.model,
            "weights": self.weights,
            "versions": versions,
            "recorded": self.recorded,
        }


def series_of(records: Sequence[Mapping[str, Any]], figure: str) -> list[dict[str, Any]]:
    """A history's runs as the series its chart draws, oldest first: the judged figure's value, the level
    and the recorded time of each run that holds the figure (what history.levels reads, in order)."""
    from .history import value

    series = []
    for record in records:
        v = value(record, figure)
        if v is not None:
            series.append({"value": v, "level": int(record.get("level", 0)), "recorded": record.get("recorded")})
    return series


def _decoded(encoded: str) -> bytes:
    import base64

    return base64.b64decode(encoded)


# ----------------------------------------------------------------------------- transport (pytest-xdist)


def _encode_images(images: Any) -> list[str] | None:
    """float NHWC in [0, 1] -> PNG (base64) per image: exact to 8 bits, small, JSON-able."""
    if images is None:
        return None
    import base64
    import io

    import numpy as np
    from PIL import Image

    from .images import to_uint8

    encoded = []
    for image in np.asarray(images):
        buffer = io.BytesIO()
        Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


def _decode_images(encoded: list[str] | None) -> Any:
    if encoded is None:
        return None
    import base64
    import io

    import numpy as np
    from PIL import Image

    arrays = [np.asarray(Image.open(io.BytesIO(base64.b64decode(item))), dtype=np.float32) / 255.0 for item in encoded]
    return np.stack(arrays)


def to_payload(result: Result) -> dict[str, Any]:
    """A JSON-able copy of a result, for a pytest-xdist worker to send to the controller."""
    import dataclasses

    data = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    data["images"] = _encode_images(result.images)
    data["reference_images"] = _encode_images(result.reference_images)
    data["verdict"] = dataclasses.asdict(result.verdict) if result.verdict else None
    return data


def _judgement(data: dict[str, Any] | None) -> Any:
    from .history import Spread
    from .latency import Judgement

    if not data:
        return None
    values = dict(data)
    values["spread"] = Spread(**values["spread"])
    values["blocks"] = tuple(values["blocks"])
    values["drifted"] = tuple(values.get("drifted", ()))
    return Judgement(**values)


def from_payload(data: dict[str, Any]) -> Result:
    from .verdict import Gate, Verdict

    values = dict(data)
    verdict = values.pop("verdict")
    values["images"] = _decode_images(values.get("images"))
    values["reference_images"] = _decode_images(values.get("reference_images"))
    result = Result(**values)
    if verdict is not None:
        result.verdict = Verdict(
            gates=tuple(Gate(**g) for g in verdict["gates"]),
            latency=_judgement(verdict.get("latency")),
            notes=tuple(verdict.get("notes", ())),
            reported=tuple(verdict.get("reported", ())),
        )
    return result
