#!/usr/bin/env bash
# Profile gpt2 and sd15 on a GPU MEC at batch sizes 1..32 and write the profiles to ship.
#
# What it does, in one run of at most 10 minutes (each step has its own time limit):
#   1. gpt2: prefill (P=128) and decode (past 144) at batch 1, 2, 4, 8, 16, 32;
#   2. sd15: text encoder, one UNet step and the VAE decoder at batch 1, 2, 4, 8, 16, 32
#      (fewer runs: 1 warm-up, 3 timed per session, more for cheap blocks within 1 s).
# Timing uses torch on the GPU (--backend torch, float32 as the CPU profiles): the same torch
# modules the ONNX pieces were exported from, block boundaries stamped with CUDA events. The
# cut, the byte counts, the state bytes and the chain check do not depend on the hardware, so
# they are taken from the shipped CPU profiles (--cut-from profiles/NAME.mec-cpu.json, which
# were exported, cut and checked with ONNX Runtime): nothing is exported on the GPU machine
# (the SD 1.5 export alone needs ~16 GB of host memory and minutes). The files record the
# GPU, the backend (torch-cuda) and the exact command.
#
# Needs: torch built for CUDA, numpy, onnx, onnxruntime, transformers, diffusers, tqdm (the
# project's venv, or any python3 with them: PYTHON=python3 PYTHONPATH=$PWD). Usage, from the
# repository root:
#     bash benchmarks/gpu_profiles.sh [OUT_DIR]      # default OUT_DIR: $OUT or ./gpu-profiles
# Prints each profile's batch curve (and the sum of block medians against the whole pass per
# batch size) when done. Exit status: non-zero if a step failed or ran out of time.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PY=$PYTHON
DEST=${1:-${OUT:-gpu-profiles}}
SIZES=${BATCH_SIZES:-1,2,4,8,16,32}
CACHE=${AIGC_EMU_CACHE:-/tmp/aigc-offload-emu-gpu-cache}
mkdir -p "$DEST"
export AIGC_EMU_CACHE=$CACHE PYTHONUNBUFFERED=1
for ref in profiles/gpt2.mec-cpu.json profiles/sd15.mec-cpu.json; do
  [ -f "$ref" ] || { echo "gpu_profiles.sh: $ref is missing (the cut and bytes come from it)" >&2; exit 1; }
done

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
  --cut-from profiles/gpt2.mec-cpu.json \
  --runs 20 --min-seconds 2 --out "$DEST/gpt2.mec-gpu.json" || status=1
step 330 sd15 model sd15 --class mec --backend torch --batch-sizes "$SIZES" \
  --cut-from profiles/sd15.mec-cpu.json \
  --runs 5 --warmup 2 --min-seconds 1 --out "$DEST/sd15.mec-gpu.json" || status=1

for f in "$DEST"/gpt2.mec-gpu.json "$DEST"/sd15.mec-gpu.json; do
  if [ -f "$f" ]; then
    "$PY" -m profiler curve "$f" --batch -o "${f%.json}.batch.png"
    "$PY" -m profiler show "$f" > "${f%.json}.txt"
  fi
done
echo "gpu_profiles.sh: done in $(( $(date +%s) - start )) s; files in $DEST"
exit $status
