#!/usr/bin/env bash
# One short GPU check (under 10 minutes on an H100/H200-class GPU): installs ebmkit with the CUDA
# extra, checks that TensorFlow sees the GPU, times the sampler's loop forms (while / partial /
# unrolled, with and without XLA: picks sampling.FASTEST_LOOP's accelerator rows), and benchmarks
# JEM's WRN-28-10 (batch 64, 20 SGLD steps, XLA on) in float32 and in bfloat16. Results: one JSON
# line each in $OUT/gpu_benchmark.jsonl, the forms' table in $OUT/gpu_sampler_forms.txt. With 2 or
# more GPUs, a short MirroredStrategy run (the `mirrored` case).
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
# Every loop form in one process, XLA off and on (the first call of each includes its compile).
timeout 240 python tools/benchmark.py --mode=sampler_forms --gin_file=jem_cifar10.gin \
    --gin_bindings='BATCH_SIZE = 64' --jit_compile=auto --iterations=5 \
    --json_out="$OUT/gpu_benchmark.jsonl" | tee "$OUT/gpu_sampler_forms.txt" || true
timeout 150 python tools/benchmark.py "${common[@]}" --peak_tflops="$PEAK_TF32"
timeout 150 python tools/benchmark.py "${common[@]}" --peak_tflops="$PEAK_BF16" \
    --mixed_precision=mixed_bfloat16
# Several GPUs: one short JEM run under MirroredStrategy (train.distribute = 'mirrored') on fake
# CIFAR-10 files (prepared by TFDS' own builder, as --mode=fit reads them): checks that training,
# the per-replica buffers and the checkpoint work on this machine's GPUs, and prints its results.json.
NGPU=$(python -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null || echo 0)
if [[ "$NGPU" -ge 2 ]]; then
  FAKE="$OUT/fake_cifar10_tfds"
  python -c "import sys; sys.path.insert(0, 'tools'); import fit_benchmark; fit_benchmark.fake_cifar10('$FAKE', $((NGPU * 64 * 20)))"
  TFDS_DATA_DIR="$FAKE" timeout 300 python -m ebmkit.run --gin_file=jem_cifar10.gin --workdir="$OUT/mirrored_run" --fresh \
      --gin_bindings="train.distribute = 'mirrored'" --gin_bindings="BATCH_SIZE = $((NGPU * 64))" \
      --gin_bindings='EPOCHS = 1' --gin_bindings="train.train_split = 'train'" \
      --gin_bindings='train.validation_split = None' || true
  cat "$OUT/mirrored_run/results.json" 2>/dev/null || echo "mirrored run wrote no results.json"
else
  echo "mirrored case skipped: $NGPU GPU(s); it needs 2 or more."
fi
cat "$OUT/gpu_benchmark.jsonl"
