"""Creeping regressions: at which save each rule catches a technique that gets slower a little at a time,
and what the creep rule costs in false alarms on clean histories.

A user saves every passing run (``--diffaccel-save=all`` on main). A technique that slows by +4% per
save passes each time against its level's mean (each step is inside max-slowdown, and the level's
spread grows with the drift), so the level rule alone fails it late or never. The creep rule (latency.creep)
also judges each run against the level's anchor, with a spread from successive differences.

Three parts:
* ``--simulate`` (default, seconds): run-to-run noise drawn at the spreads this project measured
  (docs/verdict-quality.md: 1% to 11% between techniques), histories saved run by run as a user
  would; detection (the save at which each rule first fails, +4% per save) and the A/A false-alarm
  rate per test per run of each rule on histories of 10 runs.
* ``--real`` (minutes, idle machine): the fire drill (DIFFACCEL_SLOWDOWN) on fuse-qkv at +4%, +8%, ...
  per save, each save a real ``pytest examples -k fuse-qkv --diffaccel-save=all`` into a fresh
  baselines folder, after ``--calibrate`` clean saves; the save at which the gate fails and its message.

* ``--otava`` (minutes): Apache Otava (change-point detection, e-divisive means and a t-test) judges
  the very same series, at its defaults and tuned; where it first fails the drift, its A/A false alarms,
  and a conclusion drawn from these numbers. Otava is no dependency of this project (it pins numpy and
  scipy): it runs where ``import otava`` works, here or in the interpreter given by ``--otava-python``,
  fed the series through a JSON file; without it the section is skipped with a line that says so.

    python benchmarks/creep.py                       # simulation -> docs/creep.json, docs/creep.md
    python -m venv /tmp/otava && /tmp/otava/bin/pip install apache-otava==0.8.0
    python benchmarks/creep.py --otava --otava-python /tmp/otava/bin/python   # the committed docs
    python benchmarks/creep.py --real --saves 8      # adds the real series (about 40 s a save here)
"""

from __future__ import annotations

import argparse
import hashlib
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
CALIBRATE = 5  # clean runs saved before the drift starts
SAVES = 15  # drifting saves judged at most


def judge_run(level: list[float], now: float, machine: history.Prior) -> tuple[bool, bool]:
    """(level rule failed, creep rule failed) for one run of two agreeing blocks at ``now`` (log)."""
    spread = history.spread([level], "ratio", machine)
    judged = latency.judge([now, now], level, spread, max_slowdown=MAX_SLOWDOWN, alpha=ALPHA, max_blocks=2)
    crept = latency.creep(level, now, spread.prior, max_slowdown=MAX_SLOWDOWN, alpha=ALPHA) is not None
    return judged.regression, crept and not judged.regression


def detection(sigma: float, draws: int, calibrate: int, rng: random.Random) -> tuple[dict[str, object], dict]:
    """Saves of a drifting technique (+STEP per save, noise sigma) after ``calibrate`` clean runs: the first
    save each rule fails (None: not within SAVES saves), as a user who saves every passing run would see.
    Each series is drawn whole (``calibrate`` clean runs, then SAVES drifting ones), so the series depend on
    the seed only, and Otava can be handed the same ones; returns the summary and {series, firsts}."""
    firsts: dict[str, list[int | None]] = {"level": [], "creep": []}
    drawn: list[list[float]] = []
    for _ in range(draws):
        series = [rng.gauss(0.0, sigma) for _ in range(calibrate)]
        series += [save * math.log1p(STEP) + rng.gauss(0.0, sigma) for save in range(1, SAVES + 1)]
        drawn.append(series)
        first: dict[str, int | None] = {"level": None, "creep": None}
        for save in range(1, SAVES + 1):
            # the runs before are all saved: no rule (level alone, or with the creep rule) failed on them
            level, now = series[: calibrate + save - 1], series[calibrate + save - 1]
            failed_level, failed_creep = judge_run(level[-KEEP:], now, history.NO_PRIOR)
            if failed_level and first["level"] is None:
                first["level"] = save
            if (failed_level or failed_creep) and first["creep"] is None:
                first["creep"] = save
            if first["level"] is not None:
                break  # a failing run is not saved: both gates have failed by now
        for rule in firsts:
            firsts[rule].append(first[rule])
    return {rule: summary(values) for rule, values in firsts.items()}, {"series": drawn, "firsts": firsts["creep"]}


def summary(firsts: list[int | None]) -> dict[str, object]:
    """The share of series caught within SAVES saves, the median save of those caught and its drift."""
    caught = sorted(v for v in firsts if v is not None)
    return {
        "caught": len(caught) / len(firsts),
        "median_save": caught[len(caught) // 2] if caught else None,
        "drift_at_median": round((1 + STEP) ** caught[len(caught) // 2] - 1, 3) if caught else None,
    }


def false_alarms(sigma: float, draws: int, rng: random.Random) -> tuple[dict[str, float], dict[str, list]]:
    """A/A: histories of KEEP clean runs and one more clean run; the share each rule fails (and the series,
    with the level rule's verdict on each)."""
    level_alarms = creep_alarms = 0
    drawn, levels = [], []
    for _ in range(draws):
        series = [rng.gauss(0.0, sigma) for _ in range(KEEP + 1)]
        failed_level, failed_creep = judge_run(series[:KEEP], series[KEEP], history.NO_PRIOR)
        level_alarms += failed_level
        creep_alarms += failed_creep
        drawn.append(series)
        levels.append(failed_level)
    return {"level": level_alarms / draws, "creep_added": creep_alarms / draws}, {"series": drawn, "level": levels}


def simulate(draws: int, seed: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The simulation's summary, and per spread the series it judged (for --otava; not saved)."""
    rng = random.Random(seed)
    rows, series = [], []
    for sigma in SIGMAS:
        found, drift = detection(sigma, draws, CALIBRATE, rng)
        aa, clean = false_alarms(sigma, draws * 20, rng)
        rows.append({"sigma": sigma, "detection": found, "aa": aa})
        series.append({"sigma": sigma, "drift": drift["series"], "firsts": drift["firsts"], "aa": clean["series"],
                       "aa_level": clean["level"]})  # fmt: skip
    data = {"draws": draws, "seed": seed, "step": STEP, "max_slowdown": MAX_SLOWDOWN, "alpha": ALPHA, "rows": rows}
    return data, series


# Apache Otava (pip install apache-otava: e-divisive means change points, each split kept when a two-sided
# Student's t-test between the segments passes max_pvalue and, optionally, their means differ by min_magnitude).
# It is not a dependency of this project: it pins numpy and scipy versions of its own, so it usually lives in
# a venv of its own, handed over with --otava-python.
OTAVA_SETTINGS = (  # (name, max_pvalue, min_magnitude); Otava's defaults first
    ("defaults (p 0.001)", 0.001, 0.0),
    ("p 0.0005 (our alpha), magnitude 10%", ALPHA, MAX_SLOWDOWN),
    ("p 0.01, magnitude 10%", 0.01, MAX_SLOWDOWN),
    ("p 0.05, magnitude 10%", 0.05, MAX_SLOWDOWN),
)


def otava_verdict(logs: list[float], max_pvalue: float, min_magnitude: float) -> tuple[bool, bool]:
    """(any change point, a regression) by Otava over these runs (logs, oldest first; handed over as ratios):
    a regression when the mean of the last segment is beyond max-slowdown from the mean of the first."""
    from otava.analysis import compute_change_points  # only in the worker (and its interpreter)

    values = [math.exp(v) for v in logs]
    points, _ = compute_change_points(values, max_pvalue=max_pvalue, min_magnitude=min_magnitude)
    if not points:
        return False, False
    first, last = values[: int(points[0].index)], values[int(points[-1].index) :]
    return True, sum(last) / len(last) > (1.0 + MAX_SLOWDOWN) * sum(first) / len(first)


def otava_worker(series_path: Path, out_path: Path) -> None:
    """Judge the handed series with Otava at each of OTAVA_SETTINGS: the drifting series run by run, Otava
    seeing what the gate sees (the kept history and this run), and the A/A series of the simulation."""
    from importlib.metadata import PackageNotFoundError, requires, version

    handed = json.loads(series_path.read_text())
    calibrate, keep, saves = handed["calibrate"], handed["keep"], handed["saves"]
    settings = []
    for name, max_pvalue, min_magnitude in OTAVA_SETTINGS:
        rows = []
        for block in handed["blocks"]:
            firsts: list[int | None] = []
            for series in block["drift"]:
                first = None
                for save in range(1, saves + 1):
                    runs = [*series[: calibrate + save - 1][-keep:], series[calibrate + save - 1]]
                    if otava_verdict(runs, max_pvalue, min_magnitude)[1]:
                        first = save
                        break
                firsts.append(first)
            # per A/A series: 0 no change point, 1 a change point, 2 one that is a regression beyond max-slowdown
            verdicts = "".join(str(sum(otava_verdict(series, max_pvalue, min_magnitude))) for series in block["aa"])
            rows.append({"sigma": block["sigma"], "firsts": firsts, "aa": verdicts})
        settings.append({"name": name, "max_pvalue": max_pvalue, "min_magnitude": min_magnitude, "rows": rows})
    try:
        found, needs = version("apache-otava"), requires("apache-otava") or []
    except PackageNotFoundError:  # an otava that is not the distribution (a stand-in)
        found, needs = "unknown", []
    pins = [r for r in needs if r.split()[0].rstrip("<>=!~;").startswith(("numpy", "scipy"))]
    out_path.write_text(json.dumps({"version": found, "pins": pins, "settings": settings}))


def otava_python(given: str | None) -> str | None:
    """The interpreter that can import otava: this one, else ``given`` (--otava-python), else None."""
    import importlib.util

    if importlib.util.find_spec("otava") is not None:
        return sys.executable
    try:
        if given and subprocess.run([given, "-c", "import otava.analysis"], capture_output=True).returncode == 0:
            return given
    except OSError:  # no such interpreter
        pass
    return None


def otava(series: list[dict[str, object]], python: str, sim: dict[str, object]) -> dict[str, object]:
    """Otava over the simulation's series (in ``python``, through a JSON file), summarised as the table is,
    with each drifting series also compared with the save at which our gate (level and creep rules) failed."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffaccel-otava-") as folder:
        handed, back = Path(folder) / "series.json", Path(folder) / "otava.json"
        blocks = [{"sigma": b["sigma"], "drift": b["drift"], "aa": b["aa"]} for b in series]
        handed.write_text(json.dumps({"calibrate": CALIBRATE, "keep": KEEP, "saves": SAVES, "blocks": blocks}))
        subprocess.run([python, str(Path(__file__).resolve()), "--otava-worker", str(handed), str(back)], check=True)
        judged = json.loads(back.read_text())
    never = SAVES + 1
    settings = []
    for setting in judged["settings"]:
        rows = []
        for row, block in zip(setting["rows"], series, strict=True):
            ours = [f or never for f in block["firsts"]]
            theirs = [f or never for f in row["firsts"]]
            pairs, aa = len(ours), row["aa"]
            rows.append({
                "sigma": row["sigma"],
                "detection": summary(row["firsts"]),
                "sooner": sum(t < o for t, o in zip(theirs, ours, strict=True)) / pairs,
                "later": sum(t > o for t, o in zip(theirs, ours, strict=True)) / pairs,
                "aa": {"any": sum(v != "0" for v in aa) / len(aa), "regression": aa.count("2") / len(aa),
                       "added": sum(v == "2" and not lv for v, lv in zip(aa, block["aa_level"], strict=True)) / len(aa)},
            })  # fmt: skip
        settings.append({k: setting[k] for k in ("name", "max_pvalue", "min_magnitude")} | {"rows": rows})
    return {"version": judged["version"], "pins": judged["pins"], "draws": sim["draws"], "seed": sim["seed"],
            "seconds": round(time.perf_counter() - started), "settings": settings}  # fmt: skip


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


OTAVA_VENV = "python -m venv /tmp/otava && /tmp/otava/bin/pip install apache-otava==0.8.0"
OTAVA_COMMAND = "python benchmarks/creep.py --otava --otava-python /tmp/otava/bin/python"


def pct(x: float) -> str:
    return f"{x:.2%}"


def render_otava(result: dict | None, sim: dict[str, object]) -> list[str]:
    """The Otava section: its table on the same series, and the conclusion drawn from these very numbers."""
    lines = ["", "## Apache Otava on the same series", ""]
    if not result:
        return [*lines, f"Not run: `{OTAVA_VENV}`, then `{OTAVA_COMMAND}`."]
    lines += [
        f"apache-otava {result['version']} in a venv of its own (`{OTAVA_VENV}`: it pins numpy and scipy versions "
        f"of its own, so it is no dependency of this project); {result['seconds']} s on this machine for all settings. "
        "Otava finds change points by e-divisive means and keeps each one whose segments a two-sided Student's t-test "
        "tells apart at `max_pvalue` (and, with `min_magnitude`, whose means differ by that much; "
        "`otava.analysis.compute_change_points`, default window). It judges each run over what the gate holds, "
        f"the kept history ({KEEP} runs) and this run, and fails it when it finds a change point and the mean of the "
        f"last segment is more than {sim['max_slowdown']:.0%} above the mean of the first. The drifting series and the "
        "A/A histories are the very ones of the table above. *Sooner* / *later*: the share of drifting series on which "
        "Otava fails an earlier / a later save than the gate with the creep rule. *Added to the level rule*: A/A "
        "histories that Otava fails and the level rule passes (the creep rule's column above, for Otava).",
        "",
        "| run-to-run spread | Otava settings | caught | at save (drift) | sooner | later | A/A per test-run: any "
        f"change point | a regression beyond {sim['max_slowdown']:.0%} | added to the level rule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ours = {row["sigma"]: row for row in sim["rows"]}
    for setting in result["settings"]:
        for row in setting["rows"]:
            d, aa = row["detection"], row["aa"]
            at = f"{d['median_save']} (+{d['drift_at_median']:.0%})" if d["median_save"] else "-"
            lines.append(
                f"| {row['sigma']:.0%} | {setting['name']} | {d['caught']:.0%} | {at} | {row['sooner']:.0%} | "
                f"{row['later']:.0%} | {pct(aa['any'])} | {pct(aa['regression'])} | {pct(aa['added'])} |"
            )
    defaults, *tuned = result["settings"]
    wide = [row for row in defaults["rows"] if row["sigma"] >= 0.05]  # where false alarms show at these draws
    saves = ", ".join(
        f"{row['detection']['median_save'] or '-'} vs {ours[row['sigma']]['detection']['creep']['median_save'] or '-'} "
        f"at {row['sigma']:.0%}"
        for row in defaults["rows"]
    )
    otava_added = [row["aa"]["added"] for row in wide]
    creep_added = [ours[row["sigma"]]["aa"]["creep_added"] for row in wide]
    any_cp = [row["aa"]["any"] for row in defaults["rows"]]
    fastest = min(tuned, key=lambda t: sum(r["detection"]["median_save"] or SAVES + 1 for r in t["rows"]))
    strict = min(tuned, key=lambda t: t["max_pvalue"])
    worst = max(otava_added)
    sooner_by = max(
        (ours[r["sigma"]]["detection"]["creep"]["median_save"] or SAVES + 1)
        - (r["detection"]["median_save"] or SAVES + 1)
        for r in defaults["rows"]
    )
    keep = all(o > c for o, c in zip(otava_added, creep_added, strict=True)) and sooner_by <= 1
    more = (
        f"about {sum(otava_added) / sum(creep_added):.0f} times the false alarms the creep rule adds"
        if sum(creep_added)
        else "false alarms where the creep rule adds none"
    )
    pins = ", ".join(f"`{pin}`" for pin in result.get("pins", [])) or "see its metadata"
    lines += [
        "",
        "### Conclusion",
        "",
        f"*Detection.* With its defaults (max_pvalue {defaults['max_pvalue']:g}), Otava fails the "
        f"+{sim['step']:.0%}/save creep at a median save of {saves} (Otava vs the creep rule): at most "
        f"{sooner_by} save{'s' if sooner_by != 1 else ''} sooner, and it catches "
        f"{min(r['detection']['caught'] for r in defaults['rows']):.0%} to "
        f"{max(r['detection']['caught'] for r in defaults['rows']):.0%} of the series within {SAVES} saves, where the "
        f"creep rule catches {min(r['detection']['creep']['caught'] for r in sim['rows']):.0%} to "
        f"{max(r['detection']['creep']['caught'] for r in sim['rows']):.0%}.",
        "",
        f"*False alarms.* At {wide[0]['sigma']:.0%} to {wide[-1]['sigma']:.0%} spread Otava's defaults add "
        f"{pct(min(otava_added))} to {pct(worst)} false alarms per test-run to the level rule, the creep rule "
        f"{pct(min(creep_added))} to {pct(max(creep_added))}; at {pct(worst)} a matrix of 20 clean tests would "
        f"raise an Otava false alarm in {1 - (1 - worst) ** 20:.0%} of its runs. On clean histories of {KEEP + 1} runs Otava reports "
        f"some change point in {pct(min(any_cp))} to {pct(max(any_cp))} of them, against a nominal "
        f"{pct(defaults['max_pvalue'])}: its t-test is run on the split that e-divisive chose as the best of all "
        "positions (and with the segments' population spreads), so `max_pvalue` does not bound how often a clean "
        f"series splits. Tuning does not buy both: at {fastest['name']} it fails at a median save of "
        f"{', '.join(str(r['detection']['median_save']) for r in fastest['rows'])} but adds up to "
        f"{pct(max(r['aa']['added'] for r in fastest['rows']))} false alarms per test-run; at {strict['name']} it "
        f"still adds up to {pct(max(r['aa']['added'] for r in strict['rows']))} and catches "
        f"{min(r['detection']['caught'] for r in strict['rows']):.0%} of the series at the widest spread.",
        "",
    ]
    if keep:
        lines.append(
            "*So we keep the creep rule.* A gate needs a verdict on this run with a false-alarm rate that alpha bounds "
            "and that a matrix can add up; the creep rule has one (anchor, successive-difference spread, Student's t "
            "at alpha, Kendall's trend), costs a few lines of the statistics the gate already uses, and says in its "
            "message how far the run crept from the anchor. Otava answers another question well, *where* a long "
            f"series stepped; on the {KEEP} runs a history keeps it is at most a save sooner, at the price of {more}. "
            f"As a dependency it would also pin this project's numpy and scipy ({pins}) and bring its own clients "
            "(BigQuery, Postgres, Slack, ...)."
        )
    else:
        lines.append(
            "*These numbers no longer favour the creep rule over Otava everywhere*: weigh the detection and false "
            "alarms above before keeping it."
        )
    return lines


def render(data: dict[str, object]) -> str:
    sim = data["simulation"]
    lines = [
        "# Creeping regressions",
        "",
        f"Generated by `{OTAVA_COMMAND}` (simulation and Otava; `--real` adds the fire-drill series) from "
        "`docs/creep.json`. A technique slows by "
        f"{sim['step']:.0%} per save; every passing run is saved (`--diffaccel-save=all`), after {CALIBRATE} clean "
        "runs; "
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
    lines += render_otava(data.get("otava"), sim)
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
    parser.add_argument("--otava", action="store_true", help="also judge the simulated series with Apache Otava")
    parser.add_argument("--otava-python", help="an interpreter that can import otava (its own venv), when this can't")
    parser.add_argument("--otava-worker", nargs=2, type=Path, metavar=("SERIES", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "creep.json")
    args = parser.parse_args(argv)
    if args.otava_worker:
        otava_worker(*args.otava_worker)
        return 0
    sim, series = simulate(args.draws, args.seed)
    data: dict[str, object] = {"simulation": sim}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.real:
        data["real"] = real(args.saves, args.calibrate)
    else:
        data["real"] = previous.get("real")
    # what Otava's results are compared with: the gate's verdicts on these series (and so the series themselves)
    digest = hashlib.sha256(json.dumps([[b["firsts"], b["aa_level"]] for b in series]).encode()).hexdigest()[:16]
    python = otava_python(args.otava_python) if args.otava else None
    if python:
        data["otava"] = {**otava(series, python, sim), "gate_digest": digest}
    else:
        if args.otava:
            print("otava: skipped: apache-otava is not importable here (it is no dependency of this project; "
                  "install it into a venv of its own and pass --otava-python VENV/bin/python)", file=sys.stderr)  # fmt: skip
        kept = previous.get("otava")
        # Otava's results stand only for the very series and gate verdicts they were compared with
        data["otava"] = kept if kept and kept.get("gate_digest") == digest else None
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
