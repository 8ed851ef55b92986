"""Decisions: the gates a measured technique must pass. Pure functions, no torch.

Gates, in the order they are judged (every gate is judged; the first failure heads the message):
1. broken image (NaN/Inf or constant), judged before any SSIM;
2. fidelity: SSIM vs the fp32 reference below the threshold; then fidelity regression: the SSIM
   dropped, or the picture moved, vs the technique's own baseline beyond a measured tolerance; then
   caption (bundled presets, captioned prompts): a picture no longer shows the caption the fp32
   reference's picture of the same prompt and seed shows (captions.py);
3. speed-up: below ``min_speedup`` vs the fp32 reference of this run (when set);
4. latency: the run-level rule of latency.py against the test's run history (blocks confirmed
   before any failure, judged with the history's run-to-run spread);
5. compile time and cold start: the same rule on those figures, with ``max_compile_increase``;
6. memory: peak above the baseline's beyond ``max_memory_increase`` plus a small slack.
No baseline: gates 4 to 6 pass, and the report says "no baseline" ("no baseline for this environment"
when the folder holds histories of other hardware only). Strict mode (``--diffaccel-require-baseline``):
the ``baseline`` gate fails such a test, naming the command that records one, and an *undecided*
latency verdict (beyond max-slowdown, history too short to tell) fails the latency gate.
A change of the software stack since the history's newest run is judged like any run, and named.
Accepting a change (``--diffaccel-accept=fidelity``, with ``--diffaccel-save all``): a failed fidelity
regression gate passes, its message starting with ACCEPTED, so that the run's new picture is saved; the
broken-image and fidelity gates still fail (a broken picture is never accepted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .captions import CaptionCheck
from .fidelity import Regression
from .latency import Judgement
from .units import fmt_bytes

ENVIRONMENT_NOTE = "no baseline for this environment"
# The CPU's resident-set estimate moves by a few MiB between identical runs: the memory gate's slack per device.
MEMORY_SLACK = {"cuda": 1 << 20, "cpu": 64 << 20}
ACCEPTED = "accepted (--diffaccel-accept=fidelity): "  # the message of a fidelity regression accepted
# The gates that speak of the picture and of the measurement itself, not of time or memory: a result that
# fails one may never become a baseline (Result.fidelity_ok), and they are a mutation's verdict in
# benchmarks/verdict_quality.py's fidelity table.
PICTURE_GATES = ("broken", "fidelity", "fidelity regression", "caption", "not applied", "measurement")


@dataclass(frozen=True)
class Gate:
    name: str  # "broken", "fidelity", "speed-up", "latency", "memory"
    passed: bool
    message: str
    judged: bool = True  # False: nothing to judge against (no baseline, no threshold)


@dataclass(frozen=True)
class Inputs:
    """Everything a verdict depends on, measured or configured."""

    broken: str | None
    ssim: float | None
    psnr: float | None
    min_ssim: float
    regression: Regression | None = None  # fidelity vs the technique's own baseline (None: none stored)
    captions: CaptionCheck | None = None  # the caption gate (None: not a bundled preset, or no captioned prompt)
    effects: Sequence[tuple[str, bool, bool, str]] = ()  # (part, applied, checked, line) per part
    latency: Judgement | None = None  # None: no history to judge against (baseline_note says why)
    figures: Sequence[tuple[str, Judgement]] = ()  # ("compile time", ...), ("cold start", ...)
    max_slowdown: float = 0.10
    max_compile_increase: float = 0.50
    peak_memory: int | None = None
    baseline_peak_memory: int | None = None
    max_memory_increase: float = 0.10
    memory_slack: int = 0
    speedup: float | None = None
    min_speedup: float | None = None
    baseline_note: str = "no baseline"
    compare_mode: str = "absolute"
    failures: Sequence[str] = ()  # measurement failures (recompilation...), each fails the test
    breakdown_note: str = ""  # which component moved vs the baseline (breakdown.compare)
    syncs_per_step: float | None = None
    max_syncs: float | None = None
    report_only: Sequence[str] = ()  # gate names judged and reported but not failing the test
    require_baseline: bool = False  # strict mode: no baseline, or an undecided latency verdict, fails
    record_command: str = "pytest ... --diffaccel-save=all --diffaccel-save-runs=5"
    stack_changes: Sequence[str] = ()  # software changes since the history's newest run ("torch a -> b")
    accept: Sequence[str] = ()  # --diffaccel-accept: "fidelity" passes a fidelity regression, reported as accepted


@dataclass(frozen=True)
class Verdict:
    gates: tuple[Gate, ...]
    latency: Judgement | None = None
    notes: tuple[str, ...] = field(default=())
    reported: tuple[str, ...] = field(default=())  # gates that failed but are reported only (--diffaccel-report-only)

    @property
    def failed(self) -> bool:
        return any(not g.passed for g in self.gates)

    @property
    def failures(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    @property
    def headline(self) -> str:
        """Short verdict for the table: 'pass', 'pass (no baseline)', 'FAIL fidelity', ..."""
        failures = self.failures
        if failures:
            return "FAIL " + ", ".join(g.name for g in failures)
        if self.reported or self.accepted:
            said = [", ".join(self.reported) + " reported only"] if self.reported else []
            if self.accepted:
                said.append("new picture accepted")
            return "pass (" + "; ".join(said) + ")"
        if self.latency is not None and self.latency.undecided:
            return "undecided"
        latency = next((g for g in self.gates if g.name == "latency"), None)
        if latency is not None and not latency.judged:
            return f"pass ({ENVIRONMENT_NOTE})" if latency.message == ENVIRONMENT_NOTE else "pass (no baseline)"
        if self.latency is not None and self.latency.improvement:
            return "pass (faster)"
        return "pass"

    @property
    def accepted(self) -> Gate | None:
        """The fidelity regression gate this run accepted (--diffaccel-accept=fidelity), or None."""
        return next((g for g in self.gates if g.passed and g.message.startswith(ACCEPTED)), None)

    def message(self) -> str:
        failures = self.failures
        if not failures:
            return "all gates passed"
        return "\n".join(f"{g.name} gate failed: {g.message}" for g in failures)


def decide(inputs: Inputs) -> Verdict:
    """Every gate judged, in the order of the module's docstring; --diffaccel-report-only gates pass, reported."""
    gates = [
        *_measurement_gates(inputs),
        _broken_gate(inputs),
        _fidelity_gate(inputs),
        *_regression_gates(inputs),
        *_caption_gates(inputs),
        *_effect_gates(inputs),
        _speedup_gate(inputs),
        *_syncs_gates(inputs),
        *_latency_gates(inputs),
        *_figure_gates(inputs),
        _memory_gate(inputs),
    ]
    gates, reported = reported_only(gates, inputs.report_only)
    return Verdict(gates=tuple(gates), latency=inputs.latency, notes=_latency_notes(inputs), reported=reported)


def reported_only(gates: Sequence[Gate], names: Sequence[str]) -> tuple[list[Gate], tuple[str, ...]]:
    """--diffaccel-report-only: the failed gates of ``names`` pass, their message kept and marked; their names."""
    reported = tuple(g.name for g in gates if not g.passed and g.name in names)
    marked = [Gate(g.name, True, f"reported only, not gated: {g.message}") if g.name in reported else g for g in gates]
    return marked, reported


def _measurement_gates(inputs: Inputs) -> list[Gate]:
    """Each measurement failure (a recompilation during the timed rounds...) fails the test."""
    return [Gate("measurement", False, failure) for failure in inputs.failures]


def _broken_gate(inputs: Inputs) -> Gate:
    """1. broken image: NaN/Inf or constant."""
    if inputs.broken:
        return Gate("broken", False, f"broken image: {inputs.broken}")
    return Gate("broken", True, "images are finite and not constant")


def _fidelity_gate(inputs: Inputs) -> Gate:
    """2. fidelity: SSIM vs the fp32 reference against the threshold."""
    if inputs.broken or inputs.ssim is None:
        return Gate("fidelity", True, "not judged: no sound image", judged=False)
    psnr = "inf" if inputs.psnr is None or inputs.psnr == float("inf") else f"{inputs.psnr:.1f} dB"
    if inputs.ssim < inputs.min_ssim:
        return Gate(
            "fidelity",
            False,
            f"SSIM {inputs.ssim:.4f} vs the fp32 reference is below the threshold {inputs.min_ssim:.4f} (PSNR {psnr})",
        )
    return Gate("fidelity", True, f"SSIM {inputs.ssim:.4f} >= {inputs.min_ssim:.4f} (PSNR {psnr})")


def _regression_gates(inputs: Inputs) -> list[Gate]:
    """2b. fidelity vs the technique's own baseline: what it did before, not only a constant."""
    if inputs.regression is None:
        return []
    moved = inputs.regression.failed
    if moved and "fidelity" in inputs.accept:
        return [Gate("fidelity regression", True, ACCEPTED + inputs.regression.describe())]
    if not moved and inputs.regression.unread and inputs.require_baseline:
        # strict mode fails what it could not judge: a picture the history names but the store lost
        text = f"{inputs.regression.describe()} (--diffaccel-require-baseline fails what it can't compare)"
        return [Gate("fidelity regression", False, text)]
    return [Gate("fidelity regression", not moved, inputs.regression.describe())]


def _caption_gates(inputs: Inputs) -> list[Gate]:
    """2b'. the pictures still show the captions the fp32 reference's show (bundled presets)."""
    if inputs.captions is None or inputs.broken:
        return []
    return [caption_gate(inputs.captions)]


def caption_gate(check: CaptionCheck) -> Gate:
    """The caption gate of a reading (captions.check); a search's candidate is judged by it too."""
    return Gate("caption", not check.failed, check.describe(), judged=check.judged)


def _effect_gates(inputs: Inputs) -> list[Gate]:
    """2c. the technique took effect (each part's effect check)."""
    absent = [(part, line) for part, applied, _, line in inputs.effects if not applied]
    checked = [(part, line) for part, applied, was_checked, line in inputs.effects if applied and was_checked]
    if absent:
        return [Gate("not applied", False, "; ".join(f"{part}: {line}" for part, line in absent))]
    if checked:
        return [Gate("not applied", True, "; ".join(f"{part}: {line}" for part, line in checked))]
    if inputs.effects:
        return [Gate("not applied", True, "effect not checked", judged=False)]
    return []


def _speedup_gate(inputs: Inputs) -> Gate:
    """3. speed-up vs the reference of this run, when min_speedup is set."""
    if inputs.min_speedup is None or inputs.speedup is None:
        return Gate("speed-up", True, "no min_speedup set", judged=False)
    if inputs.speedup < inputs.min_speedup:
        return Gate(
            "speed-up",
            False,
            f"{inputs.speedup:.2f}x vs the fp32 reference of this run is below min_speedup {inputs.min_speedup:.2f}x",
        )
    return Gate("speed-up", True, f"{inputs.speedup:.2f}x >= {inputs.min_speedup:.2f}x")


def _syncs_gates(inputs: Inputs) -> list[Gate]:
    """3b. host-device syncs per denoising step (CUDA), when a ceiling is set."""
    if inputs.max_syncs is None or inputs.syncs_per_step is None:
        return []
    if inputs.syncs_per_step > inputs.max_syncs:
        return [
            Gate(
                "syncs",
                False,
                f"{inputs.syncs_per_step:.1f} host-device synchronizations per denoising step, above max_syncs "
                f"{inputs.max_syncs:g} (keep scheduler sigmas on the CPU; avoid .item() in the loop)",
            )
        ]
    return [Gate("syncs", True, f"{inputs.syncs_per_step:.1f} syncs per step <= {inputs.max_syncs:g}")]


def _latency_gates(inputs: Inputs) -> list[Gate]:
    """4. latency vs the run history; without one, strict mode's baseline gate."""
    latency = inputs.latency
    if latency is None:
        gates = [Gate("latency", True, inputs.baseline_note, judged=False)]
        if inputs.require_baseline:  # whatever kept it from being judged: no history, another call, model...
            gates.append(
                Gate(
                    "baseline",
                    False,
                    f"{inputs.baseline_note} (--diffaccel-require-baseline fails every test not judged against "
                    f"its history): record one on this machine with `{inputs.record_command}`",
                )
            )
        return gates
    what = "relative to the fp32 reference, " if inputs.compare_mode == "relative" else ""
    stack = f"after {', '.join(inputs.stack_changes)}: " if inputs.stack_changes else ""
    text = f"{stack}{what}{latency.describe()}: {latency.reason}; {latency.spread.describe()}"
    if latency.regression:
        return [Gate("latency", False, text + (f"; {inputs.breakdown_note}" if inputs.breakdown_note else ""))]
    if latency.undecided and inputs.require_baseline:
        return [Gate("latency", False, f"{text} (--diffaccel-require-baseline fails what it can't tell)")]
    return [Gate("latency", True, text)]


def _latency_notes(inputs: Inputs) -> tuple[str, ...]:
    """A latency gate too blind to catch max-slowdown says so, and what would cure it."""
    latency = inputs.latency
    if latency is None or not latency.blind:
        return ()
    return (
        f"latency gate nearly blind: {latency.spread.describe()}; it can only fail a slowdown beyond "
        f"{latency.detectable:.2f}x (record more runs with --diffaccel-save, or a quieter machine)",
    )


def _figure_gates(inputs: Inputs) -> list[Gate]:
    """5. compile time and cold start vs their history."""
    return [
        Gate(
            name, not judgement.regression, f"{judgement.describe()}: {judgement.reason}; {judgement.spread.describe()}"
        )
        for name, judgement in inputs.figures
    ]


def _memory_gate(inputs: Inputs) -> Gate:
    """6. peak memory vs the baseline's, beyond max_memory_increase plus the slack."""
    if inputs.peak_memory is None or not inputs.baseline_peak_memory:
        return Gate("memory", True, "no baseline peak", judged=False)
    limit = inputs.baseline_peak_memory * (1.0 + inputs.max_memory_increase) + inputs.memory_slack
    change = inputs.peak_memory / inputs.baseline_peak_memory - 1.0
    text = f"peak {fmt_bytes(inputs.peak_memory)} vs baseline {fmt_bytes(inputs.baseline_peak_memory)} ({change:+.1%})"
    if inputs.peak_memory > limit:
        return Gate("memory", False, f"{text}: beyond the tolerance {inputs.max_memory_increase:.0%}")
    return Gate("memory", True, text)
