"""EnergyModel as a Keras user meets it: export after sampling, evaluate,
compile's metrics and loss, callbacks in mode "auto", summary, sample_weight
and the SavedModel's sample signature."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp
import tensorflow as tf

import ebmkit
from ebmkit.models import buffer
from ebmkit.models import energy_model as models
from ebmkit.models import heads as energy
from ebmkit.models import sampling
from ebmkit.networks import backbones

X = np.array([[1.0, -1.0], [0.3, 0.2], [-0.5, 0.9], [0.8, 0.6]], np.float32)
Y = np.array([0, 2, 1, 2])


def tiny_model(weights=(1.0, 1.0, 0.0, 0.0), num_classes=None, size=4,
               steps=0):
  """Dense logits over 2-d points; ρ = 0 and noise-free chains, so with
  steps=0 a chain's "sample" is its buffer slot's contents."""
  clf, px, pxy, l2 = weights
  model = models.EnergyModel(
      keras.Sequential([keras.layers.Dense(3, name="dense")]),
      replay_buffer=buffer.ReplayBuffer(size=size, reinit_prob=0.0,
                                        num_classes=num_classes, seed=0),
      sampler=sampling.LangevinSampler(steps=steps, noise=0.0, seed=1),
      clf_weight=clf, px_weight=px, pxy_weight=pxy, l2_weight=l2, seed=2)
  model.build((None, 2))
  model.replay_buffer.samples.assign(np.full((size, 2), 0.5, np.float32))
  return model


def dense_weights(model):
  return (v.numpy() for v in model.backbone.get_layer("dense").weights)


def digits_model(num_classes=None):
  model = models.EnergyModel(
      backbones.small_convnet(10, widths=(4,)),
      replay_buffer=buffer.ReplayBuffer(20, num_classes=num_classes, seed=0),
      sampler=sampling.LangevinSampler(2, seed=1))
  model.build((None, 8, 8, 1))
  return model


# -- 1. Exports after `model.sample()` ---------------------------------------


def test_exports_work_after_sampling_with_and_without_xla(tmp_path):
  model = digits_model()
  for jit_compile in (False, True):
    model.sample(3, steps=1, jit_compile=jit_compile)
    model.sample(y=[1, 2], steps=1, jit_compile=jit_compile)
  # The cache of compiled samplers is not model state: nothing to save.
  assert len(model._samplers) == 4  # pylint: disable=protected-access
  names = ebmkit.export(model, str(tmp_path / "ebmkit"))
  assert "sample" in names
  model.export(str(tmp_path / "keras"))
  tf.saved_model.save(model, str(tmp_path / "tf"))  # Failed on the cache.
  x = np.zeros((2, 8, 8, 1), np.float32)
  loaded = tf.saved_model.load(str(tmp_path / "keras"))
  np.testing.assert_allclose(loaded.serve(x)["logits"], model(x)["logits"],
                             atol=1e-6)
  loaded = tf.saved_model.load(str(tmp_path / "ebmkit"))
  np.testing.assert_allclose(
      loaded.signatures["classify"](x=x)["logits"], model(x)["logits"],
      atol=1e-6)


# -- 2. evaluate reports the training's metrics ------------------------------


def test_evaluate_reports_the_training_terms_by_hand():
  # SGD(0), zero SGLD steps and ρ = 0: the training step's samples are the
  # buffer's contents, which evaluation reads as they are, so both must give
  # the hand-computed objective, term by term.
  model = tiny_model(weights=(1.0, 0.5, 0.25, 0.1), num_classes=3, size=6)
  w, b = dense_weights(model)
  logits, s_logits = X @ w + b, np.full(2, 0.5) @ w + b
  e_d, e_s = -logsumexp(logits, -1), -logsumexp(s_logits)
  ce = -np.mean(log_softmax(logits, -1)[np.arange(4), Y])
  px = e_d.mean() - e_s
  pxy = np.mean(-logits[np.arange(4), Y]) - np.mean(-s_logits[Y])
  l2 = np.mean(e_d**2) + e_s**2
  expected = {
      "loss": ce + 0.5 * px + 0.25 * pxy + 0.1 * l2, "clf_loss": ce,
      "px_loss": px, "pxy_loss": pxy, "l2_loss": l2,
      "accuracy": np.mean(logits.argmax(-1) == Y), "energy_data": e_d.mean(),
      "energy_samples": e_s}
  model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
  evaluated = model.evaluate(X, Y, return_dict=True, verbose=0)
  trained = model.train_on_batch(X, Y, return_dict=True)
  assert set(evaluated) == set(trained) == set(expected)
  for key, value in expected.items():
    np.testing.assert_allclose(evaluated[key], value, rtol=1e-5, atol=1e-6,
                               err_msg=key)
    np.testing.assert_allclose(trained[key], value, rtol=1e-5, atol=1e-6,
                               err_msg=key)


def test_evaluate_list_lines_up_with_metrics_names():
  model = tiny_model(weights=(1.0, 1.0, 0.0, 0.0), steps=2)
  model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False,
                metrics=[keras.metrics.SparseTopKCategoricalAccuracy(
                    k=2, name="top2")])
  history = model.fit(X, Y, batch_size=2, epochs=1, verbose=0,
                      validation_data=(X, Y))
  as_list = model.evaluate(X, Y, verbose=0)
  as_dict = model.evaluate(X, Y, return_dict=True, verbose=0)
  assert len(as_list) == len(model.metrics_names)
  assert dict(zip(model.metrics_names, as_list)) == as_dict
  assert model.metrics_names[0] == "loss"
  assert set(history.history) == set(as_dict) | {f"val_{k}" for k in as_dict}


def test_evaluate_leaves_the_buffer_and_random_streams_alone():
  model = tiny_model(weights=(1.0, 1.0, 0.5, 0.0), num_classes=3, size=6)
  model.replay_buffer.samples.assign(
      np.random.default_rng(0).uniform(-1, 1, (6, 2)).astype(np.float32))
  model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
  before = [v.numpy().copy() for v in model.non_trainable_variables]
  first = model.evaluate(X, np.array([0, -1, 1, 2]), return_dict=True,
                         verbose=0)
  second = model.evaluate(X, np.array([0, -1, 1, 2]), return_dict=True,
                          verbose=0)
  assert first == second
  for old, new in zip(before, model.non_trainable_variables):
    np.testing.assert_array_equal(new.numpy(), old, err_msg=new.path)


def test_stored_reads_evenly_spaced_slots_of_the_labels_slices():
  buf = buffer.ReplayBuffer(size=12, num_classes=3)
  buf.build((1,))
  buf.samples.assign(np.arange(12, dtype=np.float32)[:, None])
  # Whole buffer, 4 of 12: slots 0, 3, 6, 9.
  np.testing.assert_array_equal(buf.stored(4)[:, 0], [0, 3, 6, 9])
  # Slices of 4 slots: class c holds slots 4c .. 4c+3; 4 labels read
  # offsets 0, 1, 2, 3 of their own slice.
  np.testing.assert_array_equal(buf.stored(4, tf.constant([2, 0, 1, 2]))[:, 0],
                                [8, 1, 6, 11])


# -- 3. compile: metrics honoured, loss refused ------------------------------


def test_compile_refuses_a_loss():
  model = tiny_model()
  with pytest.raises(ValueError, match="clf_weight, px_weight, pxy_weight"):
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
  with pytest.raises(ValueError, match="already reported"):
    model.compile(optimizer="sgd", metrics=[keras.metrics.Mean(name="loss")])


def test_compiled_metrics_read_p_y_given_x_against_the_labels():
  model = tiny_model()
  w, b = dense_weights(model)
  logits = X @ w + b
  model.compile(
      optimizer=keras.optimizers.SGD(0.0), jit_compile=False,
      metrics=["accuracy", "sparse_top_k_categorical_accuracy",
               keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"),
               keras.metrics.SparseCategoricalCrossentropy(name="xent")])
  logs = model.evaluate(X, Y, return_dict=True, verbose=0)
  # "accuracy" is the model's own; top-5 of 3 classes is always right.
  assert sorted(logs) == sorted([
      "loss", "clf_loss", "px_loss", "accuracy", "energy_data",
      "energy_samples", "sparse_top_k_categorical_accuracy", "top2", "xent"])
  assert logs["sparse_top_k_categorical_accuracy"] == 1.0
  ranks = (logits > logits[np.arange(4), Y][:, None]).sum(-1)
  np.testing.assert_allclose(logs["top2"], np.mean(ranks < 2))
  # Probabilities, not logits: the crossentropy metric is the clf loss.
  ce = -np.mean(log_softmax(logits, -1)[np.arange(4), Y])
  np.testing.assert_allclose(logs["xent"], ce, rtol=1e-5)
  history = model.fit(X, Y, batch_size=4, epochs=1, verbose=0,
                      validation_data=(X, Y))
  assert {"top2", "val_top2", "xent", "val_xent"} <= set(history.history)


def test_compiled_metrics_survive_a_keras_file(tmp_path):
  model = tiny_model()
  model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False,
                metrics=[keras.metrics.SparseTopKCategoricalAccuracy(
                    k=2, name="top2")])
  model.train_on_batch(X, Y)  # Builds the optimizer the file then holds.
  model.save(tmp_path / "m.keras")
  loaded = keras.models.load_model(tmp_path / "m.keras")
  assert "top2" in loaded.metrics_names
  assert isinstance(loaded.optimizer, keras.optimizers.Adam)


def test_metrics_need_classes():
  model = models.EnergyModel(
      keras.Sequential([keras.layers.Dense(4)]),
      head=energy.ScalarEnergyHead(), clf_weight=0.0)
  with pytest.raises(ValueError, match="ScalarEnergyHead"):
    model.compile(optimizer="sgd", metrics=["accuracy"])


# -- 4. Callbacks in mode "auto" --------------------------------------------


@pytest.mark.parametrize("monitor, best", [("val_accuracy", max),
                                           ("val_loss", min)])
def test_callbacks_in_auto_mode_find_the_direction(monitor, best, tmp_path):
  keras.utils.set_random_seed(0)
  model = tiny_model(steps=1)
  model.compile(optimizer=keras.optimizers.Adam(0.1), jit_compile=False)
  stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=10)
  path = str(tmp_path / "best.weights.h5")
  keep = keras.callbacks.ModelCheckpoint(path, monitor=monitor,
                                         save_best_only=True,
                                         save_weights_only=True)
  history = model.fit(X, Y, batch_size=2, epochs=4, verbose=0,
                      validation_data=(X, Y), callbacks=[stop, keep])
  expected_op = keras.ops.greater if best is max else keras.ops.less
  assert stop.monitor_op is expected_op and keep.monitor_op is expected_op
  assert keep.best == pytest.approx(best(history.history[monitor]))
  assert os.path.exists(path)


def test_contrastive_terms_carry_no_direction():
  model = tiny_model()
  model.compile(optimizer="sgd", jit_compile=False)
  stop = keras.callbacks.EarlyStopping(monitor="val_px_loss")
  with pytest.raises(ValueError, match="mode='min'"):
    model.fit(X, Y, epochs=1, verbose=0, validation_data=(X, Y),
              callbacks=[stop])


# -- 5. summary --------------------------------------------------------------


def test_summary_gives_shapes_and_names_the_replay_buffer():
  model = models.EnergyModel(
      backbones.small_convnet(10, widths=(4,)),
      replay_buffer=buffer.ReplayBuffer(2000))
  model.build((None, 8, 8, 1))
  lines = []
  model.summary(print_fn=lines.append)
  text = "\n".join(lines)
  rows = {name: row for row in text.splitlines() for name in
          ("energy_head", "replay_buffer (", "langevin_sampler")
          if name in row}
  assert len(rows) == 3, text
  for name, row in rows.items():
    assert "?" not in row, (name, text)
  assert "(None, 8, 8, 1)" in rows["replay_buffer ("]
  assert "128,000" in rows["replay_buffer ("]
  assert ("of which replay buffer ('replay_buffer'): 2,000 samples × "
          "(8, 8, 1) = 128,000 values") in text


# -- 6. sample_weight ---------------------------------------------------------


def test_sample_weight_weights_cross_entropy_and_accuracy_by_hand():
  model = tiny_model()
  w, b = dense_weights(model)
  logits = X @ w + b
  weight = np.array([2.0, 0.0, 1.0, 0.5], np.float32)
  ce = -log_softmax(logits, -1)[np.arange(4), Y]
  correct = logits.argmax(-1) == Y
  px = -logsumexp(logits, -1).mean() + logsumexp(np.full(2, 0.5) @ w + b)
  # Keras' "sum_over_batch_size" for the loss, a weighted mean for accuracy.
  clf = np.sum(ce * weight) / 4
  accuracy = np.sum(correct * weight) / np.sum(weight)
  model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
  trained = model.train_on_batch(X, Y, sample_weight=weight,
                                 return_dict=True)
  evaluated = model.evaluate(X, Y, sample_weight=weight, return_dict=True,
                             verbose=0)
  for logs in (trained, evaluated):
    np.testing.assert_allclose(logs["clf_loss"], clf, rtol=1e-5)
    np.testing.assert_allclose(logs["accuracy"], accuracy, rtol=1e-6)
    np.testing.assert_allclose(logs["loss"], clf + px, rtol=1e-5)
  # class_weight becomes sample_weight in Keras' data adapters.
  unweighted = model.evaluate(X, Y, return_dict=True, verbose=0)
  model.reset_metrics()
  history = model.fit(X, Y, batch_size=4, epochs=1, verbose=0,
                      class_weight={0: 2.0, 1: 1.0, 2: 0.5})
  by_class = np.array([2.0, 1.0, 0.5])[Y]
  np.testing.assert_allclose(history.history["clf_loss"][0],
                             np.sum(ce * by_class) / 4, rtol=1e-5)
  assert unweighted["clf_loss"] == pytest.approx(ce.mean(), rel=1e-5)


# -- 8. The SavedModel's sample signature ------------------------------------


def test_class_energy_of_an_unlabelled_example_is_its_energy():
  model = tiny_model()
  w, b = dense_weights(model)
  logits = X @ w + b
  np.testing.assert_allclose(
      model.class_energy(X, np.array([0, -1, 2, -1])),
      [-logits[0, 0], -logsumexp(logits[1]), -logits[2, 2],
       -logsumexp(logits[3])], rtol=1e-5)


SAMPLE_SIGNATURE_CLIENT = r"""
import sys
import tensorflow as tf
import ebmkit
from ebmkit.models import buffer
from ebmkit.models import energy_model as models
from ebmkit.models import sampling
from ebmkit.networks import backbones
model = models.EnergyModel(
    backbones.small_convnet(10, widths=(4,)),
    replay_buffer=buffer.ReplayBuffer(20), sampler=sampling.LangevinSampler(2))
model.build((None, 8, 8, 1))
ebmkit.export(model, sys.argv[1])
loaded = tf.saved_model.load(sys.argv[1])
for class_id in (3, -1):  # Conditional, then unconditional chains.
  samples = loaded.signatures["sample"](
      num_samples=tf.constant(2), steps=tf.constant(2),
      class_id=tf.constant(class_id))["samples"]
  assert samples.shape == (2, 8, 8, 1), samples.shape
print("ran")
"""


def test_sample_signature_runs_without_type_inference_errors(tmp_path):
  # TensorFlow logs the error (C++, to stderr) when it instantiates the
  # graph, as a warning: a process of its own, with warnings on (the tests'
  # TF_CPP_MIN_LOG_LEVEL=2 hides them, and it is read once, at import).
  client = tmp_path / "client.py"
  client.write_text(SAMPLE_SIGNATURE_CLIENT)
  proc = subprocess.run(
      [sys.executable, str(client), str(tmp_path / "export")],
      capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
  assert proc.returncode == 0 and "ran" in proc.stdout, proc.stderr[-3000:]
  assert "Type inference failed" not in proc.stderr, proc.stderr[-3000:]


def test_serving_default_is_the_first_signature(tmp_path):
  model = models.EnergyModel(
      backbones.small_convnet(8, widths=(4,)), head=energy.ScalarEnergyHead(),
      replay_buffer=buffer.ReplayBuffer(16), clf_weight=0.0)
  model.build((None, 8, 8, 1))
  ebmkit.export(model, str(tmp_path / "igebm"))
  signatures = tf.saved_model.load(str(tmp_path / "igebm")).signatures
  assert set(signatures["serving_default"].structured_outputs) == {"energy"}
