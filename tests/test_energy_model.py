"""EnergyModel: the loss against a hand computation, training, serialization."""

import os

import keras
import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp
import tensorflow as tf

from ebmkit.data import pipeline as data
from ebmkit.models import buffer
from ebmkit.models import energy_model as models
from ebmkit.models import heads as energy
from ebmkit.models import sampling
from ebmkit.networks import backbones


def tiny_model(weights=(1.0, 1.0, 0.0, 0.0), buffer_value=0.5, steps=0,
               step_size=1.0):
  clf, px, pxy, l2 = weights
  backbone = keras.Sequential([keras.layers.Dense(3, name="dense")])
  # Zero SGLD steps and ρ = 0: the "samples" are the buffer's own contents.
  model = models.EnergyModel(
      backbone,
      replay_buffer=buffer.ReplayBuffer(size=4, reinit_prob=0.0, seed=0),
      sampler=sampling.LangevinSampler(steps=steps, step_size=step_size,
                                       noise=0.0),
      clf_weight=clf, px_weight=px, pxy_weight=pxy, l2_weight=l2)
  model.build((None, 2))
  model.replay_buffer.samples.assign(np.full((4, 2), buffer_value, np.float32))
  return model


def test_loss_terms_match_hand_computation():
  model = tiny_model(weights=(1.0, 0.5, 0.25, 0.1))
  w, b = (v.numpy() for v in model.backbone.get_layer("dense").weights)
  x = np.array([[1.0, -1.0], [0.3, 0.2], [-0.5, 0.9]], np.float32)
  y = np.array([0, 2, 1])
  s = np.full((3, 2), 0.5, np.float32)
  ld, ls = x @ w + b, s @ w + b
  e_d, e_s = -logsumexp(ld, -1), -logsumexp(ls, -1)
  ce = -np.mean(log_softmax(ld, -1)[np.arange(3), y])
  px = e_d.mean() - e_s.mean()
  pxy = np.mean(-ld[np.arange(3), y]) - np.mean(-ls[np.arange(3), y])
  l2 = np.mean(e_d**2) + np.mean(e_s**2)
  expected = ce + 0.5 * px + 0.25 * pxy + 0.1 * l2

  model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
  logs = model.train_on_batch(x, y, return_dict=True)
  np.testing.assert_allclose(logs["clf_loss"], ce, rtol=1e-5)
  np.testing.assert_allclose(logs["px_loss"], px, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logs["pxy_loss"], pxy, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logs["l2_loss"], l2, rtol=1e-5)
  np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
  np.testing.assert_allclose(logs["energy_data"], e_d.mean(), rtol=1e-5)
  np.testing.assert_allclose(logs["energy_samples"], e_s.mean(), rtol=1e-5)


def test_gradient_step_matches_hand_gradient():
  # Only the p(x) term, SGD with learning rate 1: Δb = -∂L/∂b where
  # ∂(mean E(x) - mean E(x̂))/∂b = mean(-softmax(f(x))) + mean(softmax(f(x̂))).
  model = tiny_model(weights=(0.0, 1.0, 0.0, 0.0))
  w, b = (v.numpy() for v in model.backbone.get_layer("dense").weights)
  x = np.array([[1.0, -1.0], [0.3, 0.2]], np.float32)
  s = np.full((2, 2), 0.5, np.float32)
  softmax = lambda z: np.exp(log_softmax(z, -1))
  grad_b = -softmax(x @ w + b).mean(0) + softmax(s @ w + b).mean(0)
  model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=False)
  model.train_on_batch(x, np.zeros(2, np.int32))
  new_b = model.backbone.get_layer("dense").weights[1].numpy()
  np.testing.assert_allclose(new_b, b - grad_b, rtol=1e-5, atol=1e-6)


def test_training_writes_samples_back_to_the_buffer():
  model = tiny_model(buffer_value=0.5, steps=5, step_size=0.1)
  buf = model.replay_buffer
  # Record the slots the step writes (its draw's slots).
  drawn = tf.Variable(tf.fill([3], -1))
  write = buf.write

  def recording_write(indices, samples):
    drawn.assign(tf.cast(indices, tf.int32))
    return write(indices, samples)

  buf.write = recording_write
  model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
  # 3 chains, 4 slots: at least one slot is never drawn.
  model.train_on_batch(np.zeros((3, 2), np.float32), np.zeros(3, np.int32))
  # σ = 0 and ρ = 0: every chain starts at the buffer's (0.5, 0.5) and takes
  # the same 5 gradient steps on E(x) = −LogSumExp(xW + b), by hand
  # x ← x + α W softmax(xW + b).
  w, b = (v.numpy() for v in model.backbone.get_layer("dense").weights)
  x = np.full(2, 0.5)
  for _ in range(5):
    x = x + 0.1 * w @ np.exp(log_softmax(x @ w + b))
  assert np.abs(x - 0.5).max() > 1e-3  # The chain's end differs from 0.5.
  slots = set(drawn.numpy().tolist())
  assert slots <= {0, 1, 2, 3} and len(slots) < 4
  samples = buf.samples.numpy()
  for slot in range(4):
    if slot in slots:  # Every drawn slot holds its chain's end point.
      np.testing.assert_allclose(samples[slot], x, rtol=1e-5, err_msg=slot)
    else:  # Slots no chain visited did not move.
      np.testing.assert_array_equal(samples[slot], 0.5, err_msg=slot)


# Four epochs with XLA compilation: slow (the plain graph's run stays fast;
# tests/test_performance.py checks XLA's step against the plain one).
@pytest.mark.parametrize("jit_compile", [
    False, pytest.param(True, marks=pytest.mark.slow)])
def test_fit_on_digits_lifts_accuracy_well_above_chance(jit_compile):
  keras.utils.set_random_seed(0)
  train = data.load_dataset(split="train", batch_size=64)
  test = data.load_dataset(split="test", training=False)
  model = models.EnergyModel(
      backbones.small_convnet(10),
      replay_buffer=buffer.ReplayBuffer(500, seed=1),
      sampler=sampling.LangevinSampler(10, 1.0, 0.01, seed=2))
  model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
  history = model.fit(train, epochs=4, verbose=0,
                      callbacks=[keras.callbacks.History()])
  accuracy = model.evaluate(test, return_dict=True, verbose=0)["accuracy"]
  # Chance is 0.1; four epochs of JEM reach about 0.9 here.
  assert accuracy > 0.7
  assert np.all(np.isfinite(history.history["loss"]))


def test_scalar_head_model_trains_unconditionally():
  model = models.EnergyModel(
      backbones.small_convnet(16, widths=(8,)),
      head=energy.ScalarEnergyHead(),
      replay_buffer=buffer.ReplayBuffer(64, seed=0),
      sampler=sampling.LangevinSampler(3, 1.0, 0.01),
      clf_weight=0.0, px_weight=1.0, l2_weight=1.0)
  model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
  x = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 1)).astype(np.float32)
  logs = model.train_on_batch(x, np.zeros(8, np.int32), return_dict=True)
  assert "accuracy" not in logs and np.isfinite(logs["l2_loss"])
  assert model(x)["energy"].shape == (8,)


def test_scalar_head_cannot_classify():
  with pytest.raises(ValueError, match="clf_weight=0"):
    models.EnergyModel(backbones.small_convnet(4), head=energy.ScalarEnergyHead())


def round_trip_model():
  model = models.EnergyModel(
      backbones.small_convnet(10, widths=(8, 16)),
      replay_buffer=buffer.ReplayBuffer(20, reinit_prob=0.1, num_classes=10),
      sampler=sampling.LangevinSampler(3, 0.5, 0.02, clip_range=(-1, 1)),
      pxy_weight=0.5, l2_weight=0.1)
  model.build((None, 8, 8, 1))
  return model


def test_get_config_from_config():
  model = round_trip_model()
  clone = models.EnergyModel.from_config(model.get_config())
  assert clone.pxy_weight == 0.5 and clone.l2_weight == 0.1
  assert clone.replay_buffer.num_classes == 10
  assert clone.sampler.clip_range == (-1.0, 1.0)
  clone.build((None, 8, 8, 1))
  clone.set_weights(model.get_weights())
  x = np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
  np.testing.assert_array_equal(clone(x)["logits"], model(x)["logits"])


def test_keras_file_round_trip(tmp_path):
  model = round_trip_model()
  path = os.path.join(tmp_path, "model.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  x = np.random.default_rng(2).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
  for key in ("energy", "logits", "log_pyx"):
    np.testing.assert_array_equal(loaded(x)[key], model(x)[key])
  np.testing.assert_array_equal(loaded.replay_buffer.samples.numpy(),
                                model.replay_buffer.samples.numpy())


def test_standalone_sampler_lowers_the_energy():
  model = tiny_model(step_size=0.1)
  start_energy = float(tf.reduce_mean(model.energy(
      model.replay_buffer._uniform((256, 2)))))
  samples = model.sample(256, steps=50)
  # Langevin descent on E: samples sit lower than uniform starts.
  assert float(tf.reduce_mean(model.energy(samples))) < start_energy
  conditional = model.sample(y=[0, 1, 2], steps=5)
  assert conditional.shape == (3, 2)


def bn_model(separate_passes="auto"):
  backbone = keras.Sequential([
      keras.layers.BatchNormalization(momentum=0.5, epsilon=1e-3,
                                      center=False, scale=False, name="bn"),
      keras.layers.Dense(3, name="dense")])
  model = models.EnergyModel(
      backbone, replay_buffer=buffer.ReplayBuffer(size=4, reinit_prob=0.0),
      sampler=sampling.LangevinSampler(steps=0, noise=0.0),
      separate_passes=separate_passes)
  model.build((None, 2))
  # Every sample is (0.5, 0.5): its own batch statistics map it to 0.
  model.replay_buffer.samples.assign(np.full((4, 2), 0.5, np.float32))
  model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
  return model


def test_batch_norm_normalises_data_and_samples_by_their_own_statistics():
  model = bn_model()
  assert model.passes_apart
  w, b = (v.numpy() for v in model.backbone.get_layer("dense").weights)
  x = np.array([[1.0, -1.0], [0.3, 0.2], [-0.5, 0.9]], np.float32)
  normed = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
  logs = model.train_on_batch(x, np.array([0, 1, 2]), return_dict=True)
  np.testing.assert_allclose(logs["energy_data"],
                             np.mean(-logsumexp(normed @ w + b, -1)),
                             rtol=1e-5)
  np.testing.assert_allclose(logs["energy_samples"], -logsumexp(b),
                             rtol=1e-5)
  # Running averages: one update from the data, then one from the samples.
  bn = model.backbone.get_layer("bn")
  mean1, var1 = 0.5 * 0 + 0.5 * x.mean(0), 0.5 * 1 + 0.5 * x.var(0)
  np.testing.assert_allclose(bn.moving_mean.numpy(), 0.5 * mean1 + 0.5 * 0.5,
                             rtol=1e-5)
  np.testing.assert_allclose(bn.moving_variance.numpy(), 0.5 * var1,
                             rtol=1e-5)
  # One joint pass (what ebmkit did before) mixes the statistics.
  joint = bn_model(separate_passes=False)
  joint.backbone.set_weights(model.backbone.get_weights())
  joint.backbone.get_layer("bn").moving_mean.assign(np.zeros(2))
  joint.backbone.get_layer("bn").moving_variance.assign(np.ones(2))
  mixed = joint.train_on_batch(x, np.array([0, 1, 2]), return_dict=True)
  assert abs(mixed["energy_data"] - logs["energy_data"]) > 1e-2


def test_a_semi_supervised_step_reads_each_batch_for_its_terms():
  model = tiny_model(weights=(1.0, 1.0, 0.0, 0.0))
  w, b = (v.numpy() for v in model.backbone.get_layer("dense").weights)
  x_all = np.array([[1.0, -1.0], [0.3, 0.2], [-0.5, 0.9]], np.float32)
  x_lab = np.array([[0.7, 0.1], [-0.2, -0.4], [0.0, 1.0]], np.float32)
  y_lab = np.array([2, 0, 1])
  e_all = -logsumexp(x_all @ w + b, -1)
  e_s = -logsumexp(np.full(2, 0.5) @ w + b)
  ce = -np.mean(log_softmax(x_lab @ w + b, -1)[np.arange(3), y_lab])
  model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
  logs = model.train_on_batch(
      {models.IMAGES: x_all, models.LABELLED_IMAGES: x_lab}, y_lab,
      return_dict=True)
  np.testing.assert_allclose(logs["clf_loss"], ce, rtol=1e-5)
  np.testing.assert_allclose(logs["energy_data"], e_all.mean(), rtol=1e-5)
  np.testing.assert_allclose(logs["px_loss"], e_all.mean() - e_s, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(
      logs["accuracy"], np.mean((x_lab @ w + b).argmax(-1) == y_lab))
