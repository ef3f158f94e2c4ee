#!/usr/bin/env bash
# Profile gpt2 and sd15 on a GPU MEC at batch sizes 1..32 and write the profiles to ship.
#
# NOT RUN YET: no GPU machine was lent to the session that wrote this script (1 Dec 2026);
# the batch curves shipped in profiles/ are CPU ones (mec-cpu). Run it whenever a GPU machine
# is available, then copy the two files into profiles/ and describe them in profiles/README.md.
#
# What it does, in one run of at most 10 minutes (each step has its own time limit):
#   1. gpt2: prefill (P=128) and decode (past 144) at batch 1, 2, 4, 8, 16, 32;
#   2. sd15: text encoder, one UNet step and the VAE decoder at batch 1, 2, 4, 8, 16, 32
#      (fewer runs: 1 warm-up, 3 timed per session, more for cheap blocks within 1 s).
# Timing uses torch on the GPU (--backend torch): batch 1 is exported to ONNX, cut and checked
# against the whole model once with ONNX Runtime on the CPU (the byte counts and the cut); every
# larger batch only times the same torch modules and blocks on the GPU (no export per batch
# size, which for the 860M-parameter UNet would not fit in 10 minutes). The files record the
# GPU, the backend (torch-cuda) and the exact command.
#
# Needs: the project's venv with torch built for CUDA (bash scripts/setup.sh on that machine)
# and ~16 GB of host memory for the SD 1.5 export. Usage, from the repository root:
#     bash benchmarks/gpu_profiles.sh [OUT_DIR]      # default OUT_DIR: $OUT or ./gpu-profiles
# Prints each profile's batch curve (and the sum of block medians against the whole pass per
# batch size) when done. Exit status: non-zero if a step failed or ran out of time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=${1:-${OUT:-gpu-profiles}}
SIZES=${BATCH_SIZES:-1,2,4,8,16,32}
CACHE=${AIGC_EMU_CACHE:-$DEST/cache}
mkdir -p "$DEST"
export AIGC_EMU_CACHE=$CACHE

"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_profiles.sh: torch sees no CUDA GPU here; this script is for a GPU machine")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
PYEOF

start=$(date +%s)
step() {  # step SECONDS NAME ARGS...: run the profiler with a time limit
  local limit=$1 name=$2; shift 2
  echo "== $name (limit ${limit}s): python -m profiler $*"
  if ! timeout --signal=INT --kill-after=20 "$limit" "$PY" -m profiler "$@" -q; then
    echo "gpu_profiles.sh: $name failed or ran past ${limit}s" >&2
    return 1
  fi
}

status=0
step 200 gpt2 model gpt2 --class mec --backend torch --batch-sizes "$SIZES" \
  --runs 10 --min-seconds 1 --out "$DEST/gpt2.mec-gpu.json" || status=1
step 370 sd15 model sd15 --class mec --backend torch --batch-sizes "$SIZES" \
  --runs 3 --warmup 1 --min-seconds 1 --out "$DEST/sd15.mec-gpu.json" || status=1

for f in "$DEST"/gpt2.mec-gpu.json "$DEST"/sd15.mec-gpu.json; do
  [ -f "$f" ] && "$PY" -m profiler curve "$f" --batch -o "${f%.json}.batch.png"
done
echo "gpu_profiles.sh: done in $(( $(date +%s) - start )) s; files in $DEST"
exit $status
