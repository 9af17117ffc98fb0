"""Input checks at the edges: SavedModel signatures, the Python inference
API and the train step (ebmkit.validation), and export from a read-only
workdir."""

import json
import os
import shutil
import stat
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from scipy.special import softmax
import tensorflow as tf

import ebmkit
from ebmkit.data import pipeline as data
from ebmkit.models import buffer
from ebmkit.models import energy_model as models
from ebmkit.models import inference
from ebmkit.models import sampling
from ebmkit.models import validation
from ebmkit.networks import backbones
from ebmkit.serving import export as serving

SCALE_HINT = r"scale pixels as pixel / 127\.5 - 1"
WRONG_SCALE = r"wrongly scaled.*" + SCALE_HINT


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
  """(loaded SavedModel, export folder, model, 4 test images)."""
  _, model, x, y = trained
  detection = inference.calibrate_detection(model, x, y, 0.1)
  path = str(tmp_path_factory.mktemp("export"))
  ebmkit.export(model, path, detection=detection)
  return tf.saved_model.load(path), path, model, x[:4]


def test_upper_half_floor_by_hand():
  # Midpoint lowered by TOLERANCE (0.25) of the width.
  assert validation.upper_half_floor((-1.0, 1.0)) == 0.0 - 0.25 * 2
  assert validation.upper_half_floor((0.0, 1.0)) == 0.5 - 0.25 * 1


# -- A: SavedModel signatures --------------------------------------------------

@pytest.mark.parametrize("shape", [(8, 8, 1), (1, 8, 8, 1, 1), (8,)])
def test_saved_model_names_the_rank(exported, shape):
  loaded = exported[0]
  for name in ("classify", "energy", "log_px", "ood_score"):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"inputs must be a batch of shape "
                             r"\[n, 8, 8, 1\] \(rank 4"):
      loaded.signatures[name](x=tf.zeros(shape))


def test_saved_model_answers_an_empty_batch_with_empty_outputs(exported):
  loaded = exported[0]
  x = tf.zeros([0, 8, 8, 1])
  expected = {
      "classify": {"logits": (0, 10), "probabilities": (0, 10),
                   "predicted_class": (0,)},
      "energy": {"energy": (0,), "class_energy": (0, 10)},
      "log_px": {"log_px": (0,)},
      "ood_score": {"log_px": (0,), "max_prob": (0,), "neg_grad_norm": (0,)},
  }
  for name, shapes in expected.items():
    out = loaded.signatures[name](x=x)
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes, name
  out = loaded.signatures["conditional_density"](x=x, beta=tf.constant(1.0))
  assert out["probabilities"].shape == (0, 10)
  out = loaded.signatures["detect"](x=x, y=tf.zeros([0], tf.int32))
  assert out["compatible"].shape == (0,) and out["energy"].shape == (0,)
  assert out["threshold"].shape == ()
  # The Python API agrees.
  assert inference.predict(exported[2], np.zeros((0, 8, 8, 1))).shape == (0,)


def test_saved_model_answers_a_batch_of_one_as_the_model(exported):
  # The empty-batch path must leave real batches alone.
  loaded, _, model, x = exported
  got = loaded.signatures["classify"](x=tf.constant(x[:1]))["logits"]
  np.testing.assert_allclose(got, model(x[:1])["logits"], atol=1e-5)


@pytest.mark.parametrize("y, message", [
    ([0, 1, 2], r"y must have shape \[n\].*length differs"),
    ([0], r"y must have shape \[n\].*length differs"),
    ([[0], [1]], r"y must be int32 of shape \[n\]"),
])
def test_saved_model_detect_names_the_label_shape(exported, y, message):
  loaded, _, _, x = exported
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    loaded.signatures["detect"](x=tf.constant(x[:2]),
                                y=tf.constant(y, tf.int32))


@pytest.mark.parametrize("beta", [-1.0, -1e-6, np.nan, np.inf, -np.inf])
def test_saved_model_rejects_bad_beta(exported, beta):
  loaded, _, _, x = exported
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"beta \(the inverse temperature β\) must be a "
                           r"finite number >= 0"):
    loaded.signatures["conditional_density"](x=tf.constant(x),
                                             beta=tf.constant(beta))


def test_saved_model_accepts_beta_zero(exported):
  loaded, _, _, x = exported
  out = loaded.signatures["conditional_density"](x=tf.constant(x),
                                                 beta=tf.constant(0.0))
  np.testing.assert_allclose(out["probabilities"], 0.1, atol=1e-7)


@pytest.mark.parametrize("beta", [-1.0, np.nan, np.inf, -np.inf])
def test_python_api_rejects_bad_beta(trained, beta):
  with pytest.raises(ValueError, match="finite number >= 0"):
    inference.conditional_density(trained[1], trained[2][:2], beta)


def test_sample_count_is_capped_at_export(exported):
  loaded, path, _, _ = exported
  with open(os.path.join(path, "ebmkit_export.json")) as f:
    assert json.load(f)["max_sample_count"] == 1024
  sample = loaded.signatures["sample"]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"num_samples must be <= 1024.*max_sample_count"):
    sample(num_samples=tf.constant(1025), steps=tf.constant(0),
           class_id=tf.constant(-1))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"num_samples must be <= 1024"):
    sample(num_samples=tf.constant(2**26), steps=tf.constant(0),
           class_id=tf.constant(-1))
  out = sample(num_samples=tf.constant(1024), steps=tf.constant(0),
               class_id=tf.constant(-1))["samples"]
  assert out.shape == (1024, 8, 8, 1)


def test_export_refuses_a_cap_below_one(trained, tmp_path):
  with pytest.raises(ValueError, match="max_sample_count must be >= 1"):
    serving.export(trained[1], str(tmp_path / "e"), max_sample_count=0)


# -- B: batches scaled to [0, 1] ----------------------------------------------

def unit_scaled(x):
  """What pixel / 255 gives, from images scaled as pixel / 127.5 - 1."""
  return (np.asarray(x) + 1.0) / 2.0


def test_train_step_rejects_a_batch_scaled_to_0_1():
  x, y = next(iter(data.load_dataset(split="train", batch_size=64)))
  model = models.EnergyModel(
      backbones.small_convnet(10, widths=(8,)),
      replay_buffer=buffer.ReplayBuffer(100, seed=1),
      sampler=sampling.LangevinSampler(2, 1.0, 0.01, seed=2))
  model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
  model.train_on_batch(x, y)  # The same batch, scaled right, trains.
  with pytest.raises(tf.errors.InvalidArgumentError, match=WRONG_SCALE):
    model.train_on_batch(unit_scaled(x), y)


def test_train_step_passes_real_training_batches():
  model = models.EnergyModel(
      backbones.small_convnet(10, widths=(8,)),
      replay_buffer=buffer.ReplayBuffer(100, seed=1),
      sampler=sampling.LangevinSampler(1, 1.0, 0.01, seed=2))
  model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
  # One epoch of the digits' training pipeline (σ_data noise included).
  model.fit(data.load_dataset(split="train", batch_size=64), epochs=1,
            verbose=0)


def test_python_api_rejects_a_batch_scaled_to_0_1(trained):
  x = next(iter(data.load_dataset(split="test", batch_size=16,
                                  training=False)))[0]
  with pytest.raises(ValueError, match=r"16 inputs.*" + SCALE_HINT):
    inference.predict(trained[1], unit_scaled(x))


def test_python_api_warns_on_a_small_batch_scaled_to_0_1(trained):
  x = trained[2][:15]
  with pytest.warns(UserWarning, match=r"wrongly scaled.*" + SCALE_HINT):
    predicted = inference.predict(trained[1], unit_scaled(x))
  assert predicted.shape == (15,)


def test_real_test_batches_pass_the_python_api(trained):
  model = trained[1]
  batches = 0
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    for x, _ in data.load_dataset(split="test", training=False):
      inference.predict(model, x)
      batches += 1
  assert batches == 6  # 360 test images, batch 64: the last one of 40.


def test_saved_model_rejects_a_batch_scaled_to_0_1(exported):
  loaded = exported[0]
  x = next(iter(data.load_dataset(split="test", batch_size=16,
                                  training=False)))[0]
  for name in ("classify", "ood_score"):
    with pytest.raises(tf.errors.InvalidArgumentError, match=WRONG_SCALE):
      loaded.signatures[name](x=tf.constant(unit_scaled(x), tf.float32))
  # Below 16 inputs the graph lets it pass (one bright image is legitimate).
  out = loaded.signatures["classify"](
      x=tf.constant(unit_scaled(x[:15]), tf.float32))
  assert out["logits"].shape == (15, 10)


def test_real_test_batches_pass_the_saved_model(exported):
  loaded, _, model, _ = exported
  for x, _ in data.load_dataset(split="test", training=False):
    got = loaded.signatures["classify"](x=x)["probabilities"]
    np.testing.assert_allclose(got, softmax(model(x)["logits"], -1),
                               atol=1e-5)


# -- C: export from a read-only workdir ----------------------------------------

def listing(folder):
  """Every path under `folder` with its size and mtime."""
  out = {}
  for root, dirs, files in os.walk(folder):
    for name in dirs + files:
      path = os.path.join(root, name)
      st = os.stat(path)
      out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns)
  return out


def set_writable(folder, writable):
  for root, dirs, files in os.walk(folder):
    for name in dirs + files + [""]:
      path = os.path.join(root, name)
      mode = os.stat(path).st_mode
      write = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
      os.chmod(path, (mode | stat.S_IWUSR) if writable else (mode & ~write))


@pytest.mark.slow
def test_command_line_exports_a_read_only_workdir(trained, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained[0], workdir)
  export_dir = str(tmp_path / "export")
  before = listing(workdir)
  set_writable(workdir, False)
  try:
    # Root ignores the permissions, so the listing is the test.
    proc = subprocess.run(
        [sys.executable, "-m", "ebmkit.run", "--mode=export",
         f"--workdir={workdir}", f"--export_dir={export_dir}",
         "--max_sample_count=8"],
        capture_output=True, text=True, timeout=600)
  finally:
    set_writable(workdir, True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert listing(workdir) == before
  with open(os.path.join(export_dir, "detection.json")) as f:
    detection = json.load(f)
  with open(os.path.join(export_dir, "ebmkit_export.json")) as f:
    meta = json.load(f)
  assert meta["detection"] == detection
  assert meta["max_sample_count"] == 8
  sample = tf.saved_model.load(export_dir).signatures["sample"]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"num_samples must be <= 8"):
    sample(num_samples=tf.constant(9), steps=tf.constant(0),
           class_id=tf.constant(-1))
  assert sample(num_samples=tf.constant(8), steps=tf.constant(1),
                class_id=tf.constant(3))["samples"].shape == (8, 8, 8, 1)
