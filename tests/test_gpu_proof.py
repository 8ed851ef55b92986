"""The GPU proof script runs here too: --dry-run takes the same path on the CPU with tiny presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_proof_dry_run_writes_the_results_document(tmp_path):
    # The script runs every Python step with $PYTHON: this interpreter. A python3 first on PATH
    # that refuses to run proves that none of its steps falls back to whatever python3 is there.
    decoy = tmp_path / "bin"
    decoy.mkdir()
    (decoy / "python3").write_text("#!/bin/sh\necho 'gpu-proof used python3 from PATH' >&2\nexit 97\n")
    (decoy / "python3").chmod(0o755)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PATH": f"{decoy}{os.pathsep}{os.environ.get('PATH', '')}",
        "GPU_PROOF_RESULTS": str(tmp_path / "results"),
        "GPU_PROOF_DOC": str(tmp_path / "gpu-results.md"),
        "GPU_PROOF_BUDGET": "400",
        # the search's own budget: 30 s of which it takes about 13 on tiny-sd (compiling, 30 s, no longer fits:
        # the dry run proves the wiring, not the recipe); at 60 it spent 38 s compiling one candidate
        "GPU_PROOF_SEARCH": "30",
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-proof.sh"), "--dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "used python3 from PATH" not in result.stderr
    doc = (tmp_path / "gpu-results.md").read_text()
    assert doc.startswith("# GPU proof, dry run on the CPU")
    assert "| technique | median | speed-up vs fp32 | published speed-up |" in doc
    for technique in ("fp32", "fp16", "bf16", "bf16+sdpa-flash"):
        assert f"| {technique} | " in doc
    assert "| tf32 | skipped: tf32: needs CUDA" in doc
    sdxl = json.loads((tmp_path / "results" / "sdxl.json").read_text())
    assert [b["extra_info"]["technique"] for b in sdxl["benchmarks"]] == ["fp32", "bf16", "bf16+sdpa-flash"]
    assert all(b["stats"]["rounds"] == 3 for b in sdxl["benchmarks"])
    assert "## Search on the SDXL architecture" in doc
    search = json.loads((tmp_path / "results" / "search.json").read_text())["diffaccel"]["search"]
    assert search["chosen"] and f"fastest passing recipe **{search['chosen']}**" in doc
