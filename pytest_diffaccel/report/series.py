"""A test's history as a series: the chart of the HTML report and of ``diffaccel history``.

One chart, two places. Each judged technique's section of the HTML report (html.py) shows its
history: one point per saved run (oldest first), its levels (a new level starts after an accepted
change), the band the latency gate accepts (the newest level's mean up to max-slowdown above it) and
this run's blocks as the last position, red with the ratio written beside them when the gate failed:
where the series broke. ``diffaccel history PATH_OR_URL`` prints the stored histories as tables, one
per environment, like ``pytest-benchmark compare``, and draws the same charts into an HTML or PNG file
(history_command.py).

What a chart shows is decided by ``series_points`` (pure, tested without pixels); ``draw`` puts it on a
matplotlib axis (Agg, imported when drawing).
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import stats
from ..units import fmt_ratio, fmt_seconds

DEFAULT_MAX_SLOWDOWN = 0.10  # the plugin's default: the band of a stored history, when no run says otherwise
SIZE = (4.5, 1.8)  # inches, one chart
DPI = 110
FIGURES = {
    "auto": "",
    "ratio": "ratio",
    "seconds": "median",
    "compile": "compile_seconds",
    "cold-start": "cold_start_seconds",
}
AXIS = {"ratio": "x fp32", "median": "seconds", "compile_seconds": "compile s", "cold_start_seconds": "cold start s"}
BLUE, RED, ORANGE, GREY, GREEN = "#2e86c1", "#c0392b", "#e67e22", "#7f8c8d", "#27ae60"


# ----------------------------------------------------------------------------- what a chart shows (pure)


@dataclass(frozen=True)
class Point:
    x: int  # position: saved runs 0..n-1, this run n
    value: float  # the judged figure: ratio to the fp32 reference, or seconds
    level: int  # 1, 2, ... in the order the series shows them; 0 for this run's blocks
    recorded: str | None
    now: bool = False  # one of this run's blocks
    beyond: bool = False  # above the band the gate accepts
    failed: bool = False  # this run failed the latency gate: where the series broke


@dataclass(frozen=True)
class Level:
    number: int  # 1-based
    first: int  # x of its first and last run
    last: int
    mean: float  # geometric, as the gate's (the mean of the logs)


@dataclass(frozen=True)
class Band:
    """What the latency gate accepts: from the newest level's mean up to max-slowdown above it."""

    low: float
    high: float
    max_slowdown: float
    first: int  # x span: the newest level's first run to the last position (this run, when there is one)
    last: int


@dataclass(frozen=True)
class SeriesView:
    title: str
    figure: str  # "ratio", "median", "compile_seconds", "cold_start_seconds"
    points: tuple[Point, ...]
    levels: tuple[Level, ...]
    band: Band | None
    ticks: tuple[tuple[int, str], ...]  # x and its label (a date or time; "now" for this run)
    rounds: tuple[float, ...] = ()  # this run's rounds, drawn faint behind its blocks
    annotation: str | None = None  # beside this run's points when they broke the series or left the band

    @property
    def runs(self) -> tuple[Point, ...]:
        return tuple(p for p in self.points if not p.now)

    @property
    def now(self) -> tuple[Point, ...]:
        return tuple(p for p in self.points if p.now)

    @property
    def failed(self) -> bool:
        return any(p.failed for p in self.points)

    @property
    def limits(self) -> tuple[float, float] | None:
        """The y range: every point and the band, with a margin; this run's rounds are drawn only inside it
        (one disturbed round must not flatten the series)."""
        values = [p.value for p in self.points] + ([self.band.low, self.band.high] if self.band else [])
        if not values:
            return None
        low, high = min(values), max(values)
        pad = (high - low) * 0.12 or low * 0.02 or 1.0
        return low - pad, high + pad

    @property
    def broke_at(self) -> int | None:
        """The position where the series broke (this run's, when it failed the latency gate)."""
        return next((p.x for p in self.points if p.failed), None)


def levels_of(series: Sequence[Mapping[str, Any]]) -> list[Level]:
    """Consecutive runs of one stored level, numbered 1, 2, ... (the oldest kept level is 1)."""
    found: list[Level] = []
    start = 0
    for index in range(1, len(series) + 1):
        if index == len(series) or series[index].get("level", 0) != series[start].get("level", 0):
            values = [float(s["value"]) for s in series[start:index]]
            found.append(Level(len(found) + 1, start, index - 1, stats.geometric_mean(values)))
            start = index
    return found


def tick_labels(recorded: Sequence[str | None], firsts: set[int]) -> list[str]:
    """A label for the first run of each level and the newest run: the date (month-day), or the time when
    every run was recorded on one day, finer where two labels would read alike; "" elsewhere, and "run N"
    where no time was recorded."""
    times = [_parse_time(r) for r in recorded]
    shown = [i for i in range(len(times)) if i in firsts or i == len(times) - 1]
    one_day = len({t.date() for t in times if t is not None}) <= 1
    labels: dict[int, str] = {}
    for pattern in ("%H:%M", "%H:%M:%S") if one_day else ("%m-%d", "%m-%d %H:%M"):
        labels = {i: _label(times[i], i, pattern) for i in shown}
        if len(set(labels.values())) == len(labels):
            break  # every label shown tells its run apart
    return [labels.get(i, "") for i in range(len(times))]


def _label(when: _dt.datetime | None, index: int, pattern: str) -> str:
    return f"run {index + 1}" if when is None else when.strftime(pattern)


def _parse_time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:
        return _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None


def series_points(
    series: Sequence[Mapping[str, Any]],
    *,
    figure: str,
    title: str = "",
    blocks: Sequence[float] = (),
    rounds: Sequence[float] = (),
    max_slowdown: float | None = DEFAULT_MAX_SLOWDOWN,
    failed: bool = False,
    annotation: str | None = None,
) -> SeriesView:
    """What the chart of a history shows. ``series``: the saved runs, oldest first ({value, level,
    recorded}: results.series_of); ``blocks``: this run's block estimates of the same figure (none for a
    stored history alone), drawn at the last position; ``failed``: this run failed the latency gate,
    so its points are where the series broke; ``annotation``: the ratio written beside them (by default
    their center over the level's mean, shown when they failed or left the band)."""
    levels = levels_of(series)
    now_x = len(series)
    band = None
    if levels and max_slowdown is not None:
        newest = levels[-1]
        last = now_x if blocks else now_x - 1
        band = Band(newest.mean, newest.mean * (1.0 + max_slowdown), max_slowdown, newest.first, last)
    number = {level.first + i: level.number for level in levels for i in range(level.last - level.first + 1)}
    points = [
        Point(x, float(run["value"]), number[x], run.get("recorded"), beyond=_beyond(band, float(run["value"]), x))
        for x, run in enumerate(series)
    ]
    for value in blocks:
        points.append(Point(now_x, float(value), 0, None, True, _beyond(band, value, now_x), failed))
    beyond = any(p.beyond for p in points if p.now)
    if annotation is None and blocks and levels and (failed or beyond):
        annotation = f"{_center(blocks) / levels[-1].mean:.2f}x"
    labels = tick_labels([s.get("recorded") for s in series], {level.first for level in levels})
    ticks = [(x, label) for x, label in enumerate(labels)] + ([(now_x, "now")] if blocks else [])
    return SeriesView(
        title=title,
        figure=figure,
        points=tuple(points),
        levels=tuple(levels),
        band=band,
        ticks=tuple(ticks),
        rounds=tuple(float(r) for r in rounds) if blocks else (),
        annotation=annotation if blocks and (failed or beyond) else None,
    )


def _beyond(band: Band | None, value: float, x: int) -> bool:
    return band is not None and band.first <= x <= band.last and value > band.high


def _center(values: Sequence[float]) -> float:
    """The blocks' combined estimate as the gate takes it: their geometric mean, their median with three."""
    return stats.geometric_mean(values) if len(values) <= 2 else stats.median(values)


def view_of_result(result: Any) -> SeriesView | None:
    """The chart of a judged technique: its stored series, this run's blocks and rounds, the verdict's band.
    None without a history (nothing to draw a series of)."""
    if not result.series or not result.samples:
        return None
    ratio = result.figure == "ratio"
    rounds = list(result.relative_samples if ratio else result.samples)
    blocks = [b.get("ratio" if ratio else "median") for b in result.blocks]
    blocks = [float(b) for b in blocks if isinstance(b, (int, float)) and b > 0] or (
        [stats.median(rounds)] if rounds else []
    )
    latency = result.verdict.latency if result.verdict is not None else None
    failed = bool(latency is not None and latency.regression)
    annotation = None if latency is None else annotation_of(latency.reason, latency.ratio, latency.undecided)
    return series_points(
        result.series,
        figure=result.figure,
        title=result.technique,
        blocks=blocks,
        rounds=rounds,
        max_slowdown=latency.max_slowdown if latency is not None else None,
        failed=failed,
        annotation=annotation,
    )


def annotation_of(reason: str, ratio: float, undecided: bool) -> str:
    """What is written beside this run's points: the creep's words, or the ratio; undecided said so."""
    text = reason.split(" (")[0] if reason.startswith("crept") else fmt_ratio(ratio)
    return text + (", undecided" if undecided else "")


def caption(view: SeriesView) -> str:
    """One sentence under the chart: what its parts are."""
    runs = len(view.runs)
    parts = [
        f"history of {view.title}: {runs} saved run{'s' if runs != 1 else ''}"
        f" in {len(view.levels)} level{'s' if len(view.levels) != 1 else ''} ({_FIGURE_WORDS[view.figure]})"
    ]
    if view.band is not None:
        parts.append(f"green: the band the gate accepts, the newest level's mean up to +{view.band.max_slowdown:.0%}")
    if view.now:
        blocks = len(view.now)
        state = "failed the latency gate" if view.failed else "beyond the band" if view.annotation else "in the band"
        parts.append(f"'now': this run's {blocks} block{'s' if blocks != 1 else ''} ({state})")
    return "; ".join(parts)


_FIGURE_WORDS = {
    "ratio": "latency over the interleaved fp32 reference",
    "median": "seconds per call",
    "compile_seconds": "compile seconds",
    "cold_start_seconds": "cold-start seconds",
}


# ----------------------------------------------------------------------------- drawing (matplotlib, Agg)


def plain(text: object) -> str:
    """``text`` as matplotlib draws it literally: each ``$`` escaped, so that a test id or a technique name
    holding ``$...$`` is never parsed as TeX (mathtext raises on what it can't parse, and the chart, the
    HTML report and ``diffaccel history --chart`` with it). An escaped ``\\$`` already there stays literal."""
    return str(text).replace("$", r"\$")


def _formatter(figure: str) -> Callable[[float, Any], str]:
    if figure == "ratio":
        return lambda value, _: f"{value:.2f}x"
    return lambda value, _: fmt_seconds(value) if value > 0 else ""


def draw(axis: Any, view: SeriesView) -> None:
    """The chart of ``view`` on a matplotlib axis: shared by the HTML report and ``diffaccel history``."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    several = len(view.levels) > 1
    for level in view.levels:
        if several and level.number % 2 == 0:
            axis.axvspan(level.first - 0.5, level.last + 0.5, color="#e8edf2", lw=0, zorder=0)
        axis.hlines(level.mean, level.first - 0.4, level.last + 0.4, color=GREY, lw=0.8, zorder=1)
        if several:
            axis.text(
                level.first - 0.45, 0.97, f"level {level.number}", transform=axis.get_xaxis_transform(),
                va="top", ha="left", fontsize=6.5, color="#555555",
            )  # fmt: skip
        xs = [p.x for p in view.runs if level.first <= p.x <= level.last]
        ys = [p.value for p in view.runs if level.first <= p.x <= level.last]
        axis.plot(xs, ys, "-o", color=BLUE, ms=3.5, lw=1.0, zorder=3)
    band = view.band
    if band is not None:
        span = [band.first - 0.5, band.last + 0.5]
        axis.fill_between(span, band.low, band.high, color=GREEN, alpha=0.15, lw=0, zorder=0)
        axis.hlines(band.high, *span, color=RED, lw=0.8, linestyles="--", zorder=1)
        axis.annotate(
            f"+{band.max_slowdown:.0%}", (span[1], band.high), xytext=(2, 0), textcoords="offset points",
            va="center", ha="left", fontsize=6.5, color=RED,
        )  # fmt: skip
    now = view.now
    if now:
        x = now[0].x
        if view.rounds:
            offsets = [((i * 0.618) % 1.0 - 0.5) * 0.3 for i in range(len(view.rounds))]
            axis.scatter([x + o for o in offsets], view.rounds, s=5, color=GREY, alpha=0.3, lw=0, zorder=2)
        colours = [RED if p.failed else ORANGE if p.beyond else BLUE for p in now]
        axis.scatter([x] * len(now), [p.value for p in now], s=26, color=colours, edgecolor="white", lw=0.6, zorder=4)
        if view.runs:
            last = view.runs[-1]
            center = _center([p.value for p in now])
            style = {"color": RED, "ls": "--"} if view.failed else {"color": BLUE, "ls": ":"}
            axis.plot([last.x, x], [last.value, center], lw=1.0, zorder=3, **style)
        if view.annotation:
            top = max(p.value for p in now)
            axis.annotate(
                plain(view.annotation), (x, top), xytext=(-7, 0), textcoords="offset points", ha="right", va="center",
                fontsize=7, color=RED if view.failed else ORANGE, fontweight="bold",
            )  # fmt: skip
    if view.limits is not None:
        axis.set_ylim(*view.limits)
    positions = [x for x, _ in view.ticks]
    axis.set_xticks(positions, [plain(label) for _, label in view.ticks])
    axis.set_xlim(-0.6, (max(positions) if positions else 0) + 0.6)
    axis.yaxis.set_major_locator(MaxNLocator(4))
    axis.yaxis.set_major_formatter(FuncFormatter(_formatter(view.figure)))
    axis.tick_params(labelsize=7, length=2)
    axis.set_ylabel(AXIS.get(view.figure, view.figure), fontsize=7)
    axis.set_title(plain(view.title), fontsize=8, loc="left")
    axis.grid(axis="y", alpha=0.3)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png_bytes(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def chart_png(view: SeriesView) -> bytes:
    """One chart, about 4.5 x 1.8 inches, as PNG bytes."""
    plt = _pyplot()
    with plt.rc_context({"text.usetex": False}):  # labels are escaped for mathtext, not for a TeX install
        figure, axis = plt.subplots(figsize=SIZE)
        draw(axis, view)
        return _png_bytes(figure)


def chart_uri(view: SeriesView) -> str:
    return "data:image/png;base64," + base64.b64encode(chart_png(view)).decode("ascii")


def grid_png(views: Sequence[SeriesView], columns: int = 2) -> bytes:
    """Every chart in one PNG, ``columns`` to a row."""
    columns = max(1, min(columns, len(views)))
    rows = math.ceil(len(views) / columns)
    plt = _pyplot()
    with plt.rc_context({"text.usetex": False}):  # labels are escaped for mathtext, not for a TeX install
        figure, axes = plt.subplots(rows, columns, figsize=(SIZE[0] * columns, (SIZE[1] + 0.35) * rows), squeeze=False)
        for index, axis in enumerate(axes.flat):
            if index < len(views):
                draw(axis, views[index])
            else:
                axis.set_visible(False)
        figure.tight_layout()
        return _png_bytes(figure)


# ----------------------------------------------------------------------------- stored histories as rows (pure)
