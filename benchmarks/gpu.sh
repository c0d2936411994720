#!/usr/bin/env bash
# One lease of a CUDA machine (the device tool), about 7 minutes (400 s on an H200 in
# session 23, plus the machine's start): the plan tests on the GPU, the sweep at GPU
# sizes with the canonical and CPU plans forced beside the planned one (adaptive, global
# and channel ops first, then the windowed ops; about 1.3-1.5 s a row), and the CUDA
# rows' fences. Each step has its own time limit and writes
# under $OUT as it goes, so a cut step still leaves what it measured. The heat maps are
# left out (the device tool brings back at most 8 files); draw them from the JSON with
# benchmarks.sweep.heatmap. Run from the repository root:
#   OUT=/tmp/gpu bash benchmarks/gpu.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/gpu}
mkdir -p "$OUT/adaptive" "$OUT/windowed"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/env.txt"
python3 -c "import jax, flax, torch; print(jax.__version__, flax.__version__, torch.__version__,
jax.devices())" 2>&1 | tee -a "$OUT/env.txt"
timeout "${TESTS_S:-90}" python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_plans.py \
  tests/test_adaptive_global.py > "$OUT/tests.log" 2>&1
echo "tests rc $?"; tail -15 "$OUT/tests.log"
sweep() {  # sweep LIMIT_S FOLDER OP...
  local limit=$1 folder=$2; shift 2
  timeout "$limit" python3 -m benchmarks.sweep --min-time 0.005 --rounds 2 \
    --scale "${SCALE:-8}" --variants canonical cpu_plan --out "$OUT/$folder" --only "$@" \
    > "$OUT/$folder/sweep.log" 2>&1
  echo "sweep $folder rc $?"; grep -A 14 "cells in" "$OUT/$folder/sweep.log" | head -16
  rm -f "$OUT/$folder/sweep.png"
}
sweep "${ADAPTIVE_S:-110}" adaptive adaptive_avg adaptive_max global_avg global_max \
  channel_avg channel_max
sweep "${WINDOWED_S:-270}" windowed max min avg_pad avg_nopad lp indices pool+unpool
timeout "${FENCES_S:-70}" python3 -m benchmarks.fences --rounds 9 > "$OUT/fences.md" 2>&1
echo "fences rc $?"; tail -30 "$OUT/fences.md"
