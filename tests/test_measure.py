"""Measurement mechanics without a GPU: the CUDA timer's single sync (with fake CUDA events), the
per-component breakdown, interleaving, warm-up until steady."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_diffaccel import breakdown, measure
from pytest_diffaccel.models import PRESETS


class FakeEvent:
    """Stands in for torch.cuda.Event on the CPU: a host timestamp, and a count of syncs."""

    syncs = 0
    recorded = 0

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.when: float | None = None

    def record(self) -> None:
        import time

        FakeEvent.recorded += 1
        self.when = time.perf_counter()

    def synchronize(self) -> None:
        FakeEvent.syncs += 1

    def elapsed_time(self, other: FakeEvent) -> float:
        assert self.when is not None and other.when is not None
        return (other.when - self.when) * 1000.0


@pytest.fixture
def pipe(tiny_sd):
    return tiny_sd.fresh("cpu")


CALL = measure.Call(prompts=tuple(PRESETS["tiny-sd"].prompts), steps=4, size=(64, 64), guidance=5.0)


def test_cuda_timer_syncs_once_per_timed_call_and_never_per_step(pipe):
    FakeEvent.syncs = FakeEvent.recorded = 0
    timer = measure.CudaTimer(event_factory=FakeEvent)
    with breakdown.Instrument(pipe, cuda=True, event_factory=FakeEvent) as instrument:
        instrument.begin()
        with torch.inference_mode():
            seconds, _ = timer.time(lambda: pipe(**CALL.kwargs(), output_type="pt"))
        marks = instrument.end()
    assert FakeEvent.syncs == 1  # the timer's read of its end event, after the call
    # start, text start/end, one mark per denoising step, decode start/end, and the timer's two
    assert FakeEvent.recorded == 1 + 2 + CALL.steps + 2 + 2
    parts = breakdown.split(marks.seconds(), seconds)
    assert len(parts["steps"]) == CALL.steps
    assert parts["denoiser"] > 0 and parts["VAE decode"] > 0 and parts["text encoder"] > 0


def test_instrument_leaves_the_pipeline_as_it_was(pipe):
    before = (pipe.encode_prompt, pipe.scheduler.step, pipe.vae.decode)
    with breakdown.Instrument(pipe, cuda=False):
        assert pipe.scheduler.step is not before[1]
    assert "step" not in vars(pipe.scheduler) and "decode" not in vars(pipe.vae)
    assert (pipe.encode_prompt, pipe.scheduler.step, pipe.vae.decode) == before


def test_measurement_breaks_each_call_down(pipe):
    result = measure.measure(pipe, CALL, device="cpu", min_rounds=3, max_rounds=3, count_sync=False)
    assert len(result.breakdown) == 3
    components = breakdown.medians(result.breakdown)
    assert set(components) == {"text encoder", "denoiser", "VAE decode", "rest", "step"}
    total = sum(components[c] for c in breakdown.COMPONENTS)
    assert total == pytest.approx(result.median, rel=0.25)
    assert components["denoiser"] > components["text encoder"]


def test_split_and_compare_are_pure():
    points = [("start", 0.0), ("text-start", 0.0), ("text-end", 0.1), ("step", 0.3), ("step", 0.5),
              ("decode-start", 0.5), ("decode-end", 0.9)]  # fmt: skip
    parts = breakdown.split(points, total=1.0)
    assert parts["text encoder"] == pytest.approx(0.1)
    assert parts["steps"] == pytest.approx([0.2, 0.2])
    assert parts["denoiser"] == pytest.approx(0.4)
    assert parts["VAE decode"] == pytest.approx(0.4)
    assert parts["rest"] == pytest.approx(0.1)
    old = {"text encoder": 0.1, "denoiser": 0.4, "VAE decode": 0.4, "rest": 0.1}
    new = {"text encoder": 0.1, "denoiser": 0.41, "VAE decode": 0.568, "rest": 0.1}
    assert breakdown.compare(new, old) == "VAE decode 1.42x slower; text encoder, denoiser, rest within noise"


def test_interleaved_companion_pairs_every_round(pipe, tiny_sd):
    companion = measure.Companion(tiny_sd.fresh("cpu"))
    result = measure.measure(
        pipe, CALL, device="cpu", min_rounds=4, max_rounds=4, companion=companion, count_sync=False
    )
    assert len(result.samples) == len(result.companion_samples) == 4
    ratios = result.paired_ratios
    assert all(0.5 < r < 2.0 for r in ratios)  # the same pipeline: about 1


def test_warm_up_until_steady():
    assert not measure.is_steady([90.0, 1.2])
    assert measure.is_steady([90.0, 1.2, 1.25])
    assert not measure.is_steady([1.0])


class Recompiling:
    """A 'pipeline' whose compiled function sees a new shape from its 4th call on: dynamo recompiles
    in the middle of the timed rounds (the class of bug of diffusers #11360)."""

    components: dict = {}  # noqa: RUF012 - no model components to count

    def __init__(self) -> None:
        self.calls = 0
        self.fn = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)

    def __call__(self, **kwargs):
        self.calls += 1
        self.fn(torch.ones(max(1, self.calls - 2), 3))
        return torch.rand(1, 3, 8, 8)


def test_a_recompilation_during_the_timed_rounds_fails_with_dynamos_reason():
    import torch._dynamo

    torch._dynamo.reset()
    pipe = Recompiling()
    result = measure.measure(
        pipe, CALL, device="cpu", min_rounds=3, max_rounds=3, warmup=2, compiles=True, max_warmup=2
    )
    torch._dynamo.reset()
    assert len(result.failures) == 1
    prefix = "recompiled during the timed rounds: "
    assert result.failures[0].startswith(prefix)
    reason = result.failures[0][len(prefix) :]
    # dynamo's own words, not ours: its error type and the compiled function it recompiled, by
    # name and file (the lambda of Recompiling, in this file)
    assert reason.startswith("RecompileError"), reason
    assert "<lambda>" in reason and Path(__file__).name in reason, reason


def test_compiled_techniques_count_graph_breaks():
    import torch._dynamo

    torch._dynamo.reset()

    def breaking(x):
        y = x * 2
        torch._dynamo.graph_break()
        return y + 1

    fn = torch.compile(breaking, backend="eager")

    class Pipe:
        components: dict = {}  # noqa: RUF012

        def __call__(self, **kwargs):
            fn(torch.ones(2))
            return torch.rand(1, 3, 8, 8)

    result = measure.measure(Pipe(), CALL, device="cpu", min_rounds=2, max_rounds=2, compiles=True, max_warmup=2)
    assert result.graph_breaks and result.graph_breaks >= 1
    torch._dynamo.reset()
