"""History you can see: the series chart of each judged technique (report/series.py), shared by the HTML
report and ``diffaccel history PATH_OR_URL``, which prints the stored histories as tables and draws the
charts into a file. What a chart shows is tested as data (``series_points``), the command on the
repository's real baselines and on small hand-made histories, and the report of a real pytest run in a
real headless browser."""

from __future__ import annotations

import base64
import io
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_diffaccel import cli, history, latency
from pytest_diffaccel import history_command as command
from pytest_diffaccel.report import series
from pytest_diffaccel.results import Result, series_of
from pytest_diffaccel.verdict import Gate, Verdict

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "baselines" / "cpu-intel-r-xeon-r-processor.json"
COMMITTED_TESTS = 23  # the tests of the committed Intel history (17 of the matrix, 6 quanto and gguf backends)
TEST = "examples/test_acceleration.py::test_acceleration"


def run(record: dict) -> dict:
    return {"level": 0, "recorded": "2026-12-01T12:00:00+00:00", "blocks": 1, **record}


def two_levels() -> list[dict]:
    """Three runs at 1.00x, an accepted change, four runs at 1.20x: the newest level is level 2."""
    values = [(1.00, 0), (1.01, 0), (0.99, 0), (1.20, 1), (1.21, 1), (1.19, 1), (1.20, 1)]
    return [
        run({"ratio": v, "median": 0.15 * v, "level": level, "recorded": f"2026-12-0{i + 1}T12:00:00+00:00"})
        for i, (v, level) in enumerate(values)
    ]


def judged(records: list[dict], blocks: list[float], max_slowdown: float = 0.10) -> Result:
    """A measured result judged by the real latency rule against ``records`` (the newest level)."""
    groups = history.levels(records, "ratio")
    judgement = latency.judge(
        [math.log(b) for b in blocks],
        groups[-1],
        history.spread(groups, "ratio", history.Prior(0.006, 4.0, 10)),
        max_slowdown=max_slowdown,
        alpha=0.0005,
        max_blocks=len(blocks),
    )
    gate = Gate("latency", not judgement.regression, judgement.reason)
    return Result(
        test_id=f"{TEST}[fuse-qkv]",
        technique="fuse-qkv",
        samples=[0.15 * b for b in blocks] * 3,
        relative_samples=blocks * 3,
        relative_kind="paired",
        blocks=[{"ratio": b, "median": 0.15 * b} for b in blocks],
        verdict=Verdict(gates=(gate,), latency=judgement),
        history=[math.exp(v) for v in groups[-1]],
        series=series_of(records, "ratio"),
    )


# ----------------------------------------------------------------------------- what the chart shows


def test_a_failing_run_is_where_the_series_broke_red_beyond_the_band_with_its_ratio():
    result = judged(two_levels(), [1.58, 1.56])
    assert result.verdict.latency.regression  # the real rule failed it: 1.31x slower
    view = series.view_of_result(result)
    assert view is not None
    assert [p.value for p in view.runs] == [1.00, 1.01, 0.99, 1.20, 1.21, 1.19, 1.20]  # one point per saved run
    assert [(lv.number, lv.first, lv.last) for lv in view.levels] == [(1, 0, 2), (2, 3, 6)]
    level = math.exp(sum(math.log(v) for v in (1.20, 1.21, 1.19, 1.20)) / 4)
    assert view.band is not None
    assert view.band.low == pytest.approx(level) and view.band.high == pytest.approx(level * 1.10)
    assert (view.band.first, view.band.last) == (3, 7)  # the newest level and this run, not level 1
    assert [(p.x, p.value, p.failed, p.beyond) for p in view.now] == [(7, 1.58, True, True), (7, 1.56, True, True)]
    assert view.failed and view.broke_at == 7
    assert not any(p.failed or p.beyond for p in view.runs)
    assert view.annotation == "1.31x slower"
    assert dict(view.ticks)[7] == "now" and dict(view.ticks)[3] == "12-04"  # a new level's first run is labelled
    assert "failed the latency gate" in series.caption(view)


def test_a_passing_run_sits_in_the_band_and_says_nothing():
    view = series.view_of_result(judged(two_levels(), [1.21]))
    assert view is not None and not view.failed and view.broke_at is None and view.annotation is None
    assert [(p.failed, p.beyond) for p in view.now] == [(False, False)]
    assert "in the band" in series.caption(view)
    disturbed = judged(two_levels(), [1.21])
    disturbed.relative_samples = [1.21, 1.20, 3.0, 0.3]
    outlier = series.view_of_result(disturbed)
    assert outlier is not None and max(outlier.rounds) == 3.0
    low, high = outlier.limits or (0, 0)
    assert 0.9 < low < 0.99 and 1.331 < high < 1.45  # the points and the band, not a stray round


def test_beyond_the_band_without_failing_is_flagged_not_failed():
    view = series.series_points(
        series_of(two_levels(), "ratio"), figure="ratio", title="t", blocks=[1.40], max_slowdown=0.10
    )
    assert [(p.beyond, p.failed) for p in view.now] == [(True, False)]
    assert not view.failed and view.annotation == "1.17x"


def test_a_creep_is_annotated_as_a_creep():
    result = judged(two_levels(), [1.21])
    import dataclasses

    crept = dataclasses.replace(
        result.verdict.latency, state="fail", regression=True, reason="crept: 1.24x slower than 5 saves ago (the...)"
    )
    result.verdict = Verdict(gates=(Gate("latency", False, crept.reason),), latency=crept)
    view = series.view_of_result(result)
    assert view is not None and view.failed and view.annotation == "crept: 1.24x slower than 5 saves ago"


def test_one_run_and_no_history():
    one = [run({"ratio": 1.1, "recorded": "2026-12-01T09:30:00+00:00"})]
    view = series.series_points(series_of(one, "ratio"), figure="ratio", title="t")
    assert [(lv.number, lv.first, lv.last) for lv in view.levels] == [(1, 0, 0)]
    assert view.band is not None and view.band.high == pytest.approx(1.21) and view.ticks == ((0, "09:30"),)
    assert series.chart_png(view).startswith(b"\x89PNG")
    without = judged(two_levels(), [1.2])
    without.series = []
    assert series.view_of_result(without) is None  # the report draws this run alone instead


def test_series_of_keeps_the_judged_figure_only_and_schema_1_reads_as_one_run():
    records = [run({"median": 0.2}), run({"ratio": 1.05, "median": 0.21}), run({"ratio": None, "median": 0.3})]
    assert [s["value"] for s in series_of(records, "ratio")] == [1.05]
    assert [s["value"] for s in series_of(records, "median")] == [0.2, 0.21, 0.3]
    schema_1 = {"samples": [0.2, 0.3, 0.25], "relative_samples": [1.0, 1.2, 1.1], "recorded": "2025-01-01T00:00:00"}
    assert series_of(history.runs_of(schema_1), "ratio") == [
        {"value": 1.1, "level": 0, "recorded": "2025-01-01T00:00:00"}
    ]


def test_sparkline_and_tick_labels():
    assert command.sparkline([{"value": v, "level": lv} for v, lv in [(1, 0), (2, 0), (1.5, 1), (2, 1)]]) == "▁█|▅█"
    assert command.sparkline([{"value": 3.0}, {"value": 3.0}]) == "▅▅"
    days = ["2026-12-01T12:00:00", "2026-12-02T12:00:00", None, "2026-12-04T08:00:00"]
    assert series.tick_labels(days, {0, 2}) == ["12-01", "", "run 3", "12-04"]
    assert series.tick_labels(["2026-12-01T12:42:33", "2026-12-01T12:49:35"], {0}) == ["12:42", "12:49"]
    assert series.tick_labels(["2026-12-01T12:42:33", "2026-12-01T12:42:50"], {0}) == ["12:42:33", "12:42:50"]
    assert series.tick_labels(["2026-12-01T12:00", "2026-12-02T08:00", "2026-12-02T09:00"], {0, 1}) == [
        "12-01 12:00", "12-02 08:00", "12-02 09:00"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("expression", "chosen"),
    [
        ("fp32", ["fp32"]),
        ("FP32 or fuse", ["fp32", "fuse-qkv"]),
        ("int8 and not weight", ["int8-dynamic"]),
        ("not (int8 or fp)", ["fuse-qkv"]),
        ("", ["fp32", "fp16", "fuse-qkv", "int8-dynamic", "int8-weight-only"]),
    ],
)
def test_k_matches_like_pytest(expression, chosen):
    names = ["fp32", "fp16", "fuse-qkv", "int8-dynamic", "int8-weight-only"]
    select = command.matcher(expression)
    assert [n for n in names if select(f"{TEST}[{n}]")] == chosen


@pytest.mark.parametrize("expression", ["fp32 or", "(fp32", "and fp32", "fp32 )"])
def test_k_syntax_errors_are_value_errors(expression):
    with pytest.raises(ValueError):
        command.matcher(expression)


# ----------------------------------------------------------------------------- the command


def history_command(capsys, *args: str) -> tuple[int, str, str]:
    status = cli.main(["history", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def real(tmp_path) -> Path:
    """A copy of the repository's real baseline file (this machine's histories, schema 3)."""
    folder = tmp_path / "baselines"
    folder.mkdir()
    shutil.copy(REAL, folder / REAL.name)
    return folder


def test_the_command_prints_the_real_histories_as_one_table_per_environment(capsys, real):
    status, out, err = history_command(capsys, real)
    assert status == 0 and err == ""
    lines = out.splitlines()
    data = json.loads(REAL.read_text())
    assert lines[0] == str(real / REAL.name)
    assert lines[1].startswith(f"  machine {data['machine']}, environment 8d73b667: Intel(R) Xeon(R) Processor")
    assert lines[1].endswith("; 2 cores")
    assert lines[2].split() == [
        "test", "figure", "runs", "levels", "level", "mean", "spread", "last", "run", "last", "vs", "mean", "series"
    ]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[4:]}
    assert len(rows) == len(data["entries"]) == COMMITTED_TESTS
    runs = data["entries"][f"{TEST}[fp32]"]["runs"]
    fp32 = [r["median"] for r in runs]
    levels = [r.get("level", 0) for r in runs]
    newest = [r["median"] for r in runs if r.get("level", 0) == levels[-1]]  # the level judged against
    mean = math.exp(sum(map(math.log, newest)) / len(newest))
    cells = rows["test_acceleration[fp32]"].split()
    assert cells[1:4] == ["seconds", str(len(fp32)), str(len(set(levels)))]  # fp32 is judged in seconds
    assert " ".join(cells[4:6]) == f"{mean * 1e3:.1f} ms" and " ".join(cells[7:9]) == f"{fp32[-1] * 1e3:.1f} ms"
    change = fp32[-1] / mean - 1  # -1e-16 when the newest level is this one run: printed +0.0% or -0.0%
    assert cells[9] == f"{change:+.1%}" or (abs(change) < 5e-4 and cells[9] in ("+0.0%", "-0.0%"))
    assert len(cells[10].replace("|", "")) == len(fp32)  # a bar per run, levels apart
    ratios = [r["ratio"] for r in data["entries"][f"{TEST}[int8-dynamic]"]["runs"]]
    cells = rows["test_acceleration[int8-dynamic]"].split()
    assert cells[1] == "ratio" and cells[6] == f"{ratios[-1]:.3f}x"  # the others: the ratio to fp32
    for name, figure, at in (("fp32", "median", 6), ("int8-dynamic", "ratio", 5)):
        # the spread the gate uses: the test's own, moderated toward the machine's over the file's tests
        machine = history.machine_spread(history.levels(history.runs_of(e), figure) for e in data["entries"].values())
        own = history.levels(history.runs_of(data["entries"][f"{TEST}[{name}]"]), figure)
        assert rows[f"test_acceleration[{name}]"].split()[at] == f"{history.spread(own, figure, machine).sigma:.1%}"


def test_k_filters_the_rows(capsys, real):
    status, out, _ = history_command(capsys, real, "-k", "fp32 or int8 and not (weight or quanto)")
    assert status == 0
    assert [line.split()[0] for line in out.splitlines()[4:]] == [
        "test_acceleration[fp32]",
        "test_acceleration[int8-dynamic]",
    ]


def test_charts_into_a_self_contained_html_file_and_a_png_grid(capsys, real, tmp_path):
    page = tmp_path / "out" / "history.html"
    status, out, _ = history_command(capsys, real, "--chart", page)
    assert status == 0 and out.rstrip().endswith(f"charts: {page} ({COMMITTED_TESTS} tests)")
    images = Images()
    images.feed(page.read_text())
    assert len(images.found) == COMMITTED_TESTS and "history of test_acceleration[fp32]" in images.found
    for src in images.found.values():
        assert png_size(src)[0] > 300  # each a real PNG, about 4.5 in wide at 110 dpi
    grid = tmp_path / "grid.png"
    status, _, _ = history_command(capsys, real, "-k", "fp32 or fuse or compile", "--chart", grid)
    width, height = png_size(grid.read_bytes())
    assert status == 0 and width > 800 and height > 300  # 3 charts: two columns, two rows


def test_hand_made_histories_schema_1_and_2_two_levels_one_run(capsys, tmp_path):
    folder = tmp_path / "baselines"
    folder.mkdir()
    schema_1 = {"samples": [0.2, 0.22, 0.21], "relative_samples": [1.1, 1.2, 1.15], "recorded": "2025-06-01T10:00:00"}
    (folder / "old-box.json").write_text(
        json.dumps({"schema": 1, "machine": "old-box", "entries": {"a::t[x]": schema_1}})
    )
    runs = two_levels()
    entries = {"b::t[slow]": {"samples": [0.18], "runs": runs}, "b::t[once]": {"samples": [0.1], "runs": runs[:1]}}
    (folder / "mid-box.json").write_text(json.dumps({"schema": 2, "machine": "mid-box", "entries": entries}))
    status, out, _ = history_command(capsys, folder, "--chart", tmp_path / "h.html")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].endswith("mid-box.json") and "environment unknown" in lines[1]
    slow = next(line for line in lines if line.startswith("t[slow]")).split()
    assert slow[1:5] == ["ratio", "7", "2", f"{math.exp(sum(map(math.log, (1.2, 1.21, 1.19, 1.2))) / 4):.3f}x"]
    assert slow[-1] == "▁▁▁|████"  # a level starts after the accepted change
    once = next(line for line in lines if line.startswith("t[once]")).split()
    assert once[2:4] == ["1", "1"] and "assumed" in once  # one run: the spread is assumed
    old = next(line for line in lines if line.startswith("t[x]")).split()
    assert old[2:4] == ["1", "1"] and old[5:8] == ["5.0%", "assumed", "1.150x"]  # schema 1: one run, its median
    single = history_command(capsys, folder / "old-box.json")[1]  # one file of a folder
    assert "old-box.json" in single and "mid-box" not in single


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["{tmp}/nowhere"], "baseline folder {tmp}/nowhere does not exist"),
        (
            ["{real}", "-k", "no-such-technique"],
            f"no test of the {COMMITTED_TESTS} in {{real}} matches -k 'no-such-technique'",
        ),
        (["{real}", "-k", "fp32 or"], "-k 'fp32 or': the expression ends too early"),
        (["{real}", "--chart", "{tmp}/charts.pdf"], "--chart {tmp}/charts.pdf: the file must end in .html or .png"),
        (["{empty}"], "no baseline histories in {empty}"),
        (["{bad}"], "baseline file {bad}/x.json: not valid JSON"),
    ],
)
def test_errors_are_one_line_naming_the_thing_and_exit_2(capsys, real, tmp_path, args, says):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.json").write_text("{")
    names = {"tmp": tmp_path, "real": real, "empty": tmp_path / "empty", "bad": tmp_path / "bad"}
    status, out, err = history_command(capsys, *(a.format(**names) for a in args))
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("diffaccel history: " + says.format(**names))


def test_an_unreachable_store_is_one_line_and_exit_2(capsys, monkeypatch):
    from pytest_diffaccel import store
    from pytest_diffaccel.baselines import BaselineError

    def unreachable(location):
        raise BaselineError(f"baseline store {location} can't be reached (connection refused)")

    monkeypatch.setattr(store, "open_store", unreachable)
    status, _, err = history_command(capsys, "s3://bucket/prefix")
    assert status == 2
    assert err == "diffaccel history: baseline store s3://bucket/prefix can't be reached (connection refused)\n"


# ----------------------------------------------------------------------------- the report of a real run, in a browser


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img" and (attributes.get("alt") or "").startswith("history of "):
            self.found[attributes["alt"]] = attributes.get("src") or ""


def png_size(data: str | bytes) -> tuple[int, int]:
    from PIL import Image

    if isinstance(data, str):
        assert data.startswith("data:image/png;base64,")
        data = base64.b64decode(data.split(",", 1)[1])
    return Image.open(io.BytesIO(data)).size


BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


NO_BROWSER = "no chromium on PATH (apt-get install chromium): the report is looked at in a real browser"


@pytest.mark.skipif(BROWSER is None, reason=NO_BROWSER)
def test_the_report_of_a_real_run_shows_the_history_chart_in_a_browser(
    user_suite, run_inner, untimed, tmp_path, capsys
):
    folder = tmp_path / "baselines"
    args = ("--diffaccel-techniques", "fuse-qkv", "--diffaccel-steps", "2", f"--diffaccel-baselines={folder}", untimed,
            "--diffaccel-fidelity-seeds=1", "--diffaccel-max-blocks=1")  # fmt: skip
    run_inner(*args, "--diffaccel-save=all").assert_outcomes(passed=1)
    (path,) = folder.glob("*.json")  # a second saved run, an hour earlier and 2% faster, written as a save would
    data = json.loads(path.read_text())
    (entry,) = data["entries"].values()
    (saved,) = entry["runs"]
    entry["runs"] = [{**saved, "ratio": saved["ratio"] / 1.02, "recorded": "2026-12-01T10:00:00+00:00"}, saved]
    path.write_text(json.dumps(data))
    report = tmp_path / "report.html"
    run_inner(*args, f"--diffaccel-html={report}").assert_outcomes(passed=1)

    images = Images()
    images.feed(report.read_text())
    assert list(images.found) == ["history of fuse-qkv"]
    chart = images.found["history of fuse-qkv"]
    assert 350 < png_size(chart)[0] < 650  # about 4.5 in at 110 dpi
    capsys.readouterr()  # the inner runs' output
    status, out, _ = history_command(capsys, folder)  # the command reads what the real runs saved
    row = next(line for line in out.splitlines() if line.startswith("test_acceleration[fuse-qkv]"))
    assert status == 0 and row.split()[1:3] == ["ratio", "2"]

    screenshot = tmp_path / "report.png"
    subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--window-size=1280,2400", f"--screenshot={screenshot}", report.as_uri()],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    from PIL import Image

    pixels = Image.open(screenshot).convert("RGB")
    colours = pixels.getcolors(maxcolors=1 << 24) or []
    drawn = sum(count for count, rgb in colours if min(rgb) < 200)
    assert drawn > 0.01 * pixels.width * pixels.height, f"the screenshot is blank: {screenshot}"
    greens = ((223, 243, 231), (203, 228, 220))  # the band over white, and over a shaded level
    band = sum(
        count
        for count, rgb in colours
        if any(all(abs(a - b) <= 3 for a, b in zip(rgb, green, strict=True)) for green in greens)
    )
    assert band > 500, f"no accepted band of the history chart in the screenshot {screenshot}"
    print(f"screenshot of the report: {screenshot}")
