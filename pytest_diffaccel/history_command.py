"""``diffaccel history PATH_OR_URL``: the stored histories as tables, one per environment, and as charts.

Like ``pytest-benchmark compare``: a row per test (figure, runs, levels, the newest level's mean, the
moderated run-to-run spread the gate uses, the last run and a sparkline), ``-k`` as pytest's, and
``--chart FILE.html|FILE.png`` draws the HTML report's charts (report/series.py) without running the suite.
Histories are read through store.py: a folder, a single file, or a shared store's URL.
"""

from __future__ import annotations

import argparse
import html
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import history, stats
from .report.series import (
    DEFAULT_MAX_SLOWDOWN,
    FIGURES,
    SeriesView,
    caption,
    chart_uri,
    grid_png,
    series_points,
)
from .results import series_of
from .units import fmt_seconds

SPARKS = "▁▂▃▄▅▆▇█"
NAMES = {figure: name for name, figure in FIGURES.items() if figure}  # as --figure names them
HELP = "print the stored run histories as tables (one per environment); --chart draws them into a file"


@dataclass(frozen=True)
class Row:
    test_id: str
    figure: str
    runs: int
    levels: int
    level_mean: float | None
    spread: history.Spread | None
    last: float | None
    series: tuple[dict[str, Any], ...]

    @property
    def last_vs_mean(self) -> float | None:
        return None if self.last is None or not self.level_mean else self.last / self.level_mean

    def cells(self, name: str) -> tuple[str, ...]:
        value = _value_text(self.figure)
        spread = (
            "-" if self.spread is None else f"{self.spread.sigma:.1%}" + (" assumed" if self.spread.assumed else "")
        )
        change = self.last_vs_mean
        return (
            name,
            NAMES.get(self.figure, self.figure) if self.runs else "-",
            str(self.runs),
            str(self.levels),
            value(self.level_mean),
            spread,
            value(self.last),
            "-" if change is None else f"{change - 1.0 + 0.0:+.1%}".replace("-0.0%", "+0.0%"),
            sparkline(self.series),
        )


COLUMNS = ("test", "figure", "runs", "levels", "level mean", "spread", "last run", "last vs mean", "series")


def _value_text(figure: str) -> Callable[[float | None], str]:
    def text(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.3f}x" if figure == "ratio" else fmt_seconds(value)

    return text


def sparkline(series: Sequence[Mapping[str, Any]]) -> str:
    """▁..█ from the series' lowest value to its highest, '|' where a new level starts."""
    values = [float(s["value"]) for s in series]
    if not values:
        return ""
    low, high = min(values), max(values)
    marks = []
    for index, value in enumerate(values):
        if index and series[index].get("level", 0) != series[index - 1].get("level", 0):
            marks.append("|")
        step = 0.5 if high - low <= 1e-12 * high else (value - low) / (high - low)
        marks.append(SPARKS[min(len(SPARKS) - 1, int(step * len(SPARKS)))])
    return "".join(marks)


def figure_of(records: Sequence[Mapping[str, Any]], wanted: str) -> str:
    """The figure to show: the one asked for, else the gate's (the ratio when the runs hold one, else seconds:
    fp32 and absolute mode)."""
    if wanted:
        return wanted
    return "ratio" if any(history.value(r, "ratio") is not None for r in records) else "median"


def _records(entry: Mapping[str, Any], figure: str) -> list[dict[str, Any]]:
    """The entry's runs; for compile and cold-start seconds only those of the newest run's compile-cache state
    (the gate compares warm with warm, cold with cold)."""
    records = history.runs_of(entry)
    if figure in ("compile_seconds", "cold_start_seconds"):
        holding = [r for r in records if history.value(r, figure) is not None]
        if holding:
            state = holding[-1].get("compile_cache")
            records = [r for r in records if r.get("compile_cache") == state]
    return records


def rows_of(entries: Mapping[str, Mapping[str, Any]], select: Callable[[str], bool], wanted: str = "") -> list[Row]:
    """One row per selected test of one environment's entries; the spread moderated toward the machine's
    typical spread over all of them, as the plugin's gate does."""
    machine: dict[str, history.Prior] = {}
    rows = []
    for test_id in sorted(entries):
        if not select(test_id):
            continue
        records = history.runs_of(entries[test_id])
        figure = figure_of(records, wanted)
        records = _records(entries[test_id], figure)
        groups = history.levels(records, figure)
        series = series_of(records, figure)
        if figure not in machine:
            machine[figure] = history.machine_spread(
                history.levels(_records(e, figure), figure) for e in entries.values()
            )
        rows.append(
            Row(
                test_id=test_id,
                figure=figure,
                runs=len(series),
                levels=len(groups),
                level_mean=math.exp(stats.mean(groups[-1])) if groups else None,
                spread=history.spread(groups, figure, machine[figure]) if groups else None,
                last=series[-1]["value"] if series else None,
                series=tuple(series),
            )
        )
    return rows


def short_names(test_ids: Sequence[str]) -> dict[str, str]:
    """Each test id without its file (``test_acceleration[fp32]``), unless two tests would share a name."""
    short = {t: t.rsplit("::", 1)[-1] for t in test_ids}
    return short if len(set(short.values())) == len(short) else {t: t for t in test_ids}


def table_lines(rows: Sequence[Row]) -> list[str]:
    names = short_names([r.test_id for r in rows])
    table = [COLUMNS, *(r.cells(names[r.test_id]) for r in rows)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(COLUMNS))]
    lines = []
    for index, cells in enumerate(table):
        text = "  ".join(
            c.ljust(w) if i in (0, 1, len(COLUMNS) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        lines.append(text.rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def heading(stored: Any) -> list[str]:
    """Which file or store, which machine key, which environment (its hash and its hardware in one line)."""
    from .fingerprint import describe_hardware

    environment = stored.environment
    if environment is None:
        where = "environment unknown (recorded before environment fingerprints: kept, never judged against)"
    else:
        where = f"environment {environment.get('hash', '?')}: {describe_hardware(environment.get('hardware') or {})}"
    return [f"{stored.label}", f"  machine {stored.machine}, {where}", *(f"  note: {n}" for n in stored.notes)]


def view_of_row(row: Row, max_slowdown: float, name: str) -> SeriesView:
    return series_points(row.series, figure=row.figure, title=name, max_slowdown=max_slowdown)


# ----------------------------------------------------------------------------- -k


def matcher(expression: str | None) -> Callable[[str], bool]:
    """pytest's ``-k`` for test ids: case-insensitive substrings joined by ``and``, ``or``, ``not`` and
    parentheses. ValueError names what is wrong with the expression."""
    if not expression or not expression.strip():
        return lambda _: True
    tokens = re.findall(r"\(|\)|[^\s()]+", expression)
    position = 0

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        token = peek()
        if token is None:
            raise ValueError("the expression ends too early")
        position += 1
        return token

    def either() -> Callable[[str], bool]:
        parts = [both()]
        while peek() == "or":
            take()
            parts.append(both())
        return lambda text: any(p(text) for p in parts)

    def both() -> Callable[[str], bool]:
        parts = [negated()]
        while peek() == "and":
            take()
            parts.append(negated())
        return lambda text: all(p(text) for p in parts)

    def negated() -> Callable[[str], bool]:
        if peek() == "not":
            take()
            inner = negated()
            return lambda text: not inner(text)
        token = take()
        if token == "(":
            inner = either()
            if take() != ")":
                raise ValueError("a '(' is not closed")
            return inner
        if token in (")", "and", "or"):
            raise ValueError(f"unexpected {token!r}")
        word = token.lower()
        return lambda text: word in text.lower()

    found = either()
    if position != len(tokens):
        raise ValueError(f"unexpected {tokens[position]!r}")
    return found


# ----------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("location", metavar="PATH_OR_URL", help="a baseline folder (or one of its files) or a store URL")
    add("-k", dest="keyword", metavar="EXPR", help="only tests whose id matches: words with and/or/not, as pytest's -k")
    add("--chart", metavar="FILE", type=Path, help="each test's chart into FILE.html (self-contained) or FILE.png")
    add("--figure", choices=sorted(FIGURES), default="auto", help="auto: the gate's (ratio to fp32; seconds for fp32)")
    add("--max-slowdown", metavar="PCT", type=_percent, default=DEFAULT_MAX_SLOWDOWN, help="the band (default 10%%)")
    parser.set_defaults(run=run)


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage (e.g. 10%)") from None
    if not 0 < value < 10:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (e.g. 10%)")
    return value


class HistoryError(Exception):
    """What the command can't do, in one line naming the thing."""


def read(location: str) -> list[Any]:
    """The stored histories at ``location``: a folder, one of its JSON files, or a store URL."""
    from .baselines import BaselineError
    from .store import is_url, open_store

    path = None if is_url(location) else Path(location)
    single = path is not None and path.is_file()
    try:
        found = open_store(path.parent if single and path is not None else location).histories()
    except BaselineError as error:
        raise HistoryError(str(error)) from None
    except (OSError, ImportError) as error:
        raise HistoryError(f"can't read the baselines at {location}: {error}") from None
    if single and path is not None:
        found = [h for h in found if Path(h.label).resolve() == path.resolve()]
    if not found:
        raise HistoryError(f"no baseline histories in {location}")
    return found


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except HistoryError as error:
        print(f"diffaccel history: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    try:
        select = matcher(args.keyword)
    except ValueError as error:
        raise HistoryError(f"-k {args.keyword!r}: {error}") from None
    chart = args.chart
    if chart is not None and chart.suffix.lower() not in (".html", ".png"):
        raise HistoryError(f"--chart {chart}: the file must end in .html or .png")
    stored = read(args.location)
    tables = [(s, rows_of(s.entries, select, FIGURES[args.figure])) for s in stored]
    tables = [(s, rows) for s, rows in tables if rows]
    if not tables:
        tests = sum(len(s.entries) for s in stored)
        raise HistoryError(f"no test of the {tests} in {args.location} matches -k {args.keyword!r}")
    for index, (s, rows) in enumerate(tables):
        if index:
            print()
        print("\n".join([*heading(s), *table_lines(rows)]))
    if chart is not None:
        written = write_charts(tables, chart, args.max_slowdown)
        print(f"\ncharts: {written} ({sum(len(rows) for _, rows in tables)} tests)")
    return 0


def _views(tables: Sequence[tuple[Any, Sequence[Row]]], max_slowdown: float) -> list[list[SeriesView]]:
    several = len(tables) > 1
    views = []
    for stored, rows in tables:
        names = short_names([r.test_id for r in rows])
        prefix = f"{stored.machine}: " if several else ""
        views.append([view_of_row(r, max_slowdown, prefix + names[r.test_id]) for r in rows if r.series])
    return views


def write_charts(tables: Sequence[tuple[Any, Sequence[Row]]], path: Path, max_slowdown: float) -> Path:
    """Each test's chart into ``path``: a self-contained HTML page (a table and its charts per environment),
    or one PNG grid."""
    from .atomic import write_atomic, write_atomic_bytes

    try:
        views = _views(tables, max_slowdown)
        if path.suffix.lower() == ".png":
            flat = [v for group in views for v in group]
            if not flat:
                raise HistoryError("no test holds a run to draw")
            data: bytes | str = grid_png(flat)
        else:
            data = chart_page(tables, views)
    except ImportError as error:
        raise HistoryError(f"--chart needs matplotlib ({error}): pip install 'pytest-diffaccel[html]'") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            write_atomic_bytes(path, data)
        else:
            write_atomic(path, data)
    except OSError as error:
        raise HistoryError(f"--chart {path}: can't write it ({error.strerror or error})") from None
    return path


def chart_page(tables: Sequence[tuple[Any, Sequence[Row]]], views: Sequence[Sequence[SeriesView]]) -> str:
    """A self-contained HTML page: per environment its heading, its table and one chart per test."""
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>diffaccel history</title>\n',
        "<style>body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f23}"
        "h2{font-size:17px;border-bottom:1px solid #ddd}pre{font-size:12px}"
        ".charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}"
        "figcaption{font-size:12px;color:#555;max-width:495px}</style>\n</head>\n<body>\n<h1>diffaccel history</h1>\n",
    ]
    for (stored, rows), group in zip(tables, views, strict=True):
        lines = heading(stored)
        parts.append(f'<section class="environment">\n<h2>{html.escape(lines[0])}</h2>\n')
        parts.append(
            f"<p>{html.escape(lines[1].strip())}</p>\n<pre>{html.escape(chr(10).join(table_lines(rows)))}</pre>\n"
        )
        parts.append('<div class="charts">\n')
        for view in group:
            parts.append(
                f'<figure><img alt="history of {html.escape(view.title)}" src="{chart_uri(view)}">'
                f"<figcaption>{html.escape(caption(view))}</figcaption></figure>\n"
            )
        parts.append("</div>\n</section>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)
