"""ebmkit.models.mcmc: MALA and HMC from tensorflow-probability hit the
moments and mode masses of known targets, adapt their step size, log their
acceptance, and run wherever a LangevinSampler runs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ebmkit import gin_utils
from ebmkit.gan import model as gan
from ebmkit.gan import networks as gan_networks
from ebmkit.models import mcmc
from ebmkit.models import sampling

from conftest import compiled_digits_model

N = 4000  # independent chains: the standard error of a mean is 1/√N.


def standard_normal(x):
  return 0.5 * tf.reduce_sum(tf.square(x), -1)


# A two-mode mixture in 1-D: 0.3·N(−3, 0.5²) + 0.7·N(3, 0.5²).
W, MU, S = np.array([0.3, 0.7]), np.array([-3.0, 3.0]), 0.5


def mixture_energy(x):
  z = (x - MU) / S  # [n, 2]
  return -tf.reduce_logsumexp(np.log(W) - 0.5 * tf.square(z), -1)


def mixture_draw(n, rng):
  comp = rng.choice(2, n, p=W)
  return (MU[comp] + S * rng.standard_normal(n))[:, None].astype(np.float32)


@pytest.mark.parametrize("kernel, eps", [("mala", 0.5), ("hmc", 0.3)])
def test_standard_normal_moments(kernel, eps):
  """From N(0, 4I), 100 transitions reach N(0, I): means within 5 standard
  errors (5/√N = 0.08) of 0, variances within 5·√(2/N) = 0.11 of 1."""
  x0 = np.random.default_rng(0).normal(0, 2, (N, 2)).astype(np.float32)
  sampler = mcmc.MCMCSampler(kernel=kernel, steps=100, step_size=eps, seed=0)
  x = sampler(x0, energy_fn=standard_normal).numpy()
  np.testing.assert_allclose(x.mean(0), 0.0, atol=5 / np.sqrt(N))
  np.testing.assert_allclose(x.var(0), 1.0, atol=5 * np.sqrt(2 / N))
  assert 0.3 < float(sampler.acceptance_rate) <= 1.0


@pytest.mark.parametrize("kernel, eps", [("mala", 0.1), ("hmc", 0.1)])
def test_a_two_mode_mixture_keeps_its_mode_masses_and_spread(kernel, eps):
  """Started from the mixture itself, the Metropolis-adjusted chains keep it:
  the right mode's mass 0.7 within 5·√(0.21/N) = 0.036, each mode's
  variance 0.25 within 20%. SGLD with JEM's noise σ = 0.01 (and α = 0.1:
  JEM's α = 1 times this target's curvature 1/0.5² = 4 overshoots, and the
  chains diverge), started the same way, keeps the masses (its chains stay
  in their basins) but not the spread: it collapses each mode to a point,
  since a calibrated step with α = 0.1 would have σ = √0.2 ≈ 0.45."""
  x0 = mixture_draw(N, np.random.default_rng(1))
  sampler = mcmc.MCMCSampler(kernel=kernel, steps=50, step_size=eps, seed=1)
  x = sampler(x0, energy_fn=mixture_energy).numpy()[:, 0]
  right = x > 0
  assert abs(right.mean() - 0.7) < 5 * np.sqrt(0.21 / N)
  for mode, mu in ((right, 3.0), (~right, -3.0)):
    assert abs(x[mode].mean() - mu) < 0.05
    assert abs(x[mode].var() / S ** 2 - 1) < 0.2
  sgld = sampling.LangevinSampler(steps=50, step_size=0.1, noise=0.01,
                                  seed=1)
  y = sgld(x0, energy_fn=mixture_energy).numpy()[:, 0]
  assert abs((y > 0).mean() - 0.7) < 5 * np.sqrt(0.21 / N)
  assert y[y > 0].var() < 0.1 * S ** 2


@pytest.mark.parametrize("kernel, target", [("mala", 0.574), ("hmc", 0.65)])
def test_step_size_adapts_towards_the_target_acceptance(kernel, target):
  x0 = np.random.default_rng(2).normal(0, 1, (1000, 2)).astype(np.float32)
  sampler = mcmc.MCMCSampler(kernel=kernel, steps=150, step_size=3.0,
                             adapt_step_size=True, seed=2)
  x = sampler(x0, energy_fn=standard_normal)
  assert float(sampler.current_step_size) < 3.0
  sampler(x, energy_fn=standard_normal)  # Starts from the adapted ε.
  assert abs(float(sampler.acceptance_rate) - target) < 0.1


def test_jem_trains_with_mala_and_logs_its_acceptance():
  model = compiled_digits_model(["ebmkit.EnergyModel.sampler = "
                                 "@ebmkit.MCMCSampler()",
                                 "ebmkit.MCMCSampler.steps = 3",
                                 "ebmkit.MCMCSampler.step_size = 0.01"])
  assert isinstance(model.sampler, mcmc.MCMCSampler)
  rng = np.random.default_rng(0)
  logs = model.train_on_batch(
      rng.uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32),
      rng.integers(0, 10, 16), return_dict=True)
  assert 0.0 <= logs["acceptance"] <= 1.0
  assert np.isfinite(logs["loss"])
  # The evaluation's fresh samples run through the same sampler.
  samples = model.sample(4, steps=2)
  assert samples.shape == (4, 8, 8, 1)


def test_ddls_runs_mala_on_the_latent_energy():
  model = gan.GAN(gan_networks.dcgan_generator(latent_dim=4, width=8),
                  gan_networks.dcgan_discriminator(width=8), loss="hinge",
                  latent_sampler=mcmc.MCMCSampler(steps=5, step_size=0.05,
                                                  seed=0))
  model.build((None, 8, 8, 1))
  model.latent_energy.set_calibration(1.0, 0.0)
  out = model.ddls_sample(6)
  assert out.shape == (6, 8, 8, 1)
  assert 0.0 <= float(model.latent_sampler.acceptance_rate) <= 1.0


def test_the_sampler_round_trips_and_bad_settings_are_named():
  sampler = mcmc.MCMCSampler(kernel="hmc", steps=7, step_size=0.2,
                             leapfrog_steps=3, adapt_step_size=True, seed=4)
  clone = mcmc.MCMCSampler.from_config(sampler.get_config())
  assert (clone.kernel, clone.steps, clone.step_size, clone.leapfrog_steps,
          clone.adapt_step_size, clone.target_accept) == (
              "hmc", 7, 0.2, 3, True, 0.65)
  assert keras.saving.get_registered_object("ebmkit>MCMCSampler") is (
      mcmc.MCMCSampler)
  for kwargs, message in (({"kernel": "nuts"}, "kernel must be one of"),
                          ({"step_size": 0}, "step_size"),
                          ({"steps": -1}, "steps must be"),
                          ({"target_accept": 1.5}, "target_accept")):
    with pytest.raises(ValueError, match=message):
      mcmc.MCMCSampler(**kwargs)


def test_the_shipped_sampler_parts_parse():
  for part in ("samplers/mala.gin", "samplers/hmc.gin"):
    gin_utils.parse(["jem_digits.gin", part])
    from ebmkit.training import experiment  # pylint: disable=g-import-not-at-top
    assert isinstance(experiment.configured_model().sampler,
                      mcmc.MCMCSampler)
    import gin  # pylint: disable=g-import-not-at-top
    gin.clear_config()
