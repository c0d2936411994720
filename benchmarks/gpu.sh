#!/usr/bin/env bash
# One lease of a CUDA machine (the device tool), about 9 minutes: the sweep at GPU sizes
# with the canonical and CPU plans forced beside the planned one (about 350 s for the 240
# cells on an H100), the CUDA rows' fences, and the plan tests on the GPU. Each step has
# its own time limit and writes under $OUT as it goes, so a cut step still leaves what it
# measured. Run from the repository root:
#   OUT=/tmp/gpu bash benchmarks/gpu.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/env.txt"
python3 -c "import jax, flax, torch; print(jax.__version__, flax.__version__, torch.__version__,
jax.devices())" 2>&1 | tee -a "$OUT/env.txt"
timeout "${SWEEP_S:-380}" python3 -m benchmarks.sweep --min-time 0.005 --rounds 2 \
  --scale "${SCALE:-8}" --variants canonical cpu_plan --out "$OUT" > "$OUT/sweep.log" 2>&1
echo "sweep rc $?"; grep -A 20 "cells in" "$OUT/sweep.log" | head -24
timeout "${FENCES_S:-100}" python3 -m benchmarks.fences --rounds 9 > "$OUT/fences.md" 2>&1
echo "fences rc $?"; tail -30 "$OUT/fences.md"
timeout "${TESTS_S:-60}" python3 -m pytest -q -n 8 -p no:cacheprovider tests/test_plans.py \
  tests/test_adaptive_global.py > "$OUT/tests.log" 2>&1
echo "tests rc $?"; tail -15 "$OUT/tests.log"
