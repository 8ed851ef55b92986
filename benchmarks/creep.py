"""Creeping regressions: at which save each rule catches a technique that gets slower a little at a time,
and what the creep rule costs in false alarms on clean histories.

A user saves every passing run (``--diffaccel-save=all`` on main). A technique that slows by +4% per
save passes each time against its level's mean (each step is inside max-slowdown, and the level's
spread grows with the drift), so the level rule alone never fails it. The creep rule (latency.creep)
also judges each run against the level's anchor, with a spread from successive differences.

Two parts:
* ``--simulate`` (default, seconds): run-to-run noise drawn at the spreads this project measured
  (docs/verdict-quality.md: 1% to 11% between techniques), histories saved run by run as a user
  would; detection (the save at which each rule first fails, +4% per save) and the A/A false-alarm
  rate per test per run of each rule on histories of 10 runs.
* ``--real`` (minutes, idle machine): the fire drill (DIFFACCEL_SLOWDOWN) on fuse-qkv at +4%, +8%, ...
  per save, each save a real ``pytest examples -k fuse-qkv --diffaccel-save=all`` into a fresh
  baselines folder, after ``--calibrate`` clean saves; the save at which the gate fails and its message.

    python benchmarks/creep.py                       # simulation -> docs/creep.json, docs/creep.md
    python benchmarks/creep.py --real --saves 8      # adds the real series (about 40 s a save here)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_diffaccel import history, latency  # noqa: E402

MAX_SLOWDOWN = 0.10
ALPHA = 0.0005
SIGMAS = (0.01, 0.03, 0.05, 0.08, 0.11)
STEP = 0.04
KEEP = 10


def judge_run(level: list[float], now: float, machine: tuple[float | None, int]) -> tuple[bool, bool]:
    """(level rule failed, creep rule failed) for one run of two agreeing blocks at ``now`` (log)."""
    spread = history.spread([level], "ratio", machine)
    judged = latency.judge([now, now], level, spread, max_slowdown=MAX_SLOWDOWN, alpha=ALPHA, max_blocks=2)
    crept = latency.creep(level, now, spread.prior, max_slowdown=MAX_SLOWDOWN, alpha=ALPHA) is not None
    return judged.regression, crept and not judged.regression


def detection(sigma: float, draws: int, calibrate: int, rng: random.Random) -> dict[str, object]:
    """Saves of a drifting technique (+STEP per save, noise sigma) after ``calibrate`` clean runs: the first
    save each rule fails (None: not within 15 saves), as a user who saves every passing run would see."""
    firsts: dict[str, list[int | None]] = {"level": [], "creep": []}
    for _ in range(draws):
        level = [rng.gauss(0.0, sigma) for _ in range(calibrate)]
        first: dict[str, int | None] = {"level": None, "creep": None}
        for save in range(1, 16):
            now = save * math.log1p(STEP) + rng.gauss(0.0, sigma)
            failed_level, failed_creep = judge_run(level[-KEEP:], now, (None, 0))
            if failed_level and first["level"] is None:
                first["level"] = save
            if (failed_level or failed_creep) and first["creep"] is None:
                first["creep"] = save
            if failed_level or failed_creep:
                break  # a failing run is not saved
            level.append(now)
        for rule in firsts:
            firsts[rule].append(first[rule])
    out: dict[str, object] = {}
    for rule, values in firsts.items():
        caught = sorted(v for v in values if v is not None)
        out[rule] = {
            "caught": len(caught) / draws,
            "median_save": caught[len(caught) // 2] if caught else None,
            "drift_at_median": round((1 + STEP) ** caught[len(caught) // 2] - 1, 3) if caught else None,
        }
    return out


def false_alarms(sigma: float, draws: int, rng: random.Random) -> dict[str, float]:
    """A/A: histories of KEEP clean runs and one more clean run; the share each rule fails."""
    level_alarms = creep_alarms = 0
    for _ in range(draws):
        series = [rng.gauss(0.0, sigma) for _ in range(KEEP + 1)]
        failed_level, failed_creep = judge_run(series[:KEEP], series[KEEP], (None, 0))
        level_alarms += failed_level
        creep_alarms += failed_creep
    return {"level": level_alarms / draws, "creep_added": creep_alarms / draws}


def simulate(draws: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    rows = []
    for sigma in SIGMAS:
        rows.append(
            {"sigma": sigma, "detection": detection(sigma, draws, 5, rng), "aa": false_alarms(sigma, draws * 20, rng)}
        )
    return {"draws": draws, "seed": seed, "step": STEP, "max_slowdown": MAX_SLOWDOWN, "alpha": ALPHA, "rows": rows}


def real(saves: int, calibrate: int) -> list[dict[str, object]]:
    """The fire drill on fuse-qkv, +STEP per save, each save a real pytest run into a fresh folder."""
    folder = Path(tempfile.mkdtemp(prefix="diffaccel-creep-"))
    base = [sys.executable, "-m", "pytest", "examples", "-k", "fuse-qkv", "-p", "no:cacheprovider", "-q",
            f"--diffaccel-baselines={folder}", "--diffaccel-fidelity-seeds=1"]  # fmt: skip
    rows: list[dict[str, object]] = []
    for k in range(calibrate + saves):
        drift = max(0, k - calibrate + 1) * STEP
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if drift:
            env["DIFFACCEL_SLOWDOWN"] = f"fuse-qkv={drift * 100:.0f}%"
        started = time.perf_counter()
        done = subprocess.run([*base, "--diffaccel-save=all"], cwd=ROOT, env=env, capture_output=True, text=True)
        message = next((line.strip() for line in done.stdout.splitlines() if "latency gate failed" in line), "")
        row = {"save": k + 1, "drill": drift, "exit": done.returncode, "seconds": round(time.perf_counter() - started),
               "crept": "crept:" in message, "message": re.sub(r"\s+", " ", message)[:300]}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        if done.returncode != 0:
            break
    return rows


def render(data: dict[str, object]) -> str:
    sim = data["simulation"]
    lines = [
        "# Creeping regressions",
        "",
        "Generated by `python benchmarks/creep.py` (simulation; `--real` adds the fire-drill series) from "
        "`docs/creep.json`. A technique slows by "
        f"{sim['step']:.0%} per save; every passing run is saved (`--diffaccel-save=all`), after 5 clean runs; "
        f"max-slowdown {sim['max_slowdown']:.0%}, alpha {sim['alpha']:g}; {sim['draws']} simulated series per spread.",
        "",
        "| run-to-run spread | level rule alone: caught | at save (drift) | with the creep rule: caught | at save "
        "(drift) | A/A false alarms per test-run: level rule | added by the creep rule |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sim["rows"]:
        det, aa = row["detection"], row["aa"]

        def cell(rule: str, det: dict = det) -> str:
            d = det[rule]
            at = f"{d['median_save']} (+{d['drift_at_median']:.0%})" if d["median_save"] else "-"
            return f"{d['caught']:.0%} | {at}"

        lines.append(
            f"| {row['sigma']:.0%} | {cell('level')} | {cell('creep')} | {aa['level']:.4%} | {aa['creep_added']:.4%} |"
        )
    lines += [
        "",
        "The level rule judges a run against the mean of its level, with the level's spread: a drift that is "
        "saved run by run moves that mean with it and widens that spread. The creep rule judges the run against "
        "the level's anchor (its oldest third, at least two runs), with a spread from successive differences "
        "(which a slow trend barely moves), and needs a monotone rise (Kendall p < 0.05).",
    ]
    series = data.get("real")
    if series:
        lines += ["", "## The real series (fire drill on fuse-qkv, this machine)", "",
                  "| save | drill | exit | crept | latency gate |", "|---|---|---|---|---|"]  # fmt: skip
        for row in series:
            lines.append(
                f"| {row['save']} | +{row['drill']:.0%} | {row['exit']} | {'yes' if row['crept'] else ''} | "
                f"{row['message'] or 'passed'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", action="store_true", help="add the fire-drill series (minutes)")
    parser.add_argument("--saves", type=int, default=8)
    parser.add_argument("--calibrate", type=int, default=3, help="clean saves before the drift starts")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "creep.json")
    args = parser.parse_args(argv)
    data: dict[str, object] = {"simulation": simulate(args.draws, args.seed)}
    if args.real:
        data["real"] = real(args.saves, args.calibrate)
    elif args.out.exists():
        data["real"] = json.loads(args.out.read_text()).get("real")
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
