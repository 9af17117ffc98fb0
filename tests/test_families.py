"""The model families and stabilisers, built from their shipped configs."""

import keras
import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from ebmkit import gin_utils
from ebmkit.data import pipeline as data
from ebmkit.models import buffer
from ebmkit.training import experiment
from ebmkit.training import schedules
from ebmkit.training import train as train_lib

SAMPLER_PARTS = ["samplers/class_conditional_px.gin", "samplers/short_run.gin",
                 "samplers/clamped.gin", "samplers/noise_free.gin",
                 "samplers/informative_init.gin", "samplers/l2_energy.gin"]


def build_from(gin_files, bindings=()):
  gin_utils.parse(gin_files, list(bindings))
  info = data.dataset_info("sklearn_digits")
  model = experiment.build_model(info)
  model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=False)
  return model


def test_igebm_energy_is_one_scalar_per_example():
  model = build_from(["igebm_digits.gin"])
  out = model(np.zeros((5, 8, 8, 1), np.float32))
  assert out["energy"].shape == (5,) and "logits" not in out
  assert not model.classifies
  # Every convolution is spectrally normalised.
  wrapped = [l for l in model.backbone._flatten_layers()
             if isinstance(l, keras.layers.SpectralNormalization)]
  assert len(wrapped) == 1 + 2 * 4 + 1  # conv0, two per block, one skip.


def test_factored_variant_samples_from_its_class_slice():
  model = build_from(["jem_factored_digits.gin"],
                     ["BUFFER_SIZE = 100", "SGLD_STEPS = 1"])
  buf = model.replay_buffer
  assert buf.num_classes == 10 and buf.slice_size == 10
  before = buf.samples.numpy().copy()
  x = np.full((32, 8, 8, 1), -1.0, np.float32)  # Black images.
  model.train_on_batch(x, np.full(32, 3, np.int32))
  changed = np.flatnonzero(np.any(buf.samples.numpy() != before,
                                  axis=(1, 2, 3)))
  assert len(changed) > 0 and np.all(changed // 10 == 3)


def test_class_conditional_px_chains_use_all_slices():
  model = build_from(["jem_digits.gin", "samplers/class_conditional_px.gin"],
                     ["BUFFER_SIZE = 100", "SGLD_STEPS = 1"])
  before = model.replay_buffer.samples.numpy().copy()
  # Labels all 3, but y ~ p(y) for the p(x) chains: every slice moves. With
  # 256 chains a given slice is missed with probability 0.9^256 ≈ 2e-12.
  model.train_on_batch(np.full((256, 8, 8, 1), -1.0, np.float32),
                       np.full(256, 3, np.int32))
  changed = np.flatnonzero(np.any(model.replay_buffer.samples.numpy() != before,
                                  axis=(1, 2, 3)))
  assert set(changed // 10) == set(range(10))


@pytest.mark.parametrize("part", SAMPLER_PARTS)
def test_each_sampler_part_trains_a_step(part, tmp_path):
  gin_utils.parse(["jem_digits.gin", part],
                  ["train.epochs = 1", "train.train_split = 'train[:128]'",
                   "BUFFER_SIZE = 100", "SGLD_STEPS = 2",
                   "train.checkpoint_every_steps = 0"])
  results = train_lib.train(workdir=str(tmp_path))
  assert results["steps"] == 2
  metrics = results["train_metrics_last_epoch"]
  assert "loss" in metrics
  for key, value in metrics.items():
    assert np.isfinite(value), key  # Neither NaN nor Inf.


def test_informative_init_matches_the_class_statistics():
  images, labels = [], []
  for x, y in data.load_dataset(split="train", batch_size=479, data_noise=0.0):
    images.append(x.numpy())
    labels.append(y.numpy())
  images, labels = np.concatenate(images), np.concatenate(labels)
  b = buffer.ReplayBuffer(size=100, num_classes=10, init="informative",
                          init_covariance="diagonal", seed=0)
  b.build((8, 8, 1))
  b.fit_informative_init(images, labels)
  starts = b.fresh(4000, tf.fill([4000], 7)).numpy()
  sevens = images[labels == 7]
  # Each pixel is N(μ, σ²) of class 7 (σ² = variance + 1e-4), clipped to
  # [-1, 1]: E[clip(X)] = -Φ(α) + 1 - Φ(β) + μ(Φ(β) - Φ(α)) + σ(φ(α) - φ(β))
  # with α = (-1 - μ)/σ, β = (1 - μ)/σ. Tolerance: 5 standard errors.
  mu, sd = sevens.mean(0), np.sqrt(sevens.var(0) + 1e-4)
  lo, hi = (-1 - mu) / sd, (1 - mu) / sd
  expected = (-stats.norm.cdf(lo) + 1 - stats.norm.cdf(hi)
              + mu * (stats.norm.cdf(hi) - stats.norm.cdf(lo))
              + sd * (stats.norm.pdf(lo) - stats.norm.pdf(hi)))
  np.testing.assert_array_less(np.abs(starts.mean(0) - expected),
                               5 * sd / np.sqrt(4000) + 1e-6)
  # The buffer itself was reset from the Gaussians: slice 7 looks like 7s.
  slice7 = b.samples.numpy()[70:80].mean(0)
  assert np.corrcoef(slice7.ravel(), sevens.mean(0).ravel())[0, 1] > 0.5


def test_warmup_step_decay_by_hand():
  s = schedules.WarmupStepDecay(1e-3, warmup_steps=10, decay_epochs=(2, 3),
                                decay_rate=0.3, steps_per_epoch=100)
  for step, expected in ((0, 1e-4), (4, 5e-4), (9, 1e-3), (199, 1e-3),
                         (200, 3e-4), (299, 3e-4), (300, 9e-5)):
    np.testing.assert_allclose(float(s(step)), expected, rtol=1e-5)
  assert schedules.WarmupStepDecay.from_config(s.get_config()).steps_per_epoch \
      == 100


def test_train_fills_in_the_schedules_steps_per_epoch(tmp_path):
  gin_utils.parse(["jem_digits.gin", "optimization/jem_schedule.gin"],
                  ["train.epochs = 1", "train.train_split = 'train[:128]'",
                   "BUFFER_SIZE = 100", "SGLD_STEPS = 1",
                   "DECAY_EPOCHS = (1,)", "WARMUP_STEPS = 1",
                   "train.checkpoint_every_steps = 0"])
  results = train_lib.train(workdir=str(tmp_path))
  # 2 steps per epoch; at step 2 (epoch 1) the rate is 1e-4 (jem_schedule's
  # LEARNING_RATE, parsed last) × 0.3.
  np.testing.assert_allclose(results["learning_rate"], 3e-5, rtol=1e-5)
