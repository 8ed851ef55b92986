#!/usr/bin/env python3
"""Render the GPU proof's JSON reports (pytest-benchmark format with our extra_info) as Markdown.

    python scripts/gpu_results.py build/gpu-proof/sd15.json build/gpu-proof/sdxl.json > docs/gpu-results.md

Each report becomes one table: technique, median latency, speed-up vs fp32, peak memory, SSIM
vs fp32 (labelled random weights where it is), host-device syncs per denoising step, and the
published speed-up of the same step where one exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Published speed-ups vs fp32, by (model preset, technique spec) of our ladders.
PUBLISHED = {
    # diffusers "Speed up inference" guide (the table the seed change removed): SD 1.5, A100,
    # 512x512, 50 DDIM steps: 5.27 s fp32.
    ("sd15-arch", "tf32"): ("x1.27 (4.14 s)", "diffusers guide, SD 1.5, A100"),
    ("sd15-arch", "fp16"): ("x1.50 (3.51 s)", "diffusers guide, SD 1.5, A100"),
    ("sd15-arch", "fp16+tf32"): ("x1.54 (3.41 s)", "diffusers guide, SD 1.5, A100"),
    # diffusion-fast: SDXL, A100, 30 steps, 1024x1024: 7.36 s fp32 (vanilla attention) -> 2.43 s
    # with bf16, SDPA, compile, fused QKV and int8 dynamic quantization.
    ("sdxl-arch", "bf16+sdpa-flash+fuse-qkv+int8-dynamic+compile"): ("x3.03 (2.43 s)", "diffusion-fast, SDXL, A100"),
}
PUBLISHED_BASE = {
    "sd15-arch": "diffusers guide: 5.27 s fp32 on an A100 (50 DDIM steps, 512x512)",
    "sdxl-arch": "diffusion-fast: 7.36 s fp32 on an A100 (30 steps, 1024x1024, attention without SDPA)",
}


def fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**30:.2f} GiB"


def table(report: dict) -> list[str]:
    info = report["machine_info"].get("diffaccel", {})
    model = str(info.get("model", "?"))
    base_model = model.split(" ")[0]
    random_weights = "random weights" in model
    lines = [f"### {model} on {info.get('gpu') or info.get('device', '?')}", ""]
    benches = report["benchmarks"]
    if benches:
        extra = benches[0]["extra_info"]
        call = extra.get("call", {})
        size = "x".join(map(str, call.get("size") or [])) or "default size"
        lines.append(
            f"{call.get('steps')} steps, {size}, batch {call.get('batch')}, guidance {call.get('guidance')}, "
            f"fp32 reference median {fmt_s(extra.get('reference_median'))}. "
            f"Rounds per technique: {', '.join(str(b['stats']['rounds']) for b in benches)}."
        )
        lines.append("")
    ssim_head = "SSIM vs fp32 (random weights)" if random_weights else "SSIM vs fp32"
    lines.append(
        "| technique | median | speed-up vs fp32 | published speed-up | peak memory "
        f"| {ssim_head} | syncs/step | compile |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for bench in benches:
        extra = bench["extra_info"]
        technique = extra["technique"]
        published = PUBLISHED.get((base_model, technique), ("", ""))[0]
        ssim = extra.get("ssim")
        syncs = extra.get("syncs_per_step")
        compile_s = extra.get("compile_seconds")
        lines.append(
            f"| {technique} | {fmt_s(bench['stats']['median'])} | {extra.get('speedup', 0):.2f}x | {published or '-'} "
            f"| {fmt_bytes(extra.get('peak_memory'))} | {'-' if ssim is None else f'{ssim:.4f}'} "
            f"| {'-' if syncs is None else f'{syncs:.1f}'} | {'-' if compile_s is None else fmt_s(compile_s)} |"
        )
    for item in report.get("diffaccel", {}).get("skipped", []):
        lines.append(f"| {item['technique']} | skipped: {item['reason']} | | | | | | |")
    for item in report.get("diffaccel", {}).get("failed", []):
        lines.append(f"| {item['technique']} | failed: {item['reason']} | | | | | | |")
    lines.append("")
    if base_model in PUBLISHED_BASE:
        lines.append(f"Published baseline: {PUBLISHED_BASE[base_model]}.")
        lines.append("")
    return lines


def render(paths: list[Path], title: str, command: str) -> str:
    reports = [json.loads(path.read_text()) for path in paths if path.exists()]
    lines = [f"# {title}", ""]
    if reports:
        first = reports[0]["machine_info"]
        versions = first.get("diffaccel", {}).get("versions", {})
        lines.append(
            f"Measured {reports[0].get('datetime', '')[:19]} UTC with "
            + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
            + f"; Python {first.get('python_version')}."
        )
        lines.append("")
    lines.append(f"Command: `{command}`")
    lines.append("")
    lines.append(
        "Speed-ups are against the fp32 reference (TF32 off) timed in the same run on the same GPU. "
        "Random-weight models give real latencies and memory; their SSIM only shows that the "
        "technique keeps the computation close to fp32, not how a real picture looks."
    )
    lines.append("")
    for report in reports:
        lines += table(report)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        lines.append("Not measured (the run ended first): " + ", ".join(missing))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--title", default="GPU results")
    parser.add_argument("--command", default="bash scripts/gpu-proof.sh")
    args = parser.parse_args(argv)
    sys.stdout.write(render(args.reports, args.title, args.command) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
