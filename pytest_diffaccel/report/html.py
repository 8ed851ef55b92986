"""The HTML report: one self-contained file (PNG data URIs), readable in ten seconds.

Per technique: the fp32 reference image, the technique's image and the SSIM map as a heat map,
side by side; its history as a series (one point per saved run, levels, the band the gate accepts, this
run's blocks; series.py), or this run's blocks and rounds when it has no history; the verdict with
the gate and numbers. Above them: the run's header and the speed-up vs fp32 of every technique
as a bar chart. Templating with Jinja2 (autoescape on: test ids, prompts and paths are escaped),
plots with matplotlib (Agg backend, no display).
"""

from __future__ import annotations

import base64
import io
import platform
from pathlib import Path
from typing import Any

from .. import stats
from ..baselines import cpu_model
from ..images import to_uint8
from ..units import fmt_bytes, fmt_seconds, fmt_speedup
from . import table

TEMPLATE = "report.html.j2"
THUMB = 192  # px: images are upscaled (nearest) to at least this for tiny presets


def _png(array: Any) -> str:
    """HxWx3 float in [0, 1] (or HxW uint8 RGB) -> PNG data URI."""
    from PIL import Image

    image = Image.fromarray(to_uint8(array))
    if max(image.size) < THUMB:
        factor = -(-THUMB // max(image.size))
        image = image.resize((image.size[0] * factor, image.size[1] * factor), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _heatmap(ssim_map: Any) -> str:
    """SSIM map in [-1, 1] -> a magma heat map PNG (dark: where the image drifted)."""
    import matplotlib
    import numpy as np

    colormap = matplotlib.colormaps["magma"]
    values = np.clip((np.asarray(ssim_map, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    return _png(colormap(values)[..., :3])


def _figure_uri(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _latency_plot(result: Any) -> str | None:
    """The run-level picture the latency verdict is taken on: each run of the history and each
    block of this run (its rounds faint behind it), on the judged figure, with the threshold."""
    if not result.samples:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ratio = result.figure == "ratio" and bool(result.relative_samples)
    rounds = result.relative_samples if ratio else result.samples
    blocks = [b["ratio"] if ratio else b["median"] for b in result.blocks if (b.get("ratio") if ratio else True)]
    rows = [("this run", blocks or [stats.median(rounds)], rounds)]
    if result.history:
        rows.insert(0, (f"history ({len(result.history)} runs)", result.history, []))
    figure, axis = plt.subplots(figsize=(4.2, 1.0 + 0.4 * len(rows)))
    for position, (_, values, faint) in enumerate(rows, 1):
        if faint:
            axis.scatter(faint, [position] * len(faint), s=8, alpha=0.25, color="#7f8c8d")
        axis.scatter(values, [position] * len(values), s=36, color="#2e86c1", zorder=3)
    if result.history and result.verdict is not None and result.verdict.latency is not None:
        limit = stats.geometric_mean(result.history) * (1.0 + result.verdict.latency.max_slowdown)
        axis.axvline(limit, color="#c0392b", linewidth=0.8, linestyle="--")
    axis.set_yticks(range(1, len(rows) + 1), [name for name, _, _ in rows])
    axis.set_ylim(0.5, len(rows) + 0.5)
    axis.set_xlabel("latency over the interleaved fp32 reference" if ratio else "seconds per call")
    axis.grid(axis="x", alpha=0.3)
    return _figure_uri(figure)


def _history_chart(result: Any) -> dict[str, str] | None:
    """The technique's history as a series (report/series.py: the chart ``diffaccel history`` draws too):
    one point per saved run, its levels, the band the gate accepts, this run's blocks; None without a history."""
    from . import series

    view = series.view_of_result(result)
    if view is None:
        return None
    return {"uri": series.chart_uri(view), "caption": series.caption(view), "broke": "broke" if view.failed else ""}


def _speedup_chart(results: list[Any]) -> str | None:
    measured = [r for r in results if r.speedup is not None]
    if not measured:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 0.6 + 0.32 * len(measured)))
    from .series import plain

    names = [r.technique for r in measured]
    values = [r.speedup for r in measured]
    colours = ["#c0392b" if r.failed else "#2e86c1" for r in measured]
    axis.barh(range(len(measured)), values, color=colours)
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.set_yticks(range(len(measured)), [plain(name) for name in names])
    axis.invert_yaxis()
    axis.set_xlabel("speed-up vs fp32 (red: failed)")
    for index, value in enumerate(values):
        axis.text(value, index, f" {value:.2f}x", va="center", fontsize=8)
    return _figure_uri(figure)


def _header(state: Any) -> list[tuple[str, str]]:
    versions = state.versions()
    call = state.call_for(state.settings, resolve=False)
    rows = [
        ("machine", f"{state.machine} ({platform.node()}, {platform.system()} {platform.release()})"),
        ("device", state.gpu_name() or f"CPU: {cpu_model()}"),
    ]
    driver = _driver()
    if driver:
        rows.append(("driver", driver))
    from .environment import environment_lines

    rows += [(f"environment{'' if i == 0 else ' history'}", line) for i, line in enumerate(environment_lines(state))]
    rows += [
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)),
        ("commit", _commit()),
        ("model", state.info.label),
        ("prompts", " | ".join(call.prompts)),
        ("seed, steps, size, batch", f"{call.seed}, {call.steps or 'pipeline default'}, "
         f"{'x'.join(map(str, call.size)) if call.size else 'pipeline default'}, {call.batch}"),
        ("settings", state.settings.describe()),
    ]  # fmt: skip
    return rows


def _driver() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return f"CUDA {torch.version.cuda}"
    except ImportError:
        pass
    return None


def _commit() -> str:
    try:
        from pytest_benchmark.utils import get_commit_info

        info = get_commit_info()
        return f"{info.get('id', '?')}{' (dirty)' if info.get('dirty') else ''} on {info.get('branch', '?')}"
    except Exception:
        return "unknown"


def _sections(results: list[Any]) -> list[dict[str, Any]]:
    from ..fidelity import ssim_maps

    sections = []
    for result in results:
        triples = []
        if result.images is not None and result.reference_images is not None:
            try:
                maps = ssim_maps(result.images, result.reference_images)
            except ValueError:
                maps = []
            base = getattr(result, "base_images", None)  # a base-vs-head job: the base's picture of the same seed
            for index, image in enumerate(result.images):
                triples.append(
                    {
                        "reference": _png(result.reference_images[index]),
                        "technique": _png(image),
                        "ssim_map": _heatmap(maps[index]) if index < len(maps) else None,
                        "base": _png(base[index]) if base is not None and index < len(base) else None,
                        "base_label": getattr(result, "base_label", ""),
                    }
                )
        gates = list(result.verdict.gates) if result.verdict else []
        chart = _history_chart(result)
        sections.append(
            {
                "result": result,
                "anchor": f"t{len(sections)}",
                "headline": result.headline,
                "status": "pass"
                if result.headline.startswith("pass")
                else "skip"
                if result.outcome == "skipped"
                else "fail",
                "triples": triples,
                "history_chart": chart,
                "latency_plot": None if chart else _latency_plot(result),  # this run alone, without a history
                "gates": gates,
                "median": fmt_seconds(result.median),
                "speedup": fmt_speedup(result.speedup),
                "peak": fmt_bytes(result.peak_memory),
                "compile": fmt_seconds(result.compile_seconds) if result.compile_seconds is not None else None,
                "syncs": None if result.syncs_per_step is None else f"{result.syncs_per_step:.1f}",
                "breakdown": ", ".join(f"{name} {fmt_seconds(value)}" for name, value in result.breakdown.items()),
            }
        )
    return sections


def render_html(state: Any) -> str:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_diffaccel.report", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    results = list(state.results)
    return environment.get_template(TEMPLATE).render(
        title=f"diffaccel: {state.info.label} on {state.device}",
        header=_header(state),
        columns=table.COLUMNS,
        rows=[(r, table.row(r)) for r in results],
        speedup_chart=_speedup_chart(results),
        sections=_sections(results),
        random_weights=state.info.random_weights,
        search=_search(state),
    )


def _search(state: Any) -> dict[str, Any] | None:
    """The search's front plot (latency vs SSIM, the recipe marked) and its log, when one ran."""
    result = getattr(state, "search", None)
    if result is None:
        return None
    from .front import front_plot

    return {"chosen": result.chosen, "plot": front_plot(result), "lines": result.lines(), "log": list(result.log)}


def write_html(state: Any, path: Path) -> Path:
    from ..baselines import write_atomic

    path = Path(path)
    write_atomic(path, render_html(state))
    return path
