"""Decisions: the gates a measured technique must pass. Pure functions, no torch.

Gates, in the order they are judged (every gate is judged; the first failure heads the message):
1. broken image (NaN/Inf or constant), judged before any SSIM;
2. fidelity: SSIM vs the fp32 reference below the threshold; then fidelity regression: the SSIM
   dropped, or the picture moved, vs the technique's own baseline beyond a measured tolerance;
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

from .fidelity import Regression
from .latency import Judgement
from .units import fmt_bytes

ENVIRONMENT_NOTE = "no baseline for this environment"
ACCEPTED = "accepted (--diffaccel-accept=fidelity): "  # the message of a fidelity regression accepted


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
    gates: list[Gate] = []
    notes: list[str] = []

    for failure in inputs.failures:
        gates.append(Gate("measurement", False, failure))

    # 1. broken image
    if inputs.broken:
        gates.append(Gate("broken", False, f"broken image: {inputs.broken}"))
    else:
        gates.append(Gate("broken", True, "images are finite and not constant"))

    # 2. fidelity
    if inputs.broken or inputs.ssim is None:
        gates.append(Gate("fidelity", True, "not judged: no sound image", judged=False))
    else:
        psnr = "inf" if inputs.psnr is None or inputs.psnr == float("inf") else f"{inputs.psnr:.1f} dB"
        if inputs.ssim < inputs.min_ssim:
            gates.append(
                Gate(
                    "fidelity",
                    False,
                    f"SSIM {inputs.ssim:.4f} vs the fp32 reference is below the threshold {inputs.min_ssim:.4f} "
                    f"(PSNR {psnr})",
                )
            )
        else:
            gates.append(Gate("fidelity", True, f"SSIM {inputs.ssim:.4f} >= {inputs.min_ssim:.4f} (PSNR {psnr})"))

    # 2b. fidelity vs the technique's own baseline: what it did before, not only a constant
    if inputs.regression is not None:
        moved = inputs.regression.failed
        if moved and "fidelity" in inputs.accept:
            gates.append(Gate("fidelity regression", True, ACCEPTED + inputs.regression.describe()))
        else:
            gates.append(Gate("fidelity regression", not moved, inputs.regression.describe()))

    # 2c. the technique took effect (each part's effect check)
    absent = [(part, line) for part, applied, _, line in inputs.effects if not applied]
    checked = [(part, line) for part, applied, was_checked, line in inputs.effects if applied and was_checked]
    if absent:
        gates.append(Gate("not applied", False, "; ".join(f"{part}: {line}" for part, line in absent)))
    elif checked:
        gates.append(Gate("not applied", True, "; ".join(f"{part}: {line}" for part, line in checked)))
    elif inputs.effects:
        gates.append(Gate("not applied", True, "effect not checked", judged=False))

    # 3. speed-up vs the reference of this run
    if inputs.min_speedup is None or inputs.speedup is None:
        gates.append(Gate("speed-up", True, "no min_speedup set", judged=False))
    elif inputs.speedup < inputs.min_speedup:
        gates.append(
            Gate(
                "speed-up",
                False,
                f"{inputs.speedup:.2f}x vs the fp32 reference of this run is below "
                f"min_speedup {inputs.min_speedup:.2f}x",
            )
        )
    else:
        gates.append(Gate("speed-up", True, f"{inputs.speedup:.2f}x >= {inputs.min_speedup:.2f}x"))

    # 3b. host-device syncs per denoising step (CUDA), when a ceiling is set
    if inputs.max_syncs is not None and inputs.syncs_per_step is not None:
        if inputs.syncs_per_step > inputs.max_syncs:
            gates.append(
                Gate(
                    "syncs",
                    False,
                    f"{inputs.syncs_per_step:.1f} host-device synchronizations per denoising step, above max_syncs "
                    f"{inputs.max_syncs:g} (keep scheduler sigmas on the CPU; avoid .item() in the loop)",
                )
            )
        else:
            gates.append(Gate("syncs", True, f"{inputs.syncs_per_step:.1f} syncs per step <= {inputs.max_syncs:g}"))

    # 4. latency vs the run history
    latency = inputs.latency
    if latency is not None:
        what = "relative to the fp32 reference, " if inputs.compare_mode == "relative" else ""
        stack = f"after {', '.join(inputs.stack_changes)}: " if inputs.stack_changes else ""
        text = f"{stack}{what}{latency.describe()}: {latency.reason}; {latency.spread.describe()}"
        if latency.regression:
            gates.append(Gate("latency", False, text + (f"; {inputs.breakdown_note}" if inputs.breakdown_note else "")))
        elif latency.undecided and inputs.require_baseline:
            gates.append(Gate("latency", False, f"{text} (--diffaccel-require-baseline fails what it can't tell)"))
        else:
            gates.append(Gate("latency", True, text))
        if latency.blind:
            notes.append(
                f"latency gate nearly blind: {latency.spread.describe()}; it can only fail a slowdown beyond "
                f"{latency.detectable:.2f}x (record more runs with --diffaccel-save, or a quieter machine)"
            )
    else:
        gates.append(Gate("latency", True, inputs.baseline_note, judged=False))
        if inputs.require_baseline and inputs.baseline_note.startswith("no baseline"):
            gates.append(
                Gate(
                    "baseline",
                    False,
                    f"{inputs.baseline_note} (--diffaccel-require-baseline): record one on this machine with "
                    f"`{inputs.record_command}`",
                )
            )

    # 5. compile time and cold start vs their history
    for name, judgement in inputs.figures:
        text = f"{judgement.describe()}: {judgement.reason}; {judgement.spread.describe()}"
        gates.append(Gate(name, not judgement.regression, text))

    # 6. memory vs baseline
    if inputs.peak_memory is not None and inputs.baseline_peak_memory:
        limit = inputs.baseline_peak_memory * (1.0 + inputs.max_memory_increase) + inputs.memory_slack
        change = inputs.peak_memory / inputs.baseline_peak_memory - 1.0
        text = (
            f"peak {fmt_bytes(inputs.peak_memory)} vs baseline {fmt_bytes(inputs.baseline_peak_memory)} ({change:+.1%})"
        )
        if inputs.peak_memory > limit:
            gates.append(Gate("memory", False, f"{text}: beyond the tolerance {inputs.max_memory_increase:.0%}"))
        else:
            gates.append(Gate("memory", True, text))
    else:
        gates.append(Gate("memory", True, "no baseline peak", judged=False))

    reported = tuple(g.name for g in gates if not g.passed and g.name in inputs.report_only)
    if reported:
        gates = [
            Gate(g.name, True, f"reported only, not gated: {g.message}") if g.name in reported else g for g in gates
        ]
    return Verdict(gates=tuple(gates), latency=latency, notes=tuple(notes), reported=reported)
