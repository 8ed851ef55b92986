#!/usr/bin/env bash
# The test suite on the lowest versions pyproject.toml allows, in a fresh virtual environment.
#
#   bash scripts/min-versions.sh [VENV]     # default /tmp/diffaccel-min; about 15 minutes on 2 cores
#
# PyPI has no CPU wheel of torch 2.5.1: this downloads the CUDA build and its libraries (about
# 3 GB); it runs on the CPU all the same. protobuf and sentencepiece are transformers 4.x's
# optional tokenizer dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/diffaccel-min}
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.5.1 diffusers==0.35.0 transformers==4.45.0 accelerate==0.34.0 \
  torchao==0.10.0 pytest==8.1.1 pytest-benchmark==4.0.0 scikit-image==0.22.0 numpy==1.26.4 \
  "safetensors>=0.4" pytest-xdist==3.5.0 jinja2==3.1.0 matplotlib==3.8.0 scipy protobuf sentencepiece
"$VENV/bin/pip" install -q --no-deps -e .
HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider -rs "${@:2}"
