"""SavedModel export and the four uses of an EBM, on a trained digits model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import softmax
import tensorflow as tf

import ebmkit
from ebmkit.models import buffer
from ebmkit.models import energy_model as models
from ebmkit.models import heads as energy
from ebmkit.models import inference
from ebmkit.networks import backbones
from ebmkit.serving import export as serving

CLIENT = r'''
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
out = {}
for name, kwargs in [("classify", {}), ("energy", {}), ("log_px", {}),
                     ("ood_score", {}), ("conditional_density",
                                          {"beta": tf.constant(2.0)}),
                     ("detect", {"y": tf.constant([0, 1, 2, 3])})]:
  result = model.signatures[name](x=tf.constant(x), **kwargs)
  for key, value in result.items():
    out[f"{name}/{key}"] = value.numpy()
samples = model.signatures["sample"](num_samples=tf.constant(3),
                                     steps=tf.constant(5),
                                     class_id=tf.constant(7))["samples"]
out["sample/samples"] = samples.numpy()
assert "ebmkit" not in sys.modules, "ebmkit was imported"
np.savez(sys.argv[3], **out)
'''


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
  workdir, model, x, y = trained
  detection = inference.calibrate_detection(model, x, y, 0.1)
  path = str(tmp_path_factory.mktemp("export"))
  names = ebmkit.export(model, path, detection=detection)
  return path, names, model, x[:4], detection


# What a user of a classifier's export needs, written out here rather than
# read from ebmkit, so that a signature the export drops fails the test.
CLASSIFIER_SIGNATURES = ["classify", "energy", "log_px", "ood_score", "sample",
                         "conditional_density", "detect"]
SCALAR_ENERGY_SIGNATURES = ["energy", "log_px", "ood_score", "sample"]


def test_all_signatures_are_exported(exported):
  path, names, _, _, _ = exported
  assert sorted(names) == sorted(CLASSIFIER_SIGNATURES)
  # And the SavedModel on disk serves exactly those, plus Keras' default
  # signature (TF Serving's when a request names none): classify.
  signatures = tf.saved_model.load(path).signatures
  assert sorted(signatures) == sorted(CLASSIFIER_SIGNATURES
                                      + ["serving_default"])
  assert set(signatures["serving_default"].structured_outputs) == {
      "logits", "probabilities", "predicted_class"}


@pytest.mark.slow
def test_loads_without_ebmkit_and_matches_the_model(exported, tmp_path):
  path, _, model, x, detection = exported
  np.save(tmp_path / "x.npy", x)
  client = tmp_path / "client.py"
  client.write_text(CLIENT)
  out_file = str(tmp_path / "out.npz")
  proc = subprocess.run([sys.executable, str(client), path,
                         str(tmp_path / "x.npy"), out_file],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = np.load(out_file)
  out = model(x)
  np.testing.assert_allclose(got["classify/logits"], out["logits"], atol=1e-5)
  np.testing.assert_allclose(got["classify/probabilities"],
                             softmax(out["logits"], -1), atol=1e-5)
  np.testing.assert_array_equal(got["classify/predicted_class"],
                                np.argmax(out["logits"], -1))
  np.testing.assert_allclose(got["energy/energy"], out["energy"], atol=1e-5)
  np.testing.assert_allclose(got["energy/class_energy"], out["class_energy"],
                             atol=1e-5)
  np.testing.assert_allclose(got["log_px/log_px"], out["log_px"], atol=1e-5)
  np.testing.assert_allclose(got["ood_score/log_px"], out["log_px"],
                             atol=1e-5)
  np.testing.assert_allclose(got["conditional_density/probabilities"],
                             inference.conditional_density(model, x, 2.0),
                             atol=1e-5)
  energies = out["class_energy"].numpy()[np.arange(4), [0, 1, 2, 3]]
  np.testing.assert_array_equal(got["detect/compatible"],
                                energies <= detection["threshold"])
  assert got["sample/samples"].shape == (3, 8, 8, 1)


@pytest.mark.slow
def test_saved_model_cli_shows_and_runs(exported, tmp_path):
  path = exported[0]
  np.save(tmp_path / "x.npy", exported[3])
  shown = subprocess.run(["saved_model_cli", "show", "--dir", path, "--all"],
                         capture_output=True, text=True, timeout=300)
  assert shown.returncode == 0, shown.stderr[-2000:]
  for name in CLASSIFIER_SIGNATURES:
    assert f"signature_def['{name}']" in shown.stdout
  ran = subprocess.run(
      ["saved_model_cli", "run", "--dir", path, "--tag_set", "serve",
       "--signature_def", "classify", "--inputs", f"x={tmp_path / 'x.npy'}"],
      capture_output=True, text=True, timeout=300)
  assert ran.returncode == 0, ran.stderr[-2000:]
  predicted = ran.stdout.split("predicted_class:")[1].split("]")[0]
  assert [int(v) for v in predicted.strip(" \n[").split()] == list(
      np.argmax(exported[2](exported[3])["logits"], -1))


@pytest.mark.parametrize("bad, message", [
    (np.full((1, 8, 8, 1), 3.0, np.float32), "go above the data range"),
    (np.full((1, 8, 8, 1), np.nan, np.float32), "NaN or Inf"),
])
def test_saved_model_rejects_bad_values(exported, bad, message):
  loaded = tf.saved_model.load(exported[0])
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    loaded.signatures["classify"](x=tf.constant(bad))


def test_saved_model_rejects_wrong_shapes(exported):
  loaded = tf.saved_model.load(exported[0])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"inputs must have shape \[n, 8, 8, 1\]"):
    loaded.signatures["classify"](x=tf.zeros([1, 9, 9, 1]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="class_id"):
    loaded.signatures["sample"](num_samples=tf.constant(1),
                                steps=tf.constant(1),
                                class_id=tf.constant(10))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8, 1)), "rank 4"),
    (np.zeros((2, 9, 9, 1)), r"shape \(8, 8, 1\)"),
    (np.array([["a"]]), "numbers"),
    (np.full((1, 8, 8, 1), np.inf), "NaN or Inf"),
    (np.full((1, 8, 8, 1), 255.0), r"data range \[-1.0, 1.0\]"),
])
def test_python_api_rejects_bad_inputs(trained, bad, message):
  with pytest.raises(ValueError, match=message):
    inference.predict(trained[1], bad)


def test_python_api_rejects_bad_labels(trained):
  _, model, x, _ = trained
  with pytest.raises(ValueError, match=r"in \[0, 10\)"):
    inference.rank(model, x[:2], [0, 10], [1, 2])


def test_prediction_and_ranking(trained):
  _, model, x, _ = trained
  logits = model(x)["logits"].numpy()
  predicted = inference.predict(model, x)
  np.testing.assert_array_equal(predicted, logits.argmax(-1))
  other = (predicted + 1) % 10
  diff = inference.rank(model, x, predicted, other)
  # E(x, y) = −f(x)[y]: the difference is f(x)[other] − f(x)[predicted] ≤ 0.
  np.testing.assert_allclose(
      diff, logits[np.arange(100), other] - logits[np.arange(100), predicted],
      rtol=1e-5, atol=1e-5)
  assert np.all(diff <= 0)


def test_detection_meets_its_false_positive_rate_on_held_out_data(trained):
  from ebmkit.data import pipeline as data  # pylint: disable=g-import-not-at-top
  _, model, _, _ = trained
  x, y = next(iter(data.load_dataset(split="test", batch_size=360,
                                     training=False)))
  x, y = x.numpy(), y.numpy()
  calibration = inference.calibrate_detection(model, x[:180], y[:180], 0.1)
  # Held out: every wrong label of the other 180 images is a negative.
  energies = inference.class_energies(model, x[180:])
  wrong = np.ones_like(energies, bool)
  wrong[np.arange(180), y[180:]] = False
  fpr = np.mean(energies[wrong] <= calibration["threshold"])
  # 1,620 negatives on each side: ~0.0075 binomial std each; 0.04 ≈ 3.8σ.
  assert abs(fpr - 0.1) < 0.04
  accepted = inference.detect(model, x[180:], y[180:],
                              calibration["threshold"])
  assert accepted.mean() > 0.9  # True labels mostly pass.


def test_conditional_density_temperatures(trained):
  _, model, x, _ = trained
  logits = model(x)["logits"].numpy()
  np.testing.assert_allclose(inference.conditional_density(model, x, 1.0),
                             softmax(logits, -1), atol=1e-6)
  # β = 1e6: even logits 1e-5 apart give a one-hot answer.
  cold = inference.conditional_density(model, x, 1e6)
  np.testing.assert_allclose(cold, np.eye(10)[logits.argmax(-1)], atol=1e-3)
  np.testing.assert_allclose(inference.conditional_density(model, x, 0.0),
                             0.1, atol=1e-7)


def test_unconditional_model_exports_its_energy_signatures(tmp_path):
  model = models.EnergyModel(
      backbones.small_convnet(8, widths=(8,)),
      head=energy.ScalarEnergyHead(),
      replay_buffer=buffer.ReplayBuffer(16), clf_weight=0.0)
  model.build((None, 8, 8, 1))
  names = serving.export(model, str(tmp_path / "igebm"))
  assert sorted(names) == sorted(SCALAR_ENERGY_SIGNATURES)
  assert sorted(tf.saved_model.load(str(tmp_path / "igebm")).signatures) == (
      sorted(SCALAR_ENERGY_SIGNATURES + ["serving_default"]))
  with open(tmp_path / "igebm" / "ebmkit_export.json") as f:
    assert json.load(f)["input_shape"] == [8, 8, 1]


@pytest.mark.slow
def test_docs_rest_request_body_fits_the_classify_signature(exported,
                                                              tmp_path):
  # The serving page's line that writes request.json, run as written.
  line = ("import json, numpy as np; print(json.dumps({'signature_name': "
          "'classify', 'instances': np.zeros((1, 8, 8, 1)).tolist()}))")
  page = open(os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), "docs", "serving.md")).read()
  assert line in page
  body = json.loads(subprocess.run([sys.executable, "-c", line],
                                   capture_output=True, text=True,
                                   check=True).stdout)
  # TF Serving's row format: one instance per example, stacked into a batch.
  loaded = tf.saved_model.load(exported[0])
  batch = tf.constant(np.array(body["instances"], np.float32))
  result = loaded.signatures[body["signature_name"]](x=batch)
  expected = exported[2](np.zeros((1, 8, 8, 1), np.float32))["logits"]
  np.testing.assert_allclose(result["logits"], expected, atol=1e-5)
