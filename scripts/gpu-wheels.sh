#!/usr/bin/env bash
# Download the wheels that the GPU machine lacks (it has torch, transformers, accelerate,
# scikit-image, pytest and pytest-benchmark, but no diffusers or torchao, and no network)
# into .whl/, an ignored folder that travels with the checkout. Run on a machine with
# package access; scripts/gpu-proof.sh installs them from there without network.
#
#   bash scripts/gpu-wheels.sh            # default: CPython 3.12 on x86-64 Linux
#   PYVER=3.11 bash scripts/gpu-wheels.sh # another Python on the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
DEST=.whl
mkdir -p "$DEST"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# Pinned to the versions the CPU suite runs with; importlib_metadata is a diffusers need
# that the GPU image lacks. Everything else diffusers needs is already there.
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp "${platforms[@]}" -d "$DEST" \
  diffusers==0.42.1 torchao==0.18.0 importlib_metadata zipp
ls -la "$DEST"
