#!/usr/bin/env python3
"""Verdict quality: false alarms, missed regressions and fidelity mutations, measured on this CPU.

    python benchmarks/verdict_quality.py                  # about 8 minutes on 2 idle cores
    python benchmarks/verdict_quality.py --runs 6 --slow-runs 3 --out /tmp/vq.md   # a quick look

1. A/A: ``--runs`` processes each time the unchanged tiny-sd; every ordered pair of processes is
   judged (baseline from one, candidate from another) -> false alarm rate.
2. Real slowdowns of 5%, 10% and 20%: extra matrix products inside the UNet forward, calibrated in
   each process against its own call time (never sleep) -> detection rate per level, judged
   against every A run as the baseline.
3. The same pairs judged by pytest-benchmark's ``--benchmark-compare-fail=median:5%`` rule.
   Both in absolute mode (raw latencies) and relative mode (latency over the fp32 reference
   median timed in the same process), which cancels the machine's speed of the day.
4. Fidelity mutations (UNet weight noise, NaN in one layer, a black VAE output, guidance silently
   ignored, int8 on every linear layer without a filter) must each be caught; clean techniques
   (bf16, SDPA, fused QKV, channels-last, VAE slicing) must pass.

Nothing else may run on the machine meanwhile: helpers share the cores and their load is noise.
Writes docs/verdict-quality.md (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_diffaccel import stats, verdict  # noqa: E402

LEVELS = (0.05, 0.10, 0.20)


# ----------------------------------------------------------------------------- worker: one process


def _extra_compute(pipe: Any, seconds_per_forward: float) -> None:
    """Slow the UNet forward down by real work: matrix products calibrated to take ``seconds_per_forward``."""
    import torch

    a = torch.randn(192, 192)
    t = time.perf_counter()
    for _ in range(200):
        a = torch.tanh(a @ a)
    per = (time.perf_counter() - t) / 200
    repeats = max(1, round(seconds_per_forward / per))
    forward = pipe.unet.forward

    def slowed(*args: Any, **kwargs: Any) -> Any:
        x = a
        for _ in range(repeats):
            x = torch.tanh(x @ x)
        return forward(*args, **kwargs)

    pipe.unet.forward = slowed


def worker(slowdown: float, rounds: int) -> dict[str, Any]:
    from pytest_diffaccel.measure import Call, Companion, measure
    from pytest_diffaccel.models import model_info
    from pytest_diffaccel.models.loading import ModelSource

    info = model_info("tiny-sd")
    source = ModelSource(info)
    call = Call(prompts=tuple(info.prompts), steps=info.steps, size=info.size, guidance=info.guidance)
    reference = source.fresh("cpu")
    candidate = source.fresh("cpu")
    kwargs = {"device": "cpu", "min_rounds": rounds, "max_rounds": rounds, "warmup": 1, "count_sync": False}
    ref = measure(reference, call, **kwargs)
    if slowdown:
        unet_calls = info.steps or 8
        _extra_compute(candidate, slowdown * ref.median / unet_calls)
    cand = measure(candidate, call, **kwargs)
    paired = measure(candidate, call, companion=Companion(reference), **kwargs)
    return {
        "slowdown": slowdown,
        "reference": ref.samples,
        "candidate": cand.samples,
        "paired": paired.paired_ratios,
    }


# ----------------------------------------------------------------------------- judging


def ours(candidate: list[float], baseline: list[float], max_slowdown: float, alpha: float) -> bool:
    return verdict.compare_latency(candidate, baseline, max_slowdown, alpha).regression


def pytest_benchmark_rule(candidate: list[float], baseline: list[float], threshold: float = 0.05) -> bool:
    """--benchmark-compare-fail=median:5%: fail when the median grew by more than 5%."""
    return stats.median(candidate) > stats.median(baseline) * (1 + threshold)


def relative(run: dict[str, Any]) -> list[float]:
    return verdict.relative_samples(run["candidate"], stats.median(run["reference"]))


def rates(baselines: list[dict], candidates: list[dict], same: bool, settings: dict[str, Any]) -> dict[str, float]:
    counts = {
        "ours absolute": 0,
        "ours relative": 0,
        "ours interleaved": 0,
        "pytest-benchmark absolute": 0,
        "pytest-benchmark relative": 0,
        "pytest-benchmark interleaved": 0,
    }
    pairs = 0
    for i, base in enumerate(baselines):
        for j, cand in enumerate(candidates):
            if same and i == j:
                continue
            pairs += 1
            counts["ours absolute"] += ours(cand["candidate"], base["candidate"], **settings)
            counts["ours relative"] += ours(relative(cand), relative(base), **settings)
            counts["pytest-benchmark absolute"] += pytest_benchmark_rule(cand["candidate"], base["candidate"])
            counts["pytest-benchmark relative"] += pytest_benchmark_rule(relative(cand), relative(base))
            counts["ours interleaved"] += ours(cand["paired"], base["paired"], **settings)
            counts["pytest-benchmark interleaved"] += pytest_benchmark_rule(cand["paired"], base["paired"])
    return {k: v / pairs for k, v in counts.items()} | {"pairs": pairs}


# ----------------------------------------------------------------------------- fidelity mutations


def _every_layer(module: Any, fqn: str = "") -> bool:
    import torch

    return isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))


def fidelity_cases() -> list[tuple[str, str, str, float]]:
    """(case, kind, verdict headline, ssim) for each mutation and clean technique."""
    import torch

    from pytest_diffaccel import fidelity
    from pytest_diffaccel.config import Settings
    from pytest_diffaccel.measure import to_numpy_images
    from pytest_diffaccel.models import model_info
    from pytest_diffaccel.models.loading import ModelSource
    from pytest_diffaccel.session import DiffaccelSession
    from pytest_diffaccel.techniques import builtin_registry, quantization

    info = model_info("tiny-sd")
    source = ModelSource(info)
    registry = builtin_registry()

    def generate(pipe: Any, guidance: float = 5.0) -> Any:
        with torch.inference_mode():
            out = pipe(prompt=list(info.prompts), num_inference_steps=info.steps, guidance_scale=guidance,
                       height=64, width=64, generator=torch.Generator().manual_seed(0), output_type="pt")  # fmt: skip
        return to_numpy_images(out)

    reference = generate(source.fresh("cpu"))
    rows: list[tuple[str, str, str, float]] = []

    def judge(name: str, kind: str, images: Any, threshold: float) -> None:
        broken = fidelity.broken(images)
        ssim = None if broken else fidelity.compare(images, reference).ssim
        decision = verdict.decide(
            verdict.Inputs(broken=broken, ssim=ssim, psnr=None, min_ssim=threshold, samples=[1.0])
        )
        rows.append((name, kind, decision.headline, float("nan") if ssim is None else ssim))

    precision_threshold = registry.techniques["bf16"].min_ssim
    for strength in (0.02, 0.05, 0.10, 0.20):
        pipe = source.fresh("cpu")
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in pipe.unet.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * p.pow(2).mean().sqrt() * strength)
        judge(f"UNet weight noise {strength:.0%} (judged as bf16)", "mutation", generate(pipe), precision_threshold)
    pipe = source.fresh("cpu")
    with torch.no_grad():
        pipe.unet.mid_block.resnets[0].conv1.weight.view(-1)[0] = float("nan")
    judge("NaN in one UNet weight", "mutation", generate(pipe), precision_threshold)
    pipe = source.fresh("cpu")
    decode = pipe.vae.decode

    def black(latents: Any, *args: Any, **kwargs: Any) -> Any:
        out = decode(latents, *args, **kwargs)
        (out[0] if isinstance(out, tuple) else out.sample).fill_(-1.0)
        return out

    pipe.vae.decode = black
    judge("all-black VAE output", "mutation", generate(pipe), precision_threshold)
    judge("guidance scale silently ignored (judged as fp32)", "mutation", generate(source.fresh("cpu"), guidance=1.0),
          registry.techniques["fp32"].min_ssim)  # fmt: skip
    pipe = source.fresh("cpu")
    quantization.quantize(pipe, "Int8DynamicActivationInt8WeightConfig", {}, quantization.unfiltered)
    judge("int8 dynamic on every linear layer, no size filter", "mutation", generate(pipe),
          registry.techniques["int8-dynamic"].min_ssim)  # fmt: skip
    pipe = source.fresh("cpu")
    try:  # every layer: convolutions too, which torchao's linear configs can't take
        quantization.quantize(pipe, "Int8DynamicActivationInt8WeightConfig", {}, _every_layer)
        judge("int8 dynamic on every layer (convolutions too)", "mutation", generate(pipe),
              registry.techniques["int8-dynamic"].min_ssim)  # fmt: skip
    except Exception as error:
        rows.append(("int8 dynamic on every layer (convolutions too)", "mutation",
                     f"FAIL error ({type(error).__name__})", float("nan")))  # fmt: skip

    settings = Settings()
    session = DiffaccelSession(settings, registry)
    for name in ("bf16", "sdpa-math", "sdpa-flash", "fuse-qkv", "channels-last", "vae-slicing", "int8-dynamic"):
        spec = registry.parse(name)
        pipe, _ = session.apply(spec, settings)
        judge(name, "clean", generate(pipe), spec.min_ssim_for(dict(info.ssim_overrides)))
    return rows


# ----------------------------------------------------------------------------- report


COLUMNS = (
    "ours absolute",
    "ours relative",
    "ours interleaved",
    "pytest-benchmark absolute",
    "pytest-benchmark relative",
    "pytest-benchmark interleaved",
)


def _cells(rates_: dict[str, float]) -> str:
    return " | ".join(f"{rates_[c]:.1%}" for c in COLUMNS) + " |"


def render(runs: list[dict], cases: list[tuple], settings: dict[str, Any], seconds: float, command: str) -> str:
    aa = [r for r in runs if r["slowdown"] == 0]
    lines = [
        "# Verdict quality on this CPU",
        "",
        f"Command: `{command}` (measured in {seconds / 60:.1f} minutes). tiny-sd, {len(aa[0]['candidate'])} timed rounds a side, "
        f"one process per run; our rule at max-slowdown {settings['max_slowdown']:.0%} and alpha {settings['alpha']:g}; "
        "pytest-benchmark's rule is `--benchmark-compare-fail=median:5%`.",
        "",
        "## Latency gate",
        "",
        "| comparison | pairs | ours, absolute | ours, relative | ours, relative interleaved "
        "| pytest-benchmark median:5%, absolute | pytest-benchmark, relative | pytest-benchmark, interleaved |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    aa_rates = rates(aa, aa, True, settings)
    lines.append(f"| A/A false alarms | {aa_rates['pairs']} | " + _cells(aa_rates))
    for level in LEVELS:
        slow = [r for r in runs if r["slowdown"] == level]
        if not slow:
            continue
        r = rates(aa, slow, False, settings)
        actual = stats.median([stats.median(s["paired"]) for s in slow]) - 1
        lines.append(f"| {level:.0%} slowdown detected (actual {actual:+.1%} paired) | {r['pairs']} | " + _cells(r))
    lines += [
        "",
        "Relative interleaved, other settings (the same samples):",
        "",
        "| max-slowdown | alpha | A/A false alarms | 5% detected | 10% detected | 20% detected |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for max_slowdown in (0.05, 0.07, 0.10):
        for alpha in (0.01, 0.05):
            swept = {"max_slowdown": max_slowdown, "alpha": alpha}
            cells = [f"{rates(aa, aa, True, swept)['ours interleaved']:.1%}"]
            for level in LEVELS:
                slow = [r for r in runs if r["slowdown"] == level]
                cells.append(f"{rates(aa, slow, False, swept)['ours interleaved']:.1%}" if slow else "-")
            lines.append(f"| {max_slowdown:.0%} | {alpha:g} | " + " | ".join(cells) + " |")
    spread = [stats.median(r["paired"]) for r in aa]
    lines += [
        "",
        f"Per-run median of the paired ratios across the A runs: {min(spread):.3f}-{max(spread):.3f} "
        f"(standard deviation {stats.stddev(spread):.3f}): the run, not the round, is the unit of noise.",
    ]
    medians = [stats.median(r["reference"]) for r in aa]
    lines += [
        "",
        f"Machine drift across the A runs: the fp32 reference median ranged {min(medians) * 1e3:.0f}-{max(medians) * 1e3:.0f} ms "
        f"(ratio {max(medians) / min(medians):.2f}).",
        "",
        "## Fidelity gate",
        "",
        "| case | kind | SSIM vs fp32 | verdict |",
        "|---|---|---:|---|",
    ]
    for name, kind, headline, ssim in cases:
        shown = "-" if ssim != ssim else f"{ssim:.4f}"
        lines.append(f"| {name} | {kind} | {shown} | {headline} |")
    missed = [c for c in cases if c[1] == "mutation" and c[2].startswith("pass")]
    false = [c for c in cases if c[1] == "clean" and not c[2].startswith("pass")]
    lines += ["", f"Mutations missed: {len(missed)}; clean techniques flagged: {len(false)}.", ""]
    lines += DEFAULTS_TEXT.splitlines()
    return "\n".join(lines)


DEFAULTS_TEXT = """
## Defaults chosen from these numbers

- **`--diffaccel-compare=relative` and `--diffaccel-interleave=auto` (on for the CPU).** On this shared
  2-core machine the same fp32 call differs by up to 2x between processes, so absolute latencies
  from an earlier run cry wolf (A/A false alarms above 20% for both rules), and so does dividing by
  a reference timed at the start of the session. Timing the fp32 reference in alternation with the
  technique (A B B A) and comparing the ratios brings our false alarms to about 1 in 100. The price:
  twice the timed calls, and a slowdown that hits fp32 and the technique alike (a slower torch for
  everything) is invisible in relative mode; a quiet, dedicated GPU runner can gate on
  `--diffaccel-compare=absolute` to see those. On CUDA `auto` does not interleave (that would keep a
  second full-size pipeline in GPU memory); GPU timings were not measured by this benchmark.
- **`--diffaccel-max-slowdown=10%`, `--diffaccel-alpha=0.01`** keep false alarms at or under 1%.
  Detection of a 10% slowdown stays far below the 95% target here: the paired ratios of two
  unchanged runs differ by a few percent from run to run (table above), so with the threshold at 10%
  a true 10% slowdown is caught about as often as not, and lowering the threshold buys detection
  only with false alarms. What would reach the target is a quieter machine or more runs per
  verdict, not a different test.
- **Fidelity**: every ruinous mutation is caught by the broken-image or SSIM gate and no clean
  technique is flagged. Two rows pass on purpose: 2% weight noise stays within the drift that bf16
  itself causes, and int8 on every linear layer is harmless on tiny-sd (the size filter exists
  for speed, not fidelity); int8 on every layer including convolutions fails with torchao's error.
- Timed rounds in the plugin are adaptive (at least 8, then until the median is known to +-0.5%
  or 10 s are spent); this benchmark uses exactly 8 a side, the plugin's minimum.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=16, help="A runs (unchanged), one process each")
    parser.add_argument("--slow-runs", type=int, default=8, help="runs per slowdown level")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--max-slowdown", type=float, default=0.10)
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "verdict-quality.md")
    parser.add_argument("--raw", type=Path, help="also write the raw samples as JSON")
    parser.add_argument("--from-raw", type=Path, help="judge saved samples instead of measuring")
    parser.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.rounds)))
        return 0
    started = time.perf_counter()
    command = "python benchmarks/verdict_quality.py" + ("" if argv is None else " " + " ".join(argv))
    if args.from_raw:
        raw = json.loads(args.from_raw.read_text())
        runs = raw["runs"]
        command = f"{command}`, judging the samples of `{raw['command']}"
        minutes = raw["minutes"]
    else:
        plan = [0.0] * args.runs + [level for level in LEVELS for _ in range(args.slow_runs)]
        runs = []
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        for index, slowdown in enumerate(plan):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(slowdown), "--rounds", str(args.rounds)],
                capture_output=True, text=True, env=env, check=True,
            )  # fmt: skip
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"run {index + 1}/{len(plan)} slowdown {slowdown:.0%}: "
                  f"candidate median {stats.median(runs[-1]['candidate']) * 1e3:.0f} ms", flush=True)  # fmt: skip
        minutes = (time.perf_counter() - started) / 60
        if args.raw:
            raw = {"command": command, "minutes": round(minutes, 1), "rounds": args.rounds, "runs": runs}
            args.raw.write_text(json.dumps(raw))
    cases = fidelity_cases()
    settings = {"max_slowdown": args.max_slowdown, "alpha": args.alpha}
    text = render(runs, cases, settings, minutes * 60, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
