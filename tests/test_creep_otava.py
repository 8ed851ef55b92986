"""benchmarks/creep.py: the committed page is the script's rendering of its JSON, and the optional Otava
comparison (issue 19) is skipped cleanly without otava and wired end to end with a stand-in for it.
Otava itself is no dependency of this project: the real comparison runs in a venv of its own (docs/creep.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_creep():
    spec = importlib.util.spec_from_file_location("creep_benchmark", ROOT / "benchmarks" / "creep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


creep = load_creep()

# A stand-in for otava.analysis.compute_change_points: a change point in the middle when the newer half's mean
# is beyond 5% above the older half's (enough to tell a drift from a clean series at these spreads).
STAND_IN = """
from types import SimpleNamespace

def compute_change_points(series, window_len=50, max_pvalue=0.001, min_magnitude=0.0):
    half = len(series) // 2
    older, newer = series[:half], series[half:]
    if sum(newer) / len(newer) > 1.05 * sum(older) / len(older):
        return [SimpleNamespace(index=half)], []
    return [], []
"""


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A package ``otava`` with the stand-in, importable here and in subprocesses; gone afterwards."""
    (tmp_path / "otava").mkdir()
    (tmp_path / "otava" / "__init__.py").write_text("")
    (tmp_path / "otava" / "analysis.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "otava" or m.startswith("otava.")]:
        del sys.modules[name]


def test_page_is_the_rendering_of_its_json():
    """Every number on docs/creep.md comes from docs/creep.json, through the script's own renderer."""
    data = json.loads((ROOT / "docs" / "creep.json").read_text())
    assert (ROOT / "docs" / "creep.md").read_text() == creep.render(data)


def test_committed_page_has_the_otava_comparison_and_its_command():
    page = (ROOT / "docs" / "creep.md").read_text()
    data = json.loads((ROOT / "docs" / "creep.json").read_text())
    assert data["otava"], "docs/creep.json has no Otava section: run " + creep.OTAVA_COMMAND
    assert creep.OTAVA_COMMAND in page and creep.OTAVA_VENV in page
    assert "## Apache Otava on the same series" in page and "### Conclusion" in page
    assert [s["name"] for s in data["otava"]["settings"]] == [name for name, _, _ in creep.OTAVA_SETTINGS]


@pytest.mark.skipif(importlib.util.find_spec("otava") is not None, reason="otava is importable here")
def test_otava_skipped_with_a_line_when_not_importable(tmp_path, capsys):
    out = tmp_path / "creep.json"
    assert (
        creep.main(["--draws", "2", "--otava", "--otava-python", str(tmp_path / "no-python"), "--out", str(out)]) == 0
    )
    assert "otava: skipped: apache-otava is not importable here" in capsys.readouterr().err
    assert json.loads(out.read_text())["otava"] is None
    assert "Not run: `python -m venv /tmp/otava" in out.with_suffix(".md").read_text()


def test_otava_comparison_end_to_end_with_a_stand_in(stand_in, capsys):
    """The series go to the interpreter that imports otava through a JSON file, come back judged, and are
    compared with the gate on the same series; a rerun without --otava keeps them only for the same series."""
    out = stand_in / "creep.json"

    assert creep.main(["--draws", "4", "--otava", "--out", str(out)]) == 0
    result = json.loads(out.read_text())["otava"]
    assert result["version"] == "unknown" and result["draws"] == 4
    assert len(result["settings"]) == len(creep.OTAVA_SETTINGS)
    for setting in result["settings"]:
        assert [row["sigma"] for row in setting["rows"]] == list(creep.SIGMAS)
        first = setting["rows"][0]  # 1% spread, +4% a save: the halves part by the 5th save at the latest
        assert first["detection"]["caught"] == 1.0 and first["detection"]["median_save"] <= 5
        assert all(0.0 <= row["sooner"] + row["later"] <= 1.0 for row in setting["rows"])
    page = out.with_suffix(".md").read_text()
    assert "| 1% | defaults (p 0.001) | 100% |" in page and "### Conclusion" in page

    assert creep.main(["--draws", "4", "--out", str(out)]) == 0  # same series: the comparison stands
    assert json.loads(out.read_text())["otava"] == result
    assert creep.main(["--draws", "4", "--seed", "1", "--out", str(out)]) == 0  # other series: it goes
    assert json.loads(out.read_text())["otava"] is None
    capsys.readouterr()


def test_otava_verdict_reads_the_first_and_last_segments(stand_in):
    """A regression is the last segment's mean beyond max-slowdown above the first segment's."""
    step = 0.08  # log: the newer half sits about 8.3% above the older one
    assert creep.otava_verdict([0.0] * 5 + [step] * 5, 0.001, 0.0) == (True, False)
    assert creep.otava_verdict([0.0] * 5 + [2 * step] * 5, 0.001, 0.0) == (True, True)
    assert creep.otava_verdict([0.0] * 10, 0.001, 0.0) == (False, False)
