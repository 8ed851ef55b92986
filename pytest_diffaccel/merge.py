"""Merge the JSON reports of several shards (machines, or runs) into one.

    python -m pytest_diffaccel.merge shard1.json shard2.json -o all.json

The result is still a pytest-benchmark file: ``benchmarks`` is the concatenation (a test id
measured by two shards is an error unless ``--prefer-last``); ``machine_info`` is the first
shard's, and every shard's machine and commit are kept under ``diffaccel.shards``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


class MergeError(ValueError):
    pass


def merge(reports: list[tuple[str, dict[str, Any]]], prefer_last: bool = False) -> dict[str, Any]:
    if not reports:
        raise MergeError("no report to merge")
    merged: dict[str, Any] = {}
    benchmarks: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    shards = []
    skipped: list[Any] = []
    failed: list[Any] = []
    for name, report in reports:
        for key in ("machine_info", "commit_info", "benchmarks"):
            if key not in report:
                raise MergeError(f"{name}: not a pytest-benchmark JSON report (no {key!r})")
        if not merged:
            merged = {k: v for k, v in report.items() if k not in ("benchmarks", "diffaccel")}
        shards.append({"file": name, "machine_info": report["machine_info"], "commit_info": report["commit_info"]})
        for bench in report["benchmarks"]:
            test_id = bench.get("fullname") or bench.get("name")
            if test_id in benchmarks and not prefer_last:
                raise MergeError(
                    f"{test_id} is in both {origin[test_id]} and {name}; pass --prefer-last to keep the later"
                )
            benchmarks[test_id] = bench
            origin[test_id] = name
        extra = report.get("diffaccel", {})
        skipped += extra.get("skipped", [])
        failed += extra.get("failed", [])
    merged["benchmarks"] = list(benchmarks.values())
    merged["diffaccel"] = {"shards": shards, "skipped": skipped, "failed": failed}
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_diffaccel.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--prefer-last", action="store_true", help="a test id in several shards: keep the last one")
    args = parser.parse_args(argv)
    try:
        loaded = []
        for path in args.reports:
            try:
                loaded.append((str(path), json.loads(path.read_text())))
            except (OSError, json.JSONDecodeError) as error:
                raise MergeError(f"{path}: can't be read as JSON ({error})") from None
        merged = merge(loaded, prefer_last=args.prefer_last)
    except MergeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from .baselines import write_atomic

    write_atomic(args.output, json.dumps(merged, indent=2) + "\n")
    print(f"merged {len(merged['benchmarks'])} benchmarks from {len(args.reports)} reports into {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
