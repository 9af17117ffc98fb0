#!/usr/bin/env bash
# One short GPU check (under 5 minutes on an H100/H200-class GPU): installs ebmkit with the CUDA
# extra, checks that TensorFlow sees the GPU, and benchmarks JEM's WRN-28-10 (batch 64, 20 SGLD
# steps, XLA on) in float32 and in bfloat16. Results: one JSON line each in $OUT/gpu_benchmark.jsonl.
#   bash tools/gpu_check.sh                 # PEAK_TF32 / PEAK_BF16: the GPU's dense peaks in TFLOP/s
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.}
PEAK_TF32=${PEAK_TF32:-494.7}  # H100 SXM dense TF32 (TensorFlow's float32 matmuls use TF32)
PEAK_BF16=${PEAK_BF16:-989.4}  # H100 SXM dense bfloat16

python -m pip install --quiet -e '.[cuda]'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python - <<'PY'
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "GPUs:", gpus)
assert gpus, "TensorFlow sees no GPU: check the CUDA extra (pip install -e '.[cuda]') and the driver."
PY
common=(--gin_file=jem_cifar10.gin --gin_bindings='BATCH_SIZE = 64' --jit_compile=true
        --iterations=20 --warmup=3 --json_out="$OUT/gpu_benchmark.jsonl")
timeout 150 python tools/benchmark.py "${common[@]}" --peak_tflops="$PEAK_TF32"
timeout 150 python tools/benchmark.py "${common[@]}" --peak_tflops="$PEAK_BF16" \
    --mixed_precision=mixed_bfloat16
cat "$OUT/gpu_benchmark.jsonl"
