"""Discriminator Driven Latent Sampling (Che et al., NeurIPS 2020): a GAN's
latent energy, and the calibration that turns a critic's score into a logit.

A GAN's generator G and discriminator logit d define an energy-based model
on the latent space,

    E(z) = −log p₀(z) − d(G(z)),

whose Langevin samples z, mapped through G, follow p_g(x)·e^{d(x)}/Z, the
data distribution when d is the optimal discriminator's logit (Che et al.,
section 3). With the standard normal prior, −log p₀(z) = ‖z‖²/2 + (k/2)
log 2π. `ebmkit.sampling.LangevinSampler` runs the chains: the paper's
update z ← z − (ε/2)∇E(z) + √ε·ξ is the sampler's α = ε/2, σ = √ε.

d must be a logit, log D/(1 − D) of a discriminator trained with the
logistic (non-saturating) loss. A hinge or Wasserstein critic's score is
not one; as in the paper (which follows DRS, Azadi et al. 2019, for its
SN-GAN, trained with the hinge loss), its score s(x) is calibrated first:
with the critic frozen, a logistic regression d(x) = a·s(x) + b is fitted to
tell real data (label 1) from G(z) (label 0) — `fit_calibration` — and
that d is the logit of the energy.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def standard_normal_prior(latent_dim):
  """p₀ = N(0, I_k), a `tfd.MultivariateNormalDiag`."""
  return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim]),
                                    scale_diag=tf.ones([latent_dim]))


@keras.saving.register_keras_serializable(package="ebmkit")
class LatentEnergy(keras.layers.Layer):
  """E(z) = −log p₀(z) − d(G(z)), with d(x) = a·D(x) + b.

  D is the discriminator's raw score and (a, b) its calibration (1, 0 for a
  discriminator trained as a logit; see `fit_calibration`). The networks are
  the GAN's own, used and not owned (they are not this layer's weights);
  the calibration's a and b are this layer's (non-trainable) weights, so a
  checkpoint of the GAN keeps them. Saved on its own (`.keras`), the layer
  keeps the networks too: its config holds theirs and Keras' saving writes
  every network an object refers to.

  Args:
    latent_dim: k, the size of z.
    generator: G, z [b, k] -> x.
    discriminator: D, x -> score [b, 1] (or [b]).
  """

  def __init__(self, latent_dim=2, generator=None, discriminator=None,
               **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.latent_dim = int(latent_dim)
    # Untracked: the GAN owns (and saves) the networks.
    object.__setattr__(self, "generator", generator)
    object.__setattr__(self, "discriminator", discriminator)
    self.calibration_scale = self.add_weight(
        shape=(), initializer="ones", trainable=False,
        name="calibration_scale")
    self.calibration_shift = self.add_weight(
        shape=(), initializer="zeros", trainable=False,
        name="calibration_shift")
    self.built = True

  @property
  def prior(self):
    """p₀, the latent prior N(0, I)."""
    return standard_normal_prior(self.latent_dim)

  def logit(self, x, training=False):
    """d(x) = a·D(x) + b, shape [batch]."""
    score = tf.cast(self.discriminator(x, training=training), tf.float32)
    score = tf.reshape(score, [-1])
    return self.calibration_scale * score + self.calibration_shift

  def call(self, z):
    """E(z), shape [batch]."""
    z = tf.cast(z, tf.float32)
    return -self.prior.log_prob(z) - self.logit(self.generator(z))

  def set_calibration(self, scale, shift):
    self.calibration_scale.assign(float(scale))
    self.calibration_shift.assign(float(shift))

  def compute_output_shape(self, input_shape):
    return (input_shape[0],)

  def get_config(self):
    ser = keras.saving.serialize_keras_object
    return {**super().get_config(), "latent_dim": self.latent_dim,
            "generator": ser(self.generator),
            "discriminator": ser(self.discriminator)}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in ("generator", "discriminator"):
      config[key] = keras.saving.deserialize_keras_object(config.get(key))
    return cls(**config)


def _log_loss(scores, labels, a, b):
  t = a * scores + b
  return float(np.mean(np.logaddexp(0.0, t) - labels * t))


def fit_calibration(real_scores, fake_scores, l2=1e-4, iterations=50):
  """The logistic regression d = a·s + b of real (1) vs generated (0) scores.

  Newton's method on the mean log loss plus (l2/2)·a² (which keeps a
  finite when the scores separate the two sets perfectly).

  Args:
    real_scores: the discriminator's raw scores of real data [n].
    fake_scores: its scores of G(z) [m].
    l2: ridge on the scale a.
    iterations: Newton steps (it converges in a handful).

  Returns:
    {"scale": a, "shift": b, "log_loss": the mean log loss of d,
      "log_loss_uncalibrated": that of d = s (a = 1, b = 0)}.
  """
  s = np.concatenate([np.ravel(real_scores), np.ravel(fake_scores)]).astype(
      np.float64)
  y = np.concatenate([np.ones(np.size(real_scores)),
                      np.zeros(np.size(fake_scores))])
  features = np.stack([s, np.ones_like(s)], 1)
  w = np.zeros(2)
  for _ in range(iterations):
    p = 1.0 / (1.0 + np.exp(-(features @ w)))
    grad = features.T @ (p - y) / len(s) + np.array([l2 * w[0], 0.0])
    hessian = (features.T * (p * (1 - p))) @ features / len(s) + np.diag(
        [l2, 1e-12])
    step = np.linalg.solve(hessian, grad)
    w -= step
    if np.max(np.abs(step)) < 1e-10:
      break
  return {"scale": float(w[0]), "shift": float(w[1]),
          "log_loss": _log_loss(s, y, w[0], w[1]),
          "log_loss_uncalibrated": _log_loss(s, y, 1.0, 0.0)}
