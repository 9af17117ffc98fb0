"""The Langevin sampler against analytic energies."""

import numpy as np
import pytest
import tensorflow as tf

from ebmkit import sampling

MEAN = np.array([1.0, -2.0], np.float32)
COV = np.array([[1.0, 0.6], [0.6, 0.5]], np.float32)
PRECISION = np.linalg.inv(COV).astype(np.float32)


def gaussian_energy(x):
  """E(x) = ½ (x − μ)ᵀ Σ⁻¹ (x − μ), so exp(−E) ∝ N(μ, Σ)."""
  d = x - MEAN
  return 0.5 * tf.reduce_sum((d @ PRECISION) * d, axis=-1)


def test_samples_a_2d_gaussian():
  # Unadjusted Langevin with σ² = 2α targets exp(−E). For a Gaussian its
  # stationary covariance is known exactly: Σ_α = 2α (I − (I − αP)²)⁻¹
  # (P the precision), within 0.3% of Σ at α = 0.005.
  step = 0.005
  sampler = sampling.LangevinSampler(steps=1500, step_size=step,
                                     noise=np.sqrt(2 * step), seed=1)
  run = sampling.compiled_sampler(sampler, gaussian_energy)
  chains = 4000
  x = run(tf.zeros([chains, 2]), 1500).numpy()
  a = np.eye(2) - step * PRECISION
  cov_alpha = 2 * step * np.linalg.inv(np.eye(2) - a @ a)
  # Tolerances: ~5 standard errors of 4,000 independent chains.
  np.testing.assert_allclose(x.mean(0), MEAN, atol=0.08)
  np.testing.assert_allclose(np.cov(x.T), cov_alpha, atol=0.08)
  np.testing.assert_allclose(cov_alpha, COV, atol=0.01)


def test_noise_free_sgld_is_gradient_descent():
  # E(x) = ½‖x‖², step α: x_{t+1} = (1 − α) x_t.
  sampler = sampling.LangevinSampler(steps=3, step_size=0.1, noise=0.0)
  x = sampler(tf.constant([[2.0, -4.0]]),
              energy_fn=lambda v: 0.5 * tf.reduce_sum(v * v, -1))
  np.testing.assert_allclose(x, [[2.0 * 0.9**3, -4.0 * 0.9**3]], rtol=1e-6)


def test_gradient_clip_and_clip_range():
  # E(x) = −100·x: gradient −100 per step, clipped to −0.5; then clamped to 1.
  sampler = sampling.LangevinSampler(steps=3, step_size=1.0, noise=0.0,
                                     grad_clip=0.5, clip_range=(-1.0, 1.0))
  energy_fn = lambda v: -100.0 * tf.reduce_sum(v, -1)
  x = sampler(tf.constant([[-1.0], [0.2]]), energy_fn=energy_fn)
  np.testing.assert_allclose(x, [[0.5], [1.0]])
  one = sampler(tf.constant([[-1.0]]), energy_fn=energy_fn, steps=1)
  np.testing.assert_allclose(one, [[-0.5]])


def test_xla_matches_eager():
  # Noise-free, so both paths must do the same arithmetic (TensorFlow's
  # stateless RNG picks different algorithms under XLA and on the CPU, so noisy
  # chains are compared in distribution, in test_samples_a_2d_gaussian).
  energy_fn = lambda v: tf.reduce_sum(tf.sin(3 * v) * v, -1)
  x0 = tf.random.stateless_uniform([8, 3], seed=[1, 2], minval=-1, maxval=1)
  sampler = sampling.LangevinSampler(steps=10, step_size=0.1, noise=0.0,
                                     grad_clip=2.0, clip_range=(-1, 1))
  eager = sampler(x0, energy_fn=energy_fn)
  xla = sampling.compiled_sampler(sampler, energy_fn)(x0, 10)
  assert not np.allclose(eager, x0, atol=1e-2)  # The chain moved.
  np.testing.assert_allclose(eager, xla, atol=1e-5)


def test_no_gradient_flows_to_the_energy_parameters():
  w = tf.Variable(2.0)
  sampler = sampling.LangevinSampler(steps=2, step_size=0.1, noise=0.0)
  with tf.GradientTape() as tape:
    x = sampler(tf.ones([2, 1]), energy_fn=lambda v: w * tf.reduce_sum(v, -1))
    total = tf.reduce_sum(x)
  assert tape.gradient(total, w) is None


@pytest.mark.parametrize("kwargs, message", [
    ({"step_size": -1.0}, "step_size"),
    ({"noise": -0.1}, "noise"),
    ({"steps": -2}, "steps"),
    ({"grad_clip": 0.0}, "grad_clip"),
    ({"clip_range": (1.0, -1.0)}, "clip_range"),
])
def test_bad_settings_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    sampling.LangevinSampler(**kwargs)


def test_missing_energy_fn_is_explained():
  with pytest.raises(ValueError, match="energy_fn"):
    sampling.LangevinSampler()(tf.zeros([1, 2]))


def test_config_round_trip():
  s = sampling.LangevinSampler(steps=7, step_size=0.5, noise=0.0,
                               grad_clip=0.01, clip_range=(-1, 1), seed=4)
  t = sampling.LangevinSampler.from_config(s.get_config())
  assert (t.steps, t.step_size, t.noise, t.grad_clip, t.clip_range, t.seed) == (
      7, 0.5, 0.0, 0.01, (-1.0, 1.0), 4)
