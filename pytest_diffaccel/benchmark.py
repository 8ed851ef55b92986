"""``diffaccel_benchmark(pipe, **call_kwargs)``: measure, compare with the fp32 reference and the history, judge.

``Benchmark._run`` is the conductor: a short list of steps, each in its own room.
1. the fp32 reference of the call (once per session);
2. block 1: warm-up, timed rounds interleaved with a fresh fp32 reference (blocks.py);
3. fidelity vs the reference (fidelity.py), and the captions it still shows (captions.py);
4. the latency verdict against the test's run history, with confirmation blocks for a suspect
   technique (latency.py, measured by blocks.py), and the compile and cold-start figures;
5. the gates (verdict.py) and the Result.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import pytest

from . import breakdown, fidelity, history, latency, thumbnails, verdict
from .blocks import Block, BlockMaker
from .captions import CaptionCheck
from .config import Settings
from .measure import Call, Measurement, generate
from .results import Result, series_of
from .session import DiffaccelSession
from .techniques import Spec
from .verdict import MEMORY_SLACK

Seeded = tuple[int, Any, Any]  # (seed, the technique's images, the fp32 reference's images)

MAX_CLEAN_TRIES = 2  # extra blocks measured, when saving, to replace blocks whose rounds drifted


class Pictures(NamedTuple):
    """What the pictures say, for the fidelity-side gates: broken, fidelity, fidelity regression, caption."""

    scores: fidelity.Fidelity | None
    broken: str | None  # why the picture is broken (NaN, blank...), or None
    regression: fidelity.Regression | None
    captions: CaptionCheck | None


def contexts_of(applied: Any) -> list[Any]:
    return list(applied.call_contexts) if applied is not None else []


class Benchmark:
    """The ``diffaccel_benchmark`` fixture's value: call it with the pipeline under test."""

    def __init__(
        self,
        state: DiffaccelSession,
        item: pytest.Item,
        spec: Spec,
        settings: Settings,
        applied: Any = None,
        progress: Any = None,
        fixture_pipe: Any = None,
        apply_seconds: float | None = None,
        test_id: str | None = None,
    ) -> None:
        self.state = state
        self.item = item
        self.spec = spec
        self.settings = settings
        self.applied = applied  # the ApplyContext of diffaccel_pipeline, when used
        self.progress = progress
        self.fixture_pipe = fixture_pipe  # the pipeline diffaccel_pipeline made: confirmations re-apply
        self.apply_seconds = apply_seconds
        self.test_id = test_id or item.nodeid  # a search's recipe is measured under the id its test would have
        self.results: list[Result] = []

    def __call__(self, pipe: Any, **call_kwargs: Any) -> Result:
        from .callkey import UnstableArgument

        try:
            call = self.state.call_for(self.settings).with_extra(call_kwargs)
        except UnstableArgument as error:
            pytest.fail(str(error), pytrace=False)
        test_id = self.test_id if not self.results else f"{self.test_id}#{len(self.results) + 1}"
        started = time.perf_counter()
        try:
            result = self._run(pipe, call, test_id, call_kwargs)
            result.wall_seconds = time.perf_counter() - started
            return result
        finally:
            if self.progress is not None:
                self.progress.close()  # erase the live status before pytest writes the outcome

    # ------------------------------------------------------------------ the conductor

    def _run(self, pipe: Any, call: Call, test_id: str, call_kwargs: dict[str, Any]) -> Result:
        state, settings, spec = self.state, self.settings, self.spec
        reference = state.reference(call, settings, self.progress)
        maker = BlockMaker(state, spec, settings, call, reference, self.progress)
        reuse = spec.is_reference and not contexts_of(self.applied) and not call_kwargs
        first = maker.first(pipe, contexts_of(self.applied), reuse)
        seeds = self._seeds(pipe, call, first, reference, maker)
        scores, why_broken = fidelity.over_seeds(seeds)
        captioned = state.caption_check(call, seeds, spec) if why_broken is None else None
        effects = self._effects(pipe, call, maker)
        entry, note = state.baseline_for(test_id, call)
        regression = self._regression(entry, seeds, scores)
        figure = maker.figure
        blocks = [first]
        judgement, note = self._latency(blocks, entry, note, figure, maker, pipe, reuse)
        figures = self._figures(first, entry)
        changes = state.stack_changes(entry)  # the software changes since the history's newest run
        pictures = Pictures(scores, why_broken, regression, captioned)
        decision = self._decide(first, pictures, entry, note, judgement, figures, reference, effects, changes)
        result = self._result(test_id, call, first, blocks, figure, scores, reference, note, decision, reuse)
        result.stack_changes = changes
        _attach(result, seeds, scores, first, reference, effects, entry, figure)
        return result

    # ------------------------------------------------------------------ steps

    def _seeds(self, pipe: Any, call: Call, first: Block, reference: Any, maker: BlockMaker) -> list[Seeded]:
        """(seed, images, reference images) for each fidelity seed: the timed rounds' own images for the
        call's seed, untimed calls for the next ones (--diffaccel-fidelity-seeds)."""
        seeded = [(call.seed, first.measurement.images, reference.images)]
        extra = [call.seed + i for i in range(1, self.settings.fidelity_seeds)]
        if extra and first.measurement.images is not None:
            if self.progress is not None:
                self.progress(f"fidelity seeds ({len(extra) + 1})")
            references = self.state.reference_images(call, extra)
            for seed in extra:
                seeded.append((seed, generate(pipe, call, maker.contexts, seed=seed), references[seed]))
        return seeded

    def _effects(self, pipe: Any, call: Call, maker: BlockMaker) -> list[tuple[str, Any]]:
        """Did each part of the technique take effect on the pipeline that was timed (its effect check)?"""
        if self.applied is None:  # a pipeline the test made itself: nothing to check it against
            return []
        from .techniques.effects import Probe, check_effects

        if self.progress is not None:
            self.progress("checking the effect")
        probe = Probe(ctx=self.applied, run_call=lambda: generate(pipe, call, maker.contexts), device=self.state.device)
        return check_effects(self.spec, pipe, probe)

    def _regression(
        self, entry: dict[str, Any] | None, seeds: list[Seeded], scores: fidelity.Fidelity | None
    ) -> fidelity.Regression | None:
        """Fidelity vs the technique's own baseline: its SSIM then and now, and its picture then and now."""
        stored = (entry or {}).get("fidelity")
        if not stored or scores is None:
            return None
        state = self.state
        _, images, reference_images = seeds[0]
        count = len(images)
        store = state.store
        name = stored.get("images", "")
        then = store.thumbnail(name, count) if name else None
        moved, unread = None, ""
        if then is not None and then.shape == thumbnails.reduce(images).shape:
            moved = fidelity.compare(thumbnails.reduce(images) / 255.0, then).ssim
        elif name:  # the entry names a picture the store could not give: say so, never a silent pass
            unread = (
                f"its stored picture {name} could not be read from {store.location}"
                if then is None
                else f"its stored picture {name} holds {then.shape[0]} image(s) of another size"
            )
        drift = None
        reference_then = store.thumbnail(stored.get("reference", ""), count)
        if reference_then is not None and reference_then.shape == thumbnails.reduce(reference_images).shape:
            drift = 1.0 - fidelity.compare(thumbnails.reduce(reference_images) / 255.0, reference_then).ssim
        same = stored.get("versions") == state.versions() and stored.get("device") == state.device
        ssim_then, ssim_now = fidelity.common_worst(
            list(stored.get("per_seed") or [stored.get("ssim")]), scores.per_seed
        )
        from .fingerprint import software_changes

        changes = tuple(software_changes(stored.get("versions"), state.versions()))
        identical = fidelity.identical_pictures((entry or {}).get("runs") or [], name, state.versions())
        return fidelity.Regression(
            ssim_then, ssim_now, moved, fidelity.tolerance(drift, same, identical), changes, unread
        )

    def _latency(
        self,
        blocks: list[Block],
        entry: dict[str, Any] | None,
        note: str,
        figure: str,
        maker: BlockMaker,
        pipe: Any,
        reuse: bool,
    ) -> tuple[latency.Judgement | None, str]:
        """Judge block 1 against the history; measure confirmation blocks while the answer is 'another'."""
        settings = self.settings
        groups = history.levels(history.runs_of(entry), figure) if entry else []
        if entry and not groups:
            note = f"baseline holds no {history.FIGURE_NAMES[figure]} (recorded by an older version): re-save it"
        judgement = None
        if groups:
            current = groups[-1]
            spread = history.spread(groups, figure, self.state.machine_spread(figure))
            while True:
                judgement = latency.judge(
                    [math.log(b.estimate(figure)) for b in blocks],
                    current,
                    spread,
                    max_slowdown=settings.max_slowdown,
                    alpha=settings.alpha,
                    max_blocks=settings.max_blocks,
                    drifted=[b.drift is not None for b in blocks],
                )
                if judgement.state != "another":
                    break
                blocks.append(maker.another(pipe, self.fixture_pipe, reuse, len(blocks) + 1))
            judgement = _crept(judgement, current, spread.prior, settings)
        if settings.save:  # a run whose rounds drift is not a good baseline: measure again
            while all(b.drift is not None for b in blocks) and len(blocks) <= MAX_CLEAN_TRIES:
                blocks.append(maker.another(pipe, self.fixture_pipe, reuse, len(blocks) + 1))
        return judgement, note

    def _figures(self, first: Block, entry: dict[str, Any] | None) -> list[tuple[str, latency.Judgement]]:
        """Compile time and cold start of block 1, judged against the runs of the same compile-cache state."""
        if not entry:
            return []
        judged = []
        runs = history.runs_of(entry)
        where = {"compile_cache": self.state.compile_cache}
        values = {"compile_seconds": self._compile_seconds(first), "cold_start_seconds": self._cold_start(first)}
        for figure, now in values.items():
            groups = history.levels(runs, figure, where)
            if now is None or now <= 0 or not groups:
                continue
            spread = history.spread(groups, figure, self.state.machine_spread(figure, where))
            judged.append(
                (
                    history.FIGURE_NAMES[figure],
                    latency.judge(
                        [math.log(now)],
                        groups[-1],
                        spread,
                        max_slowdown=self.settings.max_compile_increase,
                        alpha=self.settings.alpha,
                        max_blocks=1,
                    ),
                )
            )
        return judged

    def _compile_seconds(self, first: Block) -> float | None:
        return first.measurement.compile_seconds if self.spec.compiles else None

    def _cold_start(self, first: Block) -> float | None:
        """Model load + fresh pipeline and technique + the first call: what a serving stack pays per deploy."""
        if not first.measurement.warmup or self.apply_seconds is None:
            return None
        return (self.state.load_seconds or 0.0) + self.apply_seconds + first.measurement.warmup[0]

    def _decide(
        self,
        first: Block,
        pictures: Pictures,
        entry: dict[str, Any] | None,
        note: str,
        judgement: latency.Judgement | None,
        figures: list[tuple[str, latency.Judgement]],
        reference: Any,
        effects: list[tuple[str, Any]],
        changes: list[str],
    ) -> verdict.Verdict:
        state, settings, spec, measurement = self.state, self.settings, self.spec, first.measurement
        baseline_peak = entry.get("peak_memory") if entry else None
        if entry and entry.get("memory_kind") not in (None, measurement.memory_kind):
            baseline_peak = None
        return verdict.decide(
            verdict.Inputs(
                broken=pictures.broken,
                ssim=pictures.scores.ssim if pictures.scores else None,
                psnr=pictures.scores.psnr if pictures.scores else None,
                min_ssim=self.state.min_ssim(self.spec, self.settings),
                regression=pictures.regression,
                captions=pictures.captions,
                effects=[(label, e.applied, e.checked, e.line) for label, e in effects],
                latency=judgement,
                figures=figures,
                max_slowdown=settings.max_slowdown,
                max_compile_increase=settings.max_compile_increase,
                peak_memory=measurement.peak_memory,
                baseline_peak_memory=baseline_peak,
                max_memory_increase=settings.max_memory_increase,
                memory_slack=MEMORY_SLACK.get(state.device, 0),
                speedup=first.speedup(reference),
                min_speedup=settings.min_speedup,
                baseline_note=note,
                failures=measurement.failures,
                compare_mode="absolute" if spec.is_reference else settings.compare,
                breakdown_note=self._moved(first, entry, reference) if judgement and judgement.regression else "",
                syncs_per_step=measurement.syncs_per_step,
                max_syncs=settings.max_syncs,
                report_only=settings.report_only,
                require_baseline=settings.require_baseline and not settings.save,
                record_command=state.record_command(),
                stack_changes=changes if judgement is not None else (),
                accept=settings.accept if settings.save == "all" else (),
            )
        )

    def _moved(self, first: Block, entry: dict[str, Any] | None, reference: Any) -> str:
        """Which component moved, on the same footing as the verdict: each run's components over its own
        interleaved fp32 in relative mode (as the ratio is; the machine's speed of the moment cancels), in
        seconds otherwise, against the newest level's runs. A history recorded before runs kept their
        components is compared with its newest run's breakdown as it was stored."""
        calls = first.measurement.breakdown
        shares = breakdown.shares_of(breakdown.medians(calls))
        noises = {c: breakdown.noise(calls, c) for c in breakdown.COMPONENTS}
        stored_runs = history.newest_components(history.runs_of(entry))
        if stored_runs:
            return breakdown.compare(self._footing(first), stored_runs, shares=shares, noises=noises)
        stored = (entry or {}).get("breakdown_relative" if self._relative_breakdown else "breakdown")
        if not stored:
            return ""
        return breakdown.compare(self._components(first, reference), stored, shares=shares, noises=noises)

    def _footing(self, first: Block) -> dict[str, float]:
        """Block 1's components on the latency gate's footing (Result.components)."""
        seconds = breakdown.medians(first.measurement.breakdown)
        if not self._relative_breakdown or not first.ratios:
            return {c: v for c, v in seconds.items() if c in breakdown.COMPONENTS}
        ratio, median = first.estimate("ratio"), first.measurement.median
        return {c: ratio * v / median for c, v in seconds.items() if c in breakdown.COMPONENTS and median > 0}

    @property
    def _relative_breakdown(self) -> bool:
        return self.settings.compare == "relative" and not self.spec.is_reference

    def _components(self, first: Block, reference: Any) -> dict[str, float]:
        components = breakdown.medians(first.measurement.breakdown)
        if not self._relative_breakdown:
            return components
        return breakdown.relative(components, breakdown.medians(reference.measurement.breakdown))

    def _result(
        self,
        test_id: str,
        call: Call,
        first: Block,
        blocks: list[Block],
        figure: str,
        scores: Any,
        reference: Any,
        note: str,
        decision: verdict.Verdict,
        reuse: bool,
    ) -> Result:
        state, spec, measurement = self.state, self.spec, first.measurement
        result = Result(
            test_id=test_id,
            technique=spec.name,
            outcome="failed" if decision.failed else "passed",
            samples=measurement.samples,
            warmup=measurement.warmup,
            compile_seconds=self._compile_seconds(first),
            stop_reason=measurement.stop_reason,
            timer=measurement.timer,
            peak_memory=measurement.peak_memory,
            memory_kind=measurement.memory_kind,
            syncs_per_step=measurement.syncs_per_step,
            ssim=scores.ssim if scores else None,
            psnr=scores.psnr if scores else None,
            min_ssim=self.state.min_ssim(self.spec, self.settings),
            speedup=first.speedup(reference),
            reference_median=reference.median,
            baseline_note=note,
            verdict=decision,
            notes=self._notes(measurement, blocks, figure, decision, reuse),
            call=call.describe(),
            model=state.info.name,
            weights=state.weights(),
            random_weights=state.info.random_weights,
            device=state.device,
            images=measurement.images,
            reference_images=reference.images,
            relative_samples=first.ratios,
            relative_kind=first.relative_kind,
            compare_mode=settings_mode(self.settings, spec),
            breakdown=breakdown.medians(measurement.breakdown),
            breakdown_relative=self._components(first, reference) if self._relative_breakdown else {},
            components=self._footing(first),
            graph_breaks=measurement.graph_breaks,
            blocks=[b.summary(figure) for b in blocks],
            figure=figure,
            load_seconds=state.load_seconds,
            apply_seconds=self.apply_seconds,
            cold_start_seconds=self._cold_start(first),
            compile_cache=state.compile_cache,
        )
        self.results.append(result)
        self.item.user_properties.extend(_user_properties(result))
        return result

    def _notes(
        self, measurement: Measurement, blocks: list[Block], figure: str, decision: verdict.Verdict, reuse: bool
    ) -> list[str]:
        """The result's notes: the technique's own, how it was measured, the verdict's, the model's caveat."""
        notes = list(self.applied.notes) if self.applied is not None else []
        if reuse:
            notes.append("fp32 is the reference: its block 1 is the reference's measurement, judged in seconds")
        if measurement.graph_breaks:
            notes.append(f"{measurement.graph_breaks} graph breaks (dynamo)")
        if len(blocks) > 1:
            notes.append(
                f"confirmed: {len(blocks)} blocks measured (" + ", ".join(b.describe(figure) for b in blocks) + ")"
            )
        notes += [f"block {i}: rounds drifted {b.drift.describe()}" for i, b in enumerate(blocks, 1) if b.drift]
        notes += list(decision.notes)
        if self.state.info.random_weights:
            notes.append("random weights: fidelity says little about real pictures")
        return notes


def _user_properties(result: Result) -> list[tuple[str, Any]]:
    """The figures pytest's JUnit XML records for the test (``record_property``'s list)."""
    return [
        ("diffaccel_technique", result.technique),
        ("diffaccel_median_s", result.median),
        ("diffaccel_speedup", None if result.speedup is None else round(result.speedup, 4)),
        ("diffaccel_ssim", None if result.ssim is None else round(result.ssim, 5)),
        ("diffaccel_peak_memory", result.peak_memory),
        ("diffaccel_verdict", result.headline),
    ]


def _attach(
    result: Result,
    seeds: list[Seeded],
    scores: fidelity.Fidelity | None,
    first: Block,
    reference: Any,
    effects: list[tuple[str, Any]],
    entry: dict[str, Any] | None,
    figure: str,
) -> None:
    """What the reports and a saved baseline need beside the verdict: seeds, thumbnails, effects, history."""
    result.fidelity_seeds = [s for s, _, _ in seeds]
    result.per_seed_ssim = list(scores.per_seed) if scores else []
    result.thumbnail = _thumbnail(first.measurement.images)
    result.reference_thumbnail = _thumbnail(reference.images)
    result.effects = [
        {"part": label, "applied": e.applied, "checked": e.checked, "line": e.line} for label, e in effects
    ]
    if entry:
        result.history = [math.exp(v) for v in (history.levels(history.runs_of(entry), figure) or [[]])[-1]]
        result.series = series_of(history.runs_of(entry), figure)  # the chart's series: every kept run


def _crept(judgement: latency.Judgement, level: list[float], prior: float, settings: Settings) -> latency.Judgement:
    """A run that passes against its level's mean but crept beyond max-slowdown from the level's anchor
    (a series of saves, each within noise) fails the latency gate, saying so."""
    if judgement.regression:
        return judgement
    now = math.log(judgement.ratio) + sum(level) / len(level)
    found = latency.creep(level, now, prior, max_slowdown=settings.max_slowdown, alpha=settings.alpha)
    if found is None:
        return judgement
    import dataclasses

    return dataclasses.replace(
        judgement, state="fail", regression=True, undecided=False, improvement=False, reason=found.describe()
    )


def _thumbnail(images: Any) -> str | None:
    """The images' thumbnail PNG, base64 (JSON-able for pytest-xdist; written beside the baselines on save)."""
    if images is None:
        return None
    import base64

    return base64.b64encode(thumbnails.encode(images)).decode("ascii")


def settings_mode(settings: Settings, spec: Spec) -> str:
    return "absolute" if spec.is_reference else settings.compare
