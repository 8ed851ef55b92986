"""Report pieces on fixed inputs: the Markdown against a golden file, the live status line."""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

from pytest_diffaccel import latency, verdict
from pytest_diffaccel.config import Settings
from pytest_diffaccel.history import Spread
from pytest_diffaccel.report.markdown import render_markdown
from pytest_diffaccel.report.progress import LiveStatus
from pytest_diffaccel.results import Result

GOLDEN = Path(__file__).parent / "golden" / "report.md"
BASE = [0.20, 0.21, 0.19, 0.20, 0.22, 0.18, 0.20, 0.21]
HALF = [s * 0.5 for s in BASE]


HISTORY = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01]
SPREAD = Spread(sigma=0.02, runs=8, own_dof=7, own=0.015, prior=0.03, machine_tests=3)


def fixed_state():
    def judged(samples, ssim, blocks=None, min_ssim=0.93):
        runs = latency.judge(
            [math.log(b) for b in blocks], [math.log(h) for h in HISTORY], SPREAD,
            max_slowdown=0.10, alpha=0.0005, max_blocks=len(blocks),
        ) if blocks else None  # fmt: skip
        return verdict.decide(verdict.Inputs(broken=None, ssim=ssim, psnr=40.0, min_ssim=min_ssim, latency=runs))

    results = [
        Result(test_id="t.py::test[fp32]", technique="fp32", samples=BASE, ssim=1.0, speedup=1.0,
               peak_memory=40 << 20, verdict=judged(BASE, 1.0)),
        Result(test_id="t.py::test[bf16]", technique="bf16", samples=HALF, ssim=0.9889,
               speedup=2.0, peak_memory=20 << 20, verdict=judged(HALF, 0.9889, [1.002])),
        Result(test_id="t.py::test[noisy|unet]", technique="noisy|unet", samples=BASE, ssim=0.61, speedup=1.0,
               peak_memory=40 << 20, verdict=judged(BASE, 0.61)),
        Result(test_id="t.py::test[slow]", technique="slow", samples=[s * 1.3 for s in BASE], ssim=1.0, speedup=0.77,
               peak_memory=40 << 20, verdict=judged([s * 1.3 for s in BASE], 1.0, [1.31, 1.29])),
        Result(test_id="t.py::test[tf32]", technique="tf32", outcome="skipped",
               reason="tf32: needs CUDA (run with --diffaccel-gpu on a GPU machine)"),
    ]  # fmt: skip
    return SimpleNamespace(
        results=results,
        info=SimpleNamespace(label="tiny-sd"),
        device="cpu",
        machine="cpu-test",
        settings=Settings(techniques=("fp32", "bf16")),
    )


def test_markdown_matches_the_golden_file():
    assert render_markdown(fixed_state()) == GOLDEN.read_text()


def test_live_status_draws_in_place_and_erases_itself():
    written: list[str] = []
    status = LiveStatus(written.append, "bf16+compile", tick=0.05)
    status("compiling (call 1)")
    time.sleep(0.12)  # the ticker redraws the elapsed seconds
    status("rounds 3/8+")
    status.close()
    screen: list[str] = []
    for chunk in written:  # replay the backspaces like a terminal
        for ch in chunk:
            if ch == "\b":
                screen.pop() if screen else None
            else:
                screen.append(ch)
    assert "".join(screen).strip() == ""  # nothing left behind for pytest's PASSED
    assert any("[bf16+compile] compiling (call 1) 0 s" in chunk for chunk in written)
    assert any("rounds 3/8+" in chunk for chunk in written)
    assert len(written) >= 3
