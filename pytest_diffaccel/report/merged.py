"""The shards of one matrix read back as one run: their merged JSON as the terminal table and the Markdown report.

A sharded matrix (a CI matrix of jobs, or pytest-split) writes one ``--diffaccel-json`` per shard; each shard
judged its own tests against the shared history. ``diffaccel merge`` folds the files into one (merge.py) and
renders it with the same table and the same Markdown as a single run: the rows are rebuilt from each
benchmark's ``extra_info`` (every figure a row shows is there), so the two can't drift apart. Pure: no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import table


@dataclass(frozen=True)
class ShardGate:
    name: str
    passed: bool
    message: str
    judged: bool = True


@dataclass(frozen=True)
class ShardLatency:
    ratio: float
    history_runs: int
    detectable: float
    blocks: tuple[float, ...]


@dataclass(frozen=True)
class ShardVerdict:
    gates: tuple[ShardGate, ...]
    latency: ShardLatency | None

    @property
    def failures(self) -> list[ShardGate]:
        return [g for g in self.gates if g.judged and not g.passed]

    @property
    def failed(self) -> bool:
        return bool(self.failures)


@dataclass(frozen=True)
class ShardResult:
    """One test of one shard, with the attributes the table and the Markdown report read from a Result."""

    test_id: str
    technique: str
    outcome: str  # "passed", "failed", "skipped"
    headline: str
    shard: str
    median: float | None = None
    speedup: float | None = None
    ssim: float | None = None
    peak_memory: int | None = None
    effect_line: str = ""
    baseline_note: str = ""
    reason: str = ""
    verdict: ShardVerdict | None = None
    chart: Any = None  # the history chart's data (report/series.SeriesView), when the shard judged one

    @property
    def measured(self) -> bool:
        return self.median is not None

    @property
    def failed(self) -> bool:
        return self.outcome == "failed" or bool(self.verdict and self.verdict.failed)


def _latency(baseline: Mapping[str, Any]) -> ShardLatency | None:
    if baseline.get("ratio") is None:
        return None
    return ShardLatency(
        ratio=float(baseline["ratio"]),
        history_runs=int(baseline.get("history_runs") or 0),
        detectable=float(baseline.get("detectable") or 0.0),
        blocks=tuple(baseline.get("blocks") or ()),
    )


def result_of(bench: Mapping[str, Any], shard: str) -> ShardResult:
    """A measured test of a shard's JSON report as a row."""
    extra = bench.get("extra_info", {})
    gates = tuple(
        ShardGate(str(g["gate"]), bool(g["passed"]), str(g.get("message", "")), bool(g.get("judged", True)))
        for g in extra.get("gates", [])
    )
    baseline = extra.get("baseline") or {}
    verdict = ShardVerdict(gates, _latency(baseline))
    headline = str(extra.get("verdict", "pass"))
    return ShardResult(
        test_id=str(bench.get("fullname") or bench.get("name")),
        technique=str(extra.get("technique", bench.get("param", "?"))),
        outcome="failed" if verdict.failed else "passed",
        headline=headline,
        shard=shard,
        median=(bench.get("stats") or {}).get("median"),
        speedup=extra.get("speedup"),
        ssim=extra.get("ssim"),
        peak_memory=extra.get("peak_memory"),
        effect_line=str(extra.get("effect") or ""),
        baseline_note=str(baseline.get("note") or ""),
        verdict=verdict,
        chart=_chart(baseline, extra, bench.get("stats") or {}),
    )


def _chart(baseline: Mapping[str, Any], extra: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """The history chart a single run's HTML report draws for this test, from what its JSON entry holds."""
    series = baseline.get("series")
    if not series or baseline.get("max_slowdown") is None:
        return None
    from .series import annotation_of, series_points

    figure = str(baseline.get("judged_on") or "ratio")
    ratio = figure == "ratio"
    rounds = list(extra.get("relative_samples") or []) if ratio else list(stats.get("data") or [])
    blocks = [b.get("ratio" if ratio else "median") for b in extra.get("blocks") or []]
    annotation = None
    if baseline.get("ratio") is not None:
        annotation = annotation_of(
            str(baseline.get("reason") or ""), float(baseline["ratio"]), bool(baseline.get("undecided"))
        )
    return series_points(
        series,
        figure=figure,
        title=str(extra.get("technique", "")),
        blocks=[float(b) for b in blocks if isinstance(b, (int, float)) and b > 0],
        rounds=[float(r) for r in rounds],
        max_slowdown=float(baseline["max_slowdown"]),
        failed=bool(baseline.get("regression")),
        annotation=annotation,
    )


@dataclass
class MergedRun:
    """What the renderers read: the rows (every shard's, in test order), the shards, the model and settings."""

    results: list[ShardResult]
    shards: list[dict[str, Any]]
    model: str
    device: str
    machines: list[str]
    settings: str
    environments: list[str] = field(default_factory=list)


def merged_run(merged: Mapping[str, Any]) -> MergedRun:
    """The merged JSON (merge.merge) as one run's rows."""
    extra = merged.get("diffaccel", {})
    shards = list(extra.get("shards", []))
    results = [
        result_of(bench, str(bench.get("extra_info", {}).get("shard", ""))) for bench in merged.get("benchmarks", [])
    ]
    for outcome, key in (("skipped", "skipped"), ("failed", "failed")):
        for item in extra.get(key, []):
            results.append(
                ShardResult(
                    test_id=str(item.get("test")),
                    technique=str(item.get("technique")),
                    outcome=outcome,
                    headline="skipped" if outcome == "skipped" else "FAIL",
                    shard=str(item.get("shard", "")),
                    reason=str(item.get("reason", "")),
                )
            )
    results.sort(key=lambda r: r.test_id)
    infos = [s.get("machine_info", {}).get("diffaccel", {}) for s in shards]
    environments = sorted(
        {
            f"{(i.get('environment') or {}).get('hash', '?')} ({i.get('machine_key', '?')})"
            for i in infos
            if i.get("environment")
        }
    )
    return MergedRun(
        results=results,
        shards=shards,
        model=", ".join(sorted({str(i.get("model")) for i in infos if i.get("model")})) or "?",
        device=", ".join(sorted({str(i.get("device")) for i in infos if i.get("device")})) or "?",
        machines=sorted({str(i.get("machine_key")) for i in infos if i.get("machine_key")}),
        settings=str(extra.get("settings") or ""),
        environments=environments,
    )


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def terminal_lines(run: MergedRun) -> list[str]:
    """The table and what failed, as a single run's summary shows them, headed by the shards."""
    lines = [
        f"diffaccel: {len(run.shards)} shards merged: model {run.model} on {run.device} "
        f"(baselines: {', '.join(run.machines) or '?'})"
    ]
    lines += [f"  shard {s.get('file')}: {s.get('tests', '?')} tests" for s in run.shards]
    if run.environments:
        lines.append(f"environments: {', '.join(run.environments)}")
    lines += table.plain_lines(run.results)
    skipped = [r for r in run.results if r.outcome == "skipped"]
    if skipped:
        lines.append("skipped:")
        lines += [f"  {r.technique}: {r.reason.removeprefix(r.technique + ': ')}" for r in skipped]
    failed = [r for r in run.results if r.failed]
    if failed:
        lines.append("failed:")
        for r in failed:
            gate = r.verdict.failures[0] if r.verdict and r.verdict.failures else None
            lines.append(f"  {r.technique}: {gate.name + ': ' + gate.message if gate else r.reason}")
    passed = sum(1 for r in run.results if r.outcome == "passed")
    lines.append(f"{passed} passed, {len(failed)} failed, {len(skipped)} skipped across {len(run.shards)} shards")
    return lines


def render_markdown(run: MergedRun) -> str:
    """The Markdown report of a single run (report/markdown.py), for the merged shards."""
    from types import SimpleNamespace

    from .markdown import render_markdown as single

    state = SimpleNamespace(
        results=run.results,
        info=SimpleNamespace(label=run.model),
        device=run.device,
        machine=", ".join(run.machines) or "?",
        settings=SimpleNamespace(describe=lambda: f"{run.settings}; {len(run.shards)} shards merged"),
        search=None,
    )
    return single(state)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child, td:last-child, th:last-child { text-align: left; }
.pass { color: #1e8449; } .fail { color: #c0392b; font-weight: bold; } .skip { color: #b7950b; }
.small { color: #666; font-size: 0.85em; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="small">{{ shards|length }} shards merged:
{% for s in shards %}{{ s.file }} ({{ s.tests }} tests){% if not loop.last %}, {% endif %}{% endfor %}.
Environments: {{ environments|join(", ") or "-" }}. {{ settings }}</p>
<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}<th>shard</th></tr>
{% for r, cells in rows %}<tr>{% for c in cells %}<td{% if loop.last %} class="{{ status(r) }}"{% endif %}>{{ c }}</td>
{% endfor %}<td class="small">{{ r.shard }}</td></tr>
{% endfor %}</table>
{% if chart %}<h2>Speed-up vs fp32</h2><img alt="speed-up vs fp32 of every technique" src="{{ chart }}">{% endif %}
{% if histories %}<h2>Histories</h2>{% for r, uri, text in histories %}<figure><img alt="history of {{ r.technique }}"
 src="{{ uri }}"><figcaption class="small">{{ r.shard }}: {{ text }}</figcaption></figure>{% endfor %}{% endif %}
{% if failed %}<h2>Failures</h2><ul>{% for r in failed %}<li class="fail">{{ r.technique }}:
{% if r.verdict and r.verdict.failures %}{{ r.verdict.failures[0].name }}: {{ r.verdict.failures[0].message }}
{% else %}{{ r.reason }}{% endif %}</li>{% endfor %}</ul>{% endif %}
{% if skipped %}<h2>Skipped</h2><ul>{% for r in skipped %}<li>{{ r.technique }}: {{ r.reason }}</li>{% endfor %}</ul>
{% endif %}
</body></html>
"""


def render_html(run: MergedRun) -> str:
    """One self-contained page: the merged table, the speed-up chart, each judged test's history chart (as a
    single run's report draws it), what failed and was skipped."""
    import jinja2

    from .html import _speedup_chart
    from .series import caption, chart_uri

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(PAGE).render(
        title=f"diffaccel: {run.model} on {run.device}, {len(run.shards)} shards",
        shards=run.shards,
        environments=run.environments,
        settings=run.settings,
        columns=table.COLUMNS,
        rows=[(r, table.row(r)) for r in run.results],
        status=lambda r: "skip" if r.outcome == "skipped" else "fail" if r.failed else "pass",
        chart=_speedup_chart(run.results),
        histories=[(r, chart_uri(r.chart), caption(r.chart)) for r in run.results if r.chart is not None],
        failed=[r for r in run.results if r.failed],
        skipped=[r for r in run.results if r.outcome == "skipped"],
    )


def failed(results: Sequence[ShardResult]) -> bool:
    return any(r.failed for r in results)
