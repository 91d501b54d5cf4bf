#!/usr/bin/env bash
# The GPU check of #13 in one command (< 8 min on an H200-class card; python with torch,
# transformers and peft; no network, no weights): the Qwen3-4B-shaped step bench
# (bench/gpu_step.py: 1k/2k/4k new tokens, B=8 G=16, LoRA 128, bf16) and the GPU tests.
#
#   bash bench/gpu_check.sh            # on a GPU machine; figures in $OUT/gpu_step.json
#   SMALL=1 bash bench/gpu_check.sh    # CPU dry run of this script with a tiny config
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the bench's CPU side is Python; no thread storms
if [ "${SMALL:-0}" = 1 ]; then
  args=(--model-config bench/configs/qwen3-tiny.json --device cpu --dtype float32 --batch 2 --group 4
        --tokens 16,32 --rank 4 --prompt-tokens 8 --sampling-gb 0.0000005 --micro-batch-tokens 60)
  require=0
else
  # 4 min for the bench (a length whose projected time would pass it is skipped and said so)
  args=(--budget-s 240)
  require=1
fi
start=$(date +%s)
timeout 330 "$PY" bench/gpu_step.py "${args[@]}" --out "$OUT/gpu_step.json" | tee "$OUT/gpu_step.log"
RETRAIN_REQUIRE_GPU=$require timeout 150 "$PY" -m pytest -q -n 0 -p no:randomly -p no:cacheprovider \
  tests/test_memory_gpu.py tests/test_memory.py 2>&1 | tee "$OUT/gpu_tests.log"
echo "gpu_check: done in $(( $(date +%s) - start )) s; figures in $OUT/gpu_step.json"
