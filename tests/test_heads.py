"""Energy heads: the identities that make a classifier an EBM."""

import numpy as np
from scipy.special import log_softmax, logsumexp, softmax

from ebmkit.models import heads as energy

RNG = np.random.default_rng(0)


def test_energy_is_negative_logsumexp_of_logits():
  logits = RNG.normal(size=(5, 7)).astype(np.float32) * 3
  out = energy.EnergyHead()(logits)
  np.testing.assert_allclose(out["energy"], -logsumexp(logits, axis=-1),
                             rtol=1e-5)
  np.testing.assert_allclose(out["log_px"], logsumexp(logits, axis=-1),
                             rtol=1e-5)
  np.testing.assert_allclose(out["class_energy"], -logits)


def test_p_y_given_x_is_softmax():
  logits = RNG.normal(size=(4, 3)).astype(np.float32)
  out = energy.EnergyHead()(logits)
  np.testing.assert_allclose(np.exp(out["log_pyx"]), softmax(logits, axis=-1),
                             rtol=1e-5)
  np.testing.assert_allclose(out["log_pyx"], log_softmax(logits, axis=-1),
                             atol=1e-5)


def test_log_joint_minus_log_marginal_is_log_conditional():
  # log p(x, y) - log p(x) = -E(x, y) + E(x) = log p(y|x) (Z cancels).
  logits = RNG.normal(size=(6, 10)).astype(np.float32) * 2
  out = energy.EnergyHead()(logits)
  lhs = -np.asarray(out["class_energy"]) + np.asarray(out["energy"])[:, None]
  np.testing.assert_allclose(lhs, out["log_pyx"], atol=1e-5)


def test_class_energy_picks_the_label():
  logits = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
  e = energy.class_energy_from_logits(logits, np.array([2, 0]))
  np.testing.assert_allclose(e, [-3.0, -4.0])


def test_scalar_head_is_linear_readout():
  head = energy.ScalarEnergyHead()
  features = RNG.normal(size=(3, 2, 2, 1)).astype(np.float32)
  out = head(features)
  w, b = (np.asarray(v) for v in head.dense.get_weights())
  expected = -(features.reshape(3, 4) @ w[:, 0] + b[0])
  assert out["energy"].shape == (3,)
  np.testing.assert_allclose(out["energy"], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["log_px"], -expected, rtol=1e-5, atol=1e-6)
