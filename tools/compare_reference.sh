#!/usr/bin/env bash
# ebmkit against the JEM reference (PyTorch), on this machine, in turns: reference, ebmkit float32,
# ebmkit mixed_bfloat16, reference, ... (ROUNDS rounds), WRN-10-2, batch 32, 20 SGLD steps, buffer
# 1,000, ρ = 0.05, α = 1, σ = 0.01, Adam 1e-4, no norm (tools/reference/time_jem_reference.py runs the
# reference's own script with these flags). Both are timed the same way (consecutive iteration-end
# stamps, median after WARMUP); prints each run with the machine's CPU model, then both medians and
# the ratios ebmkit / reference per round and over all rounds.
#
#   REF_JEM_DIR=<reference checkout> REF_JEM_PYTHON=<its venv's python> bash tools/compare_reference.sh
#   ITERS=30 WARMUP=5 ROUNDS=2 PRECISIONS="float32 mixed_bfloat16"
#
# tools/reference/README.md says how to get the reference and build its venv (outside the project).
# Run it on a quiet machine: a run whose other_cpu_frac is above 0.10 is marked spoiled.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS=${ITERS:-30}
WARMUP=${WARMUP:-5}
ROUNDS=${ROUNDS:-2}
PRECISIONS=${PRECISIONS:-float32 mixed_bfloat16}
HARNESS=tools/reference/time_jem_reference.py
OUT=${OUT:-${TMPDIR:-/tmp}/ebmkit_compare}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"

how="Set it up as tools/reference/README.md says (outside this project; never commit the reference's
  code): a copy of github.com/wgrathwohl/JEM in a folder, REF_JEM_DIR=<that folder>, and a venv with
  torch, torchvision, numpy and tqdm, REF_JEM_PYTHON=<that venv>/bin/python."
if [[ -z "${REF_JEM_DIR:-}" || ! -f "${REF_JEM_DIR}/train_wrn_ebm.py" ]]; then
  echo "compare_reference.sh: the JEM reference is not set up: REF_JEM_DIR=${REF_JEM_DIR:-<unset>} has no train_wrn_ebm.py." >&2
  echo "$how" >&2
  exit 2
fi
REF_JEM_PYTHON=${REF_JEM_PYTHON:-python3}
if ! "$REF_JEM_PYTHON" -c "import torch, torchvision, numpy, tqdm" 2>/dev/null; then
  echo "compare_reference.sh: $REF_JEM_PYTHON cannot import torch, torchvision, numpy and tqdm." >&2
  echo "$how" >&2
  exit 2
fi

WRN=(--gin_file=jem_cifar10.gin --gin_bindings='DEPTH = 10' --gin_bindings='WIDTH = 2'
     --gin_bindings='NORM = None' --gin_bindings='BATCH_SIZE = 32' --gin_bindings='BUFFER_SIZE = 1000'
     --gin_bindings='REINIT_PROB = 0.05' --gin_bindings='SGLD_STEPS = 20'
     --gin_bindings='SGLD_STEP_SIZE = 1.0' --gin_bindings='SGLD_NOISE = 0.01'
     --gin_bindings='DATA_NOISE = 0.03')
results="$OUT/results.txt"
: > "$results"
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
cpu_id=$(awk -F': ' '/^cpu family/{f=$2} /^model\t/{m=$2} END{print "family " f " model " m}' /proc/cpuinfo)
echo "machine: $cpu ($cpu_id), $(nproc) CPUs" | tee "$OUT/machine.txt"

run_ref() {  # round
  local line
  line=$("$REF_JEM_PYTHON" "$HARNESS" --ref_dir="$REF_JEM_DIR" --depth=10 --width=2 \
         --iterations="$ITERS" --warmup="$WARMUP" --json="$OUT/ref_round$1.json" 2>"$OUT/ref_round$1.log" \
         | tee -a "$OUT/ref_round$1.log" | grep -E '^ref_jem_s_per_iter=') || {
    echo "reference run failed; see $OUT/ref_round$1.log" >&2; exit 1; }
  local other
  other=$(python3 -c "import json; print(round(json.load(open('$OUT/ref_round$1.json'))['other_cpu_frac'], 3))")
  echo "round $1 reference ${line#ref_jem_s_per_iter=} other_cpu_frac=$other" | tee -a "$results"
}

run_ebmkit() {  # round precision
  local mp=() line
  [[ "$2" != float32 ]] && mp=(--mixed_precision="$2")
  line=$("$PYTHON" tools/benchmark.py --mode=fit "${WRN[@]}" "${mp[@]}" --iterations=$((ITERS - WARMUP)) \
         --warmup="$WARMUP" --json_out="$OUT/ebmkit.jsonl" 2>"$OUT/ebmkit_$2_round$1.log" \
         | grep -E '^ebmkit_s_per_iter=') || {
    echo "ebmkit run failed; see $OUT/ebmkit_$2_round$1.log" >&2; exit 1; }
  local s other
  s=$(sed -E 's/^ebmkit_s_per_iter=([0-9.]+).*/\1/' <<<"$line")
  other=$(sed -E 's/.*other_cpu_frac=([0-9.]+).*/\1/' <<<"$line")
  echo "round $1 $2 $s other_cpu_frac=$other" | tee -a "$results"
}

for r in $(seq 1 "$ROUNDS"); do
  run_ref "$r"
  for p in $PRECISIONS; do run_ebmkit "$r" "$p"; done
done

python3 - "$results" "$OUT/machine.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("\n" + open(sys.argv[2]).read().strip())
runs = {}  # what -> {round: (seconds, other_cpu_frac)}
for _, rnd, what, s, other in rows:
  runs.setdefault(what, {})[int(rnd)] = (float(s), float(other.split("=")[1]))
ref = runs.pop("reference")
print("\nper round: s / iteration (other_cpu_frac), ratio = ebmkit / reference")
for rnd in sorted(ref):
  cells = [f"reference {ref[rnd][0]:.3f} ({ref[rnd][1]:.2f})"]
  for what, by_round in runs.items():
    s, other = by_round[rnd]
    cells.append(f"{what} {s:.3f} ({other:.2f}) ratio {s / ref[rnd][0]:.2f}")
  print(f"  round {rnd}: " + "; ".join(cells))
spoiled = [f"{w} round {r}" for w, b in [("reference", ref)] + list(runs.items())
           for r, (_, o) in b.items() if o > 0.10]
ref_median = statistics.median(s for s, _ in ref.values())
print(f"\nreference: {ref_median:.3f} s / iteration (median of {len(ref)} runs)")
for what, by_round in runs.items():
  median = statistics.median(s for s, _ in by_round.values())
  print(f"ebmkit {what}: {median:.3f} s / iteration, ratio to the reference {median / ref_median:.2f}")
if spoiled:
  print(f"WARNING: other processes used > 10% of the CPU in: {', '.join(spoiled)}; "
        f"these figures are not clean, run again on a quiet machine.")
PY
