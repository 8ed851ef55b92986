"""A matrix sharded across runners stays one matrix: two shards of `pytest examples` save into one store on a
real S3-compatible server (loopback), and `diffaccel merge` reads their reports back as one run's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from loopback import loopback

from pytest_diffaccel.store import open_store

ROOT = Path(__file__).resolve().parent.parent
TECHNIQUES = "--diffaccel-techniques=fp32,sdpa-math,channels-last"
SHARDS = {"shard-1": "fp32 or sdpa", "shard-2": "channels"}


def test_two_shards_save_into_one_store_and_merge_into_one_report(pytester, untimed, monkeypatch, tmp_path):
    import boto3

    shutil.copy(ROOT / "examples" / "test_acceleration.py", pytester.path)
    with loopback() as s3:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        bucket = f"perf-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket=bucket)
        store = f"s3://{bucket}/diffaccel"
        common = ("-p", "no:cacheprovider", "--diffaccel-rounds=3", "--diffaccel-max-rounds=3", "--diffaccel-warmup=1",
                  "--diffaccel-steps=2", "--diffaccel-fidelity-seeds=1", "--diffaccel-max-blocks=1", TECHNIQUES,
                  untimed, f"--diffaccel-baselines={store}", "--diffaccel-save=all")  # fmt: skip
        for shard, selection in SHARDS.items():
            result = pytester.runpytest_inprocess(*common, "-k", selection, f"--diffaccel-json={shard}.json")
            assert result.ret == 0, result.stdout.str()[-3000:]
        (history,) = open_store(store).histories()  # both shards' runs are one environment's history
        assert sorted(t.split("[")[-1] for t in history.entries) == ["channels-last]", "fp32]", "sdpa-math]"]
        merged = subprocess.run(
            [sys.executable, "-m", "pytest_diffaccel.cli", "merge", "shard-1.json", "shard-2.json",
             "-o", "all.json", "--markdown", "all.md", "--html", "all.html"],
            cwd=pytester.path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    out = merged.stdout.splitlines()
    assert out[0].startswith("diffaccel: 2 shards merged: model tiny-sd")
    header = next(i for i, line in enumerate(out) if line.startswith("technique"))
    rows = [line.split()[0] for line in out[header + 2 : header + 5]]
    assert rows == ["channels-last", "fp32", "sdpa-math"]  # one table, every shard's rows, as one run prints it
    assert "3 passed, 0 failed, 0 skipped across 2 shards" in merged.stdout
    data = json.loads((pytester.path / "all.json").read_text())
    assert {b["extra_info"]["shard"] for b in data["benchmarks"]} == {"shard-1", "shard-2"}
    markdown = (pytester.path / "all.md").read_text()
    assert markdown.count("| channels-last |") == markdown.count("| sdpa-math |") == 1
    page = (pytester.path / "all.html").read_text()
    assert "2 shards merged" in page and page.count("<tr>") == 4 and "speed-up vs fp32 of every technique" in page


def test_the_merged_page_draws_each_judged_history_as_a_single_runs_report_does(tmp_path):
    from pytest_diffaccel.report import merged, series

    series_runs = [{"value": 1.0, "level": 0, "recorded": f"2026-11-0{i}T10:00:00"} for i in range(1, 4)]
    baseline = {"judged_on": "ratio", "ratio": 1.31, "reason": "beyond max-slowdown 10% and significant",
                "max_slowdown": 0.10, "regression": True, "undecided": False, "series": series_runs,
                "history_runs": 3, "detectable": 1.12, "blocks": [1.31, 1.30], "note": "baseline"}  # fmt: skip
    extra = {"technique": "bf16", "verdict": "FAIL latency", "baseline": baseline, "relative_samples": [1.3, 1.32],
             "blocks": [{"ratio": 1.31}, {"ratio": 1.30}], "shard": "shard-2",
             "gates": [{"gate": "latency", "passed": False, "judged": True, "message": "1.31x slower"}]}  # fmt: skip
    bench = {"fullname": "t::bf16", "name": "bf16", "stats": {"median": 0.2, "data": [0.2]}, "extra_info": extra}
    unjudged = {**bench, "fullname": "t::fp16", "extra_info": {**extra, "technique": "fp16", "baseline": {}}}
    run = merged.merged_run({"benchmarks": [bench, unjudged], "diffaccel": {"shards": []}})
    view = run.results[0].chart
    assert view is not None and run.results[1].chart is None
    # the same view a single run's report builds: the failed blocks beyond the band, the ratio beside them
    assert [p.failed for p in view.points if p.now] == [True, True] and view.annotation == "1.31x slower"
    assert view == series.series_points(series_runs, figure="ratio", title="bf16", blocks=[1.31, 1.30],
                                        rounds=[1.3, 1.32], max_slowdown=0.10, failed=True,
                                        annotation="1.31x slower")  # fmt: skip
    page = merged.render_html(run)
    assert page.count('alt="history of bf16"') == 1 and 'alt="history of fp16"' not in page


def test_a_failed_shard_fails_the_merge(tmp_path):
    from pytest_diffaccel.merge import main

    def shard(name: str, passed: bool) -> str:
        gate = {"gate": "fidelity", "passed": passed, "judged": True, "message": "SSIM 0.41 < 0.90"}
        bench = {"fullname": f"t::{name}", "name": name, "stats": {"median": 0.1},
                 "extra_info": {"technique": name, "verdict": "pass" if passed else "FAIL",
                                "gates": [gate]}}  # fmt: skip
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"machine_info": {}, "commit_info": {}, "benchmarks": [bench]}))
        return str(path)

    assert main([shard("a", True), shard("b", True)]) == 0
    assert main([shard("a", True), shard("c", False)]) == 1
