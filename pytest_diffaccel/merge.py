"""Merge the JSON reports of the shards of one matrix (CI jobs, pytest-split groups) into one run's report.

    diffaccel merge shard-1.json shard-2.json -o all.json --markdown all.md --html all.html
    python -m pytest_diffaccel.merge ...          (the same, without the console script)

The result is still a pytest-benchmark file: ``benchmarks`` is the concatenation (a test id
measured by two shards is an error unless ``--prefer-last``); ``machine_info`` is the first
shard's, and every shard's machine and commit are kept under ``diffaccel.shards``. The merged run
is printed as one run's summary table (report/merged.py), and written as Markdown and HTML on request;
the exit status is 1 when any shard's test failed, so the merge job gates CI as one run would.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class MergeError(ValueError):
    pass


# What a field of an unexpected shape raises while a shard is rendered (a string where a number was, a
# list where an object was): named as the shard's fault, never a traceback.
SHAPE_ERRORS = (ArithmeticError, LookupError, TypeError, ValueError, AttributeError)


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
        shards.append(
            {
                "file": name,
                "tests": len(report["benchmarks"]),
                "machine_info": report["machine_info"],
                "commit_info": report["commit_info"],
            }
        )
        for bench in report["benchmarks"]:
            bench = {**bench, "extra_info": {**bench.get("extra_info", {}), "shard": Path(name).stem}}
            test_id = bench.get("fullname") or bench.get("name")
            if test_id in benchmarks and not prefer_last:
                raise MergeError(
                    f"{test_id} is in both {origin[test_id]} and {name}; pass --prefer-last to keep the later"
                )
            benchmarks[test_id] = bench
            origin[test_id] = name
        extra = report.get("diffaccel", {})
        skipped += [{**item, "shard": Path(name).stem} for item in extra.get("skipped", [])]
        failed += [{**item, "shard": Path(name).stem} for item in extra.get("failed", [])]
    merged["benchmarks"] = list(benchmarks.values())
    settings = sorted({str(r.get("diffaccel", {}).get("settings")) for _, r in reports if r.get("diffaccel")})
    merged["diffaccel"] = {"shards": shards, "skipped": skipped, "failed": failed, "settings": "; ".join(settings)}
    return merged


HELP = "merge the JSON reports of a sharded matrix into one run's report (terminal, JSON, Markdown, HTML)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reports", nargs="+", type=Path, help="the shards' --diffaccel-json files")
    parser.add_argument("-o", "--output", type=Path, help="write the merged JSON (pytest-benchmark's format) here")
    parser.add_argument("--markdown", type=Path, help="write the merged Markdown report here")
    parser.add_argument("--html", type=Path, help="write the merged HTML report here")
    parser.add_argument("--prefer-last", action="store_true", help="a test id in several shards: keep the last one")
    parser.set_defaults(run=run)


def read_shard(path: Path) -> dict[str, Any]:
    """A shard's JSON report, validated (validate.shard): MergeError naming the shard and what is wrong."""
    from . import validate

    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        validate.shard(data)
    except OSError as error:
        raise MergeError(f"{path}: can't be read ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError, JSONDecodeError and validate.Invalid
        raise MergeError(f"{path}: not a shard's --diffaccel-json report ({error}); rerun that shard") from None
    return dict(data)


def _culprit(reports: list[tuple[str, dict[str, Any]]], render: Callable[[Any], Any], error: Exception) -> MergeError:
    """The shard whose field ``render`` can't take, found by rendering each shard alone."""
    from .report.merged import merged_run

    for name, report in reports:
        try:
            render(merged_run(merge([(name, report)])))
        except SHAPE_ERRORS as alone:
            return MergeError(
                f"{name}: a field of the report has an unexpected shape ({type(alone).__name__}: {alone}); "
                "rerun that shard"
            )
    return MergeError(f"the shards can't be merged ({type(error).__name__}: {error})")


def _rendered(reports: list[tuple[str, dict[str, Any]]], merged: dict[str, Any]) -> Any:
    """The merged run (report/merged.py); a field of an unexpected shape is a MergeError naming the shard it
    came from, found by reading each shard alone."""
    from .report.merged import merged_run, terminal_lines

    try:
        run_ = merged_run(merged)
        return run_, terminal_lines(run_)
    except SHAPE_ERRORS as error:
        raise _culprit(reports, terminal_lines, error) from None


def _pages(args: argparse.Namespace, reports: list[tuple[str, dict[str, Any]]], merged: dict, run_: Any) -> list:
    """(path, text) of every report asked for, all rendered before any is written: a shard that breaks the
    Markdown or the HTML page is named, and nothing is left half written."""
    from .report.merged import render_html, render_markdown

    asked: list[tuple[Path | None, Callable[[Any], str]]] = [
        (args.output, lambda _: json.dumps(merged, indent=2) + "\n"),
        (args.markdown, render_markdown),
        (args.html, render_html),
    ]
    pages = []
    for path, render in asked:
        if path is None:
            continue
        try:
            pages.append((path, render(run_)))
        except SHAPE_ERRORS as error:
            raise _culprit(reports, render, error) from None
    return pages


def _html_modules_missing(args: argparse.Namespace) -> None:
    if args.html is None:
        return
    from .report import html_modules_missing

    missing = html_modules_missing()
    if missing:
        raise MergeError(
            f"--html {args.html}: the HTML report needs {' and '.join(missing)}, which the plugin's base install "
            "does not bring: pip install 'pytest-diffaccel[html]' (nothing was written)"
        )


def run(args: argparse.Namespace) -> int:
    from .atomic import write_atomic
    from .report.merged import failed

    try:
        _html_modules_missing(args)
        loaded = [(str(path), read_shard(path)) for path in args.reports]
        merged = merge(loaded, prefer_last=args.prefer_last)
        run_, lines = _rendered(loaded, merged)
        pages = _pages(args, loaded, merged, run_)
    except MergeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    for path, text in pages:
        try:
            write_atomic(path, text)
        except OSError as error:
            print(
                f"error: {path}: can't be written ({error.strerror or error}); the reports before it were written",
                file=sys.stderr,
            )
            return 2
        print(f"report: {path}")
    return 1 if failed(run_.results) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_diffaccel.merge", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
