#!/usr/bin/env bash
# The package as users get it: build the wheel, install it (not editable) into a fresh virtual
# environment, and from a folder outside the source tree train one epoch, evaluate (fast
# settings), export, and load the SavedModel. Run by tests/test_packaging.py and so by .ci/run.
#
#   bash tools/check_wheel.sh            # about 3 minutes with pip's cache warm
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== building the wheel"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$repo"
echo "== installing it into a fresh venv"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$work"/dist/ebmkit_keras-*.whl
py="$work/venv/bin/python"

cd "$work"  # Outside the source tree: nothing can be imported from it.
export TFDS_DATA_DIR="$work/tensorflow_datasets"
"$py" - <<PY
import ebmkit, ebmkit.evaluation.evaluate, ebmkit.evaluation.render, os
where = os.path.dirname(ebmkit.__file__)
assert where.startswith("$work/venv/"), f"ebmkit imported from {where}"
print("ebmkit", ebmkit.__version__, "from", where)
PY

echo "== train one epoch"
"$py" -m ebmkit.run --gin_file=jem_digits.gin --workdir=run \
  --gin_bindings='EPOCHS = 1' --gin_bindings='BUFFER_SIZE = 500'
echo "== evaluate (fast settings)"
"$py" -m ebmkit.run --mode=eval --workdir=run \
  --gin_bindings='evaluate.sample_steps = 20' --gin_bindings='evaluate.num_samples = 64' \
  --gin_bindings='evaluate.pgd_examples = 32' --gin_bindings='evaluate.linf_eps = (0.0, 0.2)' \
  --gin_bindings='evaluate.l2_eps = (0.0, 1.0)' --gin_bindings='evaluate.pgd_steps = 3' \
  --gin_bindings='evaluate.defense_steps = 2' --gin_bindings='evaluate.defense_duplicates = 2' \
  --gin_bindings='evaluate.distal_per_class = 1' --gin_bindings='evaluate.distal_steps = 30' \
  --gin_bindings='evaluate.judge_epochs = 2' --gin_bindings='evaluate.ood_examples = 64'
test -s run/report.md
echo "== export"
"$py" -m ebmkit.run --mode=export --workdir=run --export_dir=exported
echo "== load the SavedModel"
"$py" - <<'PY'
import json
import numpy as np
import tensorflow as tf
model = tf.saved_model.load("exported")
x = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
out = model.signatures["classify"](x=tf.constant(x))
probs = out["probabilities"].numpy()
assert probs.shape == (4, 10) and np.allclose(probs.sum(-1), 1, atol=1e-5), probs
results = json.load(open("run/results.json"))
print("test accuracy after one epoch:", results["test_accuracy"],
      "| evaluation accuracy:", results["evaluation"]["accuracy"])
PY
echo "== the shipped presets: each loads and measures what its card says"
"$py" - <<'PY'
import ebmkit, json, os, time
import numpy as np
import tensorflow as tf
from ebmkit import presets
shipped = ebmkit.list_presets()
assert len(shipped) >= 4, shipped
for entry in shipped:
  started = time.time()
  model = ebmkit.from_preset(entry["name"])
  with open(os.path.join(presets.SHIPPED, entry["name"], "card.json")) as f:
    card = json.load(f)
  # A classifier's test-split accuracy (TFDS prepares the data set the
  # first time: Fashion-MNIST from the Debian package's IDX files), a GAN's
  # sample statistics.
  what, measured, promised = presets.card_check(model, card)
  if what == "test_accuracy":
    assert abs(measured - promised) < 1e-6, (entry, measured)
  else:
    for key in ("mean", "std", "discriminator_mean"):
      assert abs(measured[key] - promised[key]) < 1e-5, (key, measured)
  ebmkit.export(model, f"exported_{entry['name']}")
  served = tf.saved_model.load(f"exported_{entry['name']}")
  shape = (4,) + tuple(model.sample_shape)
  if model.classifies:
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    np.testing.assert_allclose(served.signatures["classify"](x=x)["logits"],
                               model(x)["logits"], rtol=1e-5, atol=1e-5)
  else:
    z = np.random.default_rng(0).standard_normal(
        (4, model.latent_dim)).astype(np.float32)
    np.testing.assert_allclose(served.signatures["generate"](z=z)["samples"],
                               model.generator(z), rtol=1e-5, atol=1e-5)
  print(f"preset {entry['name']}: {what} {measured} as on its card; "
        f"{entry['size_bytes']} bytes; {time.time() - started:.0f} s")
PY
ls -l "$work"/dist/ebmkit_keras-*.whl | awk '{print "wheel size:", $5, "bytes"}'
echo "check_wheel: OK"
