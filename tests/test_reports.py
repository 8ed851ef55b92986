"""Reports through a real pytest run: HTML (parsed, not grepped), Markdown, pytest-benchmark JSON
read by the real ``pytest-benchmark compare``, JUnit properties, $GITHUB_STEP_SUMMARY."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

HOSTILE = """
import pytest

def pytest_diffaccel_register_techniques(register):
    @register("noisy-unet", min_ssim=0.93)
    def noisy_unet(pipe):
        import torch

        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in pipe.unet.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * p.pow(2).mean().sqrt() * 0.2)
        return pipe
"""

TEST = """
import pytest

@pytest.mark.parametrize("label", ["<script>alert(1)</script>"])
def test_acceleration(diffaccel_pipeline, diffaccel_benchmark, label):
    diffaccel_benchmark(diffaccel_pipeline)
"""


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[dict] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "section" and "technique" in (attributes.get("class") or ""):
            self.sections.append({"technique": attributes.get("data-technique"), "images": []})
        if tag == "img" and self.sections and attributes.get("class") in ("reference", "result", "ssim-map"):
            self.sections[-1]["images"].append((attributes["class"], attributes.get("src", "")))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """One real run (subprocess) that writes every report; shared by the tests below."""
    folder = tmp_path_factory.mktemp("reports")
    (folder / "conftest.py").write_text(HOSTILE)
    (folder / "test_speed.py").write_text(TEST)
    summary = folder / "step-summary.md"
    summary.write_text("# earlier step\n")
    command = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--diffaccel-rounds=6", "--diffaccel-max-rounds=6",
        "--diffaccel-techniques=fp32,noisy-unet,sdpa-efficient", f"--diffaccel-html={folder / 'report.html'}",
        f"--diffaccel-md={folder / 'report.md'}", f"--diffaccel-json={folder / 'report.json'}",
        f"--junitxml={folder / 'junit.xml'}",
    ]  # fmt: skip
    env = {**__import__("os").environ, "GITHUB_STEP_SUMMARY": str(summary), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 1, result.stdout + result.stderr  # noisy-unet fails its fidelity gate
    return folder, result


def test_html_has_one_image_triple_per_measured_technique_and_escapes_ids(reports):
    folder, _ = reports
    html = (folder / "report.html").read_text()
    parser = Collector()
    parser.feed(html)
    assert parser.scripts == 0  # the hostile test id did not become markup
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    by_technique = {s["technique"]: s for s in parser.sections}
    assert set(by_technique) == {"fp32", "noisy-unet", "sdpa-efficient"}
    for name in ("fp32", "noisy-unet"):
        classes = [c for c, _ in by_technique[name]["images"]]
        assert classes == ["reference", "result", "ssim-map"] * 2  # two prompts, one triple each
        assert all(src.startswith("data:image/png;base64,") for _, src in by_technique[name]["images"])
    assert by_technique["sdpa-efficient"]["images"] == []
    text = " ".join(parser.text)
    assert "fidelity: SSIM" in text and "needs CUDA" in text


def test_markdown_report_and_step_summary(reports):
    folder, _ = reports
    markdown = (folder / "report.md").read_text()
    lines = markdown.splitlines()
    assert lines[0].startswith("## diffaccel: tiny-sd on cpu")
    assert lines[2] == "| technique | median | speed-up vs fp32 | vs baseline | SSIM | peak memory | verdict |"
    assert lines[3] == "|---|---:|---:|---:|---:|---:|---|"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[4:7]}
    assert rows["fp32"].endswith("| 1.0000 | " + rows["fp32"].split(" | ")[5] + " | pass (no baseline) |")
    assert "FAIL fidelity" in rows["noisy-unet"]
    assert rows["sdpa-efficient"] == "| sdpa-efficient | - | - | - | - | - | skipped |"
    assert "### Failures" in markdown and "**noisy-unet**: fidelity: SSIM" in markdown
    summary = (folder / "step-summary.md").read_text()
    assert summary.startswith("# earlier step\n")  # appended, not replaced
    assert "## diffaccel: tiny-sd on cpu" in summary


def test_json_is_read_by_pytest_benchmark_compare(reports):
    folder, _ = reports
    data = json.loads((folder / "report.json").read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(data)
    names = {b["extra_info"]["technique"]: b for b in data["benchmarks"]}
    assert set(names) == {"fp32", "noisy-unet"}
    assert names["noisy-unet"]["extra_info"]["verdict"] == "FAIL fidelity, caption"  # 20% UNet noise: both
    assert len(names["fp32"]["stats"]["data"]) == names["fp32"]["stats"]["rounds"] == 6
    executable = shutil.which("pytest-benchmark")
    assert executable, "pytest-benchmark's command is installed with it"
    result = subprocess.run(
        [executable, "compare", str(folder / "report.json"), "--columns=min,median,max,rounds"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "test_acceleration" in result.stdout and "fp32" in result.stdout


def test_junit_properties(reports):
    folder, _ = reports
    root = ET.parse(folder / "junit.xml").getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    case = next(c for name, c in cases.items() if "noisy-unet" in name)
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["diffaccel_technique"] == "noisy-unet"
    assert properties["diffaccel_verdict"] == "FAIL fidelity, caption"
    assert float(properties["diffaccel_ssim"]) < 0.93
    assert float(properties["diffaccel_median_s"]) > 0


def test_terminal_table_lists_reports(reports):
    _, result = reports
    assert "report: " in result.stdout
    assert "noisy-unet: fidelity: SSIM" in result.stdout


@pytest.mark.parametrize("missing", ["jinja2", "matplotlib"])
def test_html_without_its_extra_is_a_usage_error_before_anything_runs(pytester, monkeypatch, missing):
    # the base install lacks the [html] extra: say so at the start (exit 4), never after the timing is done
    monkeypatch.setitem(sys.modules, missing, None)
    pytester.makepyfile(test_acceleration=TEST)
    result = pytester.runpytest("--diffaccel-html=report.html", "--diffaccel-techniques=fp32")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--diffaccel-html report.html: the HTML report needs {missing}*"])
    assert "pip install 'pytest-diffaccel[html]' (nothing was run)" in result.stderr.str()
    assert not (pytester.path / "report.html").exists()
    result.stdout.no_fnmatch_line("*passed*")
