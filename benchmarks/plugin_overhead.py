#!/usr/bin/env python3
"""What the installed plugin costs a suite that never uses it.

    python benchmarks/plugin_overhead.py              # 10 pairs of a 200-test plain suite (about 15 s)
    python benchmarks/plugin_overhead.py --pairs 20 --tests 500

The plugin loads (entry point ``pytest11``) in every pytest run of the environment. This script
writes a plain suite (no diffaccel fixture, option or marker) in a scratch folder and runs it in
pairs of fresh processes: once as installed, once with ``-p no:diffaccel``. The two runs of a pair
follow each other and their order alternates from pair to pair, so that a change of the machine's
load falls on both sides alike (paired, interleaved). Per run: wall time, CPU time (user + system,
from the child's rusage) and peak resident memory; per pair the ratios. The summary gives the
median of the per-pair ratios, and which heavy modules the run with the plugin imported.

Measure on an idle machine: another process on the cores moves single runs by tens of percent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("numpy", "torch", "diffusers", "scipy", "skimage")
HEAVY += tuple(f"pytest_diffaccel.{name}" for name in ("session", "results", "verdict", "fidelity"))
RECORDER = """
import json
import os
import sys

def pytest_sessionfinish(session):
    target = os.environ.get("PLUGIN_OVERHEAD_MODULES")
    if target:
        with open(target, "w") as handle:
            json.dump(sorted(sys.modules), handle)
"""


def write_suite(folder: Path, tests: int) -> None:
    folder.joinpath("test_plain.py").write_text(
        "\n".join(f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n" for i in range(tests))
    )
    folder.joinpath("conftest.py").write_text(RECORDER)


def run(folder: Path, plugin: bool, env: dict[str, str]) -> tuple[float, float, float]:
    """One pytest process: (wall seconds, CPU seconds, peak RSS in MiB)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if not plugin:
        command += ["-p", "no:diffaccel"]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"pytest exited {child.returncode}: {child.stderr.read().decode() if child.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--tests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plugin-overhead-") as scratch:
        folder = Path(scratch)
        write_suite(folder, args.tests)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("PLUGIN_OVERHEAD_MODULES", None)
        run(folder, True, env)  # warm the file cache and the bytecode of both sides
        run(folder, False, env)
        rows = []
        for pair in range(args.pairs):
            order = (True, False) if pair % 2 == 0 else (False, True)
            measured = {plugin: run(folder, plugin, env) for plugin in order}
            rows.append((measured[True], measured[False], "with first" if order[0] else "without first"))
        modules_file = folder / "modules.json"
        run(folder, True, {**env, "PLUGIN_OVERHEAD_MODULES": str(modules_file)})
        modules = set(json.loads(modules_file.read_text()))

    print(f"{args.tests}-test plain suite, {args.pairs} pairs, interleaved (order alternates)")
    print(f"{'pair':>4}  {'with s':>7}  {'without s':>9}  {'wall x':>6}  {'CPU with':>8}  {'CPU w/o':>7}  "
          f"{'CPU x':>5}  {'RSS +MiB':>8}  order")  # fmt: skip
    for number, (with_, without, order) in enumerate(rows, 1):
        print(
            f"{number:>4}  {with_[0]:7.3f}  {without[0]:9.3f}  {with_[0] / without[0]:6.3f}  {with_[1]:8.3f}  "
            f"{without[1]:7.3f}  {with_[1] / without[1]:5.3f}  {with_[2] - without[2]:8.1f}  {order}"
        )
    wall = statistics.median(w[0] / o[0] for w, o, _ in rows)
    cpu = statistics.median(w[1] / o[1] for w, o, _ in rows)
    rss = statistics.median(w[2] - o[2] for w, o, _ in rows)
    print(
        f"median with {statistics.median(w[0] for w, _, _ in rows):.3f} s, "
        f"without {statistics.median(o[0] for _, o, _ in rows):.3f} s; "
        f"median of pair ratios: wall {wall:.3f}x, CPU {cpu:.3f}x, RSS {rss:+.1f} MiB"
    )
    heavy = [name for name in HEAVY if name in modules or any(m.startswith(f"{name}.") for m in modules)]
    print("heavy modules imported with the plugin: " + (", ".join(heavy) if heavy else "none"))


if __name__ == "__main__":
    main()
