#!/usr/bin/env bash
# GPU proof: the acceleration ladders on full-size architectures, one command, no network.
#
#   bash scripts/gpu-proof.sh            # on a machine with one NVIDIA GPU (about 6 minutes on an H100)
#   bash scripts/gpu-proof.sh --dry-run  # the same script on the CPU with the tiny presets
#
# The GPU machine has torch, transformers, accelerate, scikit-image, pytest and pytest-benchmark
# but not diffusers or torchao: run scripts/gpu-wheels.sh first on a machine with package access;
# the wheels land in .whl/ and are installed from there (no network).
#
# Ladders (each a pytest run of examples/ with a JSON report, written after every test so that a
# run cut short still leaves its numbers):
#   tiny: the bundled tiny-sd (trained weights, so its SSIM is meaningful) through the CUDA-only
#         techniques: TF32, fp16, the SDPA backends, float8, compile+int8, the tiny VAE. It runs
#         first and doubles as the wiring check: if it can't even start, the script stops there.
#   sd15: the seed guide's ladder on sd15-arch, 512x512, 50 DDIM steps: fp32, tf32, fp16, fp16+tf32
#   search: a short --diffaccel-search on sdxl-arch (precision, attention kernel, compile, fused QKV)
#   sdxl: the diffusion-fast ladder on sdxl-arch, 1024x1024, 30 steps: fp32 (TF32 off), bf16,
#         +SDPA, +compile, +fused QKV, +int8 dynamic, and float8 dynamic instead of int8 on Hopper.
#         Compile mode: torch.compile's default mode (fullgraph=True); max-autotune of a full SDXL
#         UNet takes longer than this proof's budget.
# Output: docs/gpu-results.md (or $GPU_PROOF_DOC), and the JSON reports in $OUT or build/gpu-proof.
# Interpreter: $PYTHON (default python3, the first on PATH), used for every Python step.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi
RESULTS=${GPU_PROOF_RESULTS:-${OUT:-build/gpu-proof}}
DOC=${GPU_PROOF_DOC:-docs/gpu-results.md}
BUDGET=${GPU_PROOF_BUDGET:-400}   # seconds for the sd15 and sdxl ladders and the search together
SEARCH=${GPU_PROOF_SEARCH:-90}    # seconds of them for the search on sdxl-arch
mkdir -p "$RESULTS" "$(dirname "$DOC")"
started=$(date +%s)

if ! "$PYTHON" -c "import diffusers, torchao" >/dev/null 2>&1; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/diffaccel-site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/diffaccel-site${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "gpu-proof: diffusers or torchao is missing; run scripts/gpu-wheels.sh where pip works, then carry .whl/" >&2
    exit 2
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/diffaccel-inductor}
plugin=()
if ! "$PYTHON" - <<'EOF'
import importlib.metadata as m, sys
sys.exit(0 if any(e.name == "diffaccel" for e in m.entry_points(group="pytest11")) else 1)
EOF
then plugin=(-p pytest_diffaccel.plugin); fi

"$PYTHON" - <<'EOF'
import torch, diffusers, torchao
print(f"gpu-proof: torch {torch.__version__}, diffusers {diffusers.__version__}, torchao {torchao.__version__}, "
      f"cuda {torch.cuda.is_available() and torch.cuda.get_device_name()}")
EOF

if [[ $DRY == 1 ]]; then
  device=(); sd15_model=tiny-sd; sdxl_model=tiny-sd; call=(--diffaccel-steps=2)  # the wiring, not the picture
  compiled=()   # compiling on the CPU takes minutes: the dry run proves the wiring without it
else
  device=(--diffaccel-gpu); sd15_model=sd15-arch; sdxl_model=sdxl-arch; call=()
  compiled=(
    bf16+sdpa-flash+compile
    bf16+sdpa-flash+fuse-qkv+compile
    bf16+sdpa-flash+fuse-qkv+int8-dynamic+compile
    bf16+sdpa-flash+fuse-qkv+float8-dynamic+compile
  )
fi
join() { local IFS=,; echo "$*"; }
tiny_techniques=$(join fp32 tf32 bf16 fp16 bf16+sdpa-flash bf16+sdpa-efficient bf16+sdpa-cudnn \
  bf16+float8-dynamic bf16+fuse-qkv+int8-dynamic+compile)
sd15_techniques=$(join fp32 tf32 fp16 fp16+tf32)
sdxl_techniques=$(join fp32 bf16 bf16+sdpa-flash "${compiled[@]}")

status=0
run_ladder() {  # name model techniques seconds [extra pytest options]
  local name=$1 model=$2 techniques=$3 seconds=$4
  shift 4
  echo "gpu-proof: ladder $name on $model ($techniques), at most ${seconds}s"
  timeout --signal=INT --kill-after=20 "$seconds" "$PYTHON" -m pytest examples "${plugin[@]}" -p no:cacheprovider -q -rs \
    "${device[@]}" "${call[@]}" --diffaccel-model="$model" --diffaccel-techniques="$techniques" \
    --diffaccel-json="$RESULTS/$name.json" "$@"
  status=$?
  echo "gpu-proof: ladder $name finished with status $status after $(( $(date +%s) - started ))s"
}
ratios=(--diffaccel-rounds=3 --diffaccel-max-rounds=3 --diffaccel-min-ssim=0 --diffaccel-fidelity-seeds=1
        --diffaccel-max-blocks=1)

reports=()
if [[ $DRY == 0 ]]; then
  run_ladder tiny tiny-sd "$tiny_techniques" 150 --diffaccel-max-time=3
  reports+=("$RESULTS/tiny.json")
  # 0: all passed, 1: some test failed, 124: out of time (findings, not a broken run);
  # 2-5 (interrupted, internal error, usage error, nothing collected): the wiring is broken
  if (( status > 1 && status < 124 )); then
    echo "gpu-proof: the tiny ladder could not run (status $status); stopping before the full-size ladders" >&2
    exit "$status"
  fi
  started=$(date +%s)
fi
run_ladder sd15 "$sd15_model" "$sd15_techniques" $(( BUDGET / 4 )) "${ratios[@]}"
left=$(( BUDGET - SEARCH - ($(date +%s) - started) ))
(( left < 60 )) && left=60
run_ladder sdxl "$sdxl_model" "$sdxl_techniques" "$left" "${ratios[@]}"
reports+=("$RESULTS/sd15.json" "$RESULTS/sdxl.json")
# a short --diffaccel-search on the SDXL architecture: the fastest recipe that keeps the picture
minutes=$("$PYTHON" -c "print(round($SEARCH / 60 * 0.85, 2))")
run_ladder search "$sdxl_model" "fp32" $(( SEARCH + 30 )) "${ratios[@]}" --diffaccel-search \
  --diffaccel-search-budget="$minutes" --diffaccel-search-space=precision,attention-kernel,denoiser-compile,fuse-qkv

title="GPU results"
[[ $DRY == 1 ]] && title="GPU proof, dry run on the CPU (tiny presets, wiring only)"
"$PYTHON" scripts/gpu_results.py "${reports[@]}" --title "$title" \
  --command "bash scripts/gpu-proof.sh$([[ $DRY == 1 ]] && echo ' --dry-run')" > "$DOC"
"$PYTHON" scripts/gpu_search.py "$RESULTS/search.json" >> "$DOC"
cp "$DOC" "$RESULTS/" 2>/dev/null || true
echo "gpu-proof: wrote $DOC in $(( $(date +%s) - started ))s"
cat "$DOC"
