#!/usr/bin/env bash
# The one GPU script (issue 32). On one H100 or H200 with PyTorch (CUDA), transformers 5.x, onnx and the CPU
# onnxruntime, nothing else and no network, from the project root:
#
#     OUT=/some/folder benchmarks/gpu_run.sh
#
# 1. benchmarks/gpu_bench.py: the plain Hugging Face paths and the served graphs in bf16 (SDPA) at 8, 16, 32
#    and 64 items per batch, items/s, FLOPs per item and MFU, in one process: $OUT/gpu_speed.json (+ .log);
# 2. benchmarks/export_check.py: the real-size tagger exported in float16 (one .onnx + one .onnx.data per
#    graph) and checked in ONNX Runtime against PyTorch: $OUT/export_check.json (+ .log), run only when the
#    time left of the budget (BUDGET_S, 480) is at least EXPORT_S (270; about 2.5 minutes on a GPU node's CPU);
# 3. benchmarks/gpu_summary.py: the README's speed table beside the targets: $OUT/summary.md.
#
# The suite runs it at tiny size on the CPU (PRESET=tiny DEVICE=cpu ITEMS=1,2). COMPILE=default or
# reduce-overhead (CUDA graphs) compiles the served graphs with torch.compile (minutes of compilation).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder the results go to}"
PRESET=${PRESET:-real}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
ITEMS=${ITEMS:-8,16,32,64}
REPEATS=${REPEATS:-3}
COMPILE=${COMPILE:-none}
BUDGET_S=${BUDGET_S:-480}
EXPORT_S=${EXPORT_S:-270}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
start=$SECONDS

"$PY" benchmarks/gpu_bench.py --preset "$PRESET" --device "$DEVICE" --dtype "$DTYPE" --items "$ITEMS" \
  --repeats "$REPEATS" --compile "$COMPILE" --out "$OUT/gpu_speed.json" 2>&1 | tee "$OUT/gpu_speed.log"

left=$((BUDGET_S - (SECONDS - start)))
if (( left >= EXPORT_S )); then
  # the exported files stay outside $OUT (gigabytes); the report says their sizes
  if ! timeout "$((left - 15))" "$PY" benchmarks/export_check.py --preset "$PRESET" --role tagger --dtype float16 \
      --report "$OUT/export_check.json" > "$OUT/export_check.log" 2>&1; then
    tail -5 "$OUT/export_check.log"
    [ -s "$OUT/export_check.json" ] || \
      printf '{"role": "tagger", "dtype": "float16", "ok": false, "error": "stopped after %ss (see export_check.log)"}\n' \
        "$((left - 15))" > "$OUT/export_check.json"
  fi
else
  printf '{"skipped": "float16 export not run: %ss left of the %ss budget, it needs %ss"}\n' \
    "$left" "$BUDGET_S" "$EXPORT_S" > "$OUT/export_check.json"
fi

"$PY" benchmarks/gpu_summary.py "$OUT" | tee "$OUT/summary.md"
echo "gpu_run.sh: $((SECONDS - start))s, results in $OUT"
