"""ebmkit.evaluation.ood: Liu et al.'s energy score by hand, on any Keras
classifier and in the evaluation's OOD scores."""

import keras
import numpy as np
import pytest
from scipy import special

import ebmkit
from ebmkit.evaluation import ood
from ebmkit.evaluation import ood_detection

from conftest import compiled_digits_model


def test_the_energy_score_is_t_times_logsumexp_by_hand():
  logits = np.array([[1.0, 2.0, -3.0], [10.0, 10.0, 10.0]], np.float32)
  for t in (1.0, 0.5, 1000.0):
    want = t * special.logsumexp(logits / t, axis=-1)
    np.testing.assert_allclose(ood.neg_free_energy(logits, t), want,
                               rtol=1e-5)
  # Second row by hand: T·log(3·e^{10/T}) = 10 + T·log 3.
  np.testing.assert_allclose(ood.neg_free_energy(logits, 2.0)[1],
                             10 + 2 * np.log(3), rtol=1e-6)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    ood.neg_free_energy(logits, 0.0)


def test_any_keras_classifier_gets_the_energy_score():
  rng = np.random.default_rng(0)
  classifier = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
  x = rng.standard_normal((7, 5)).astype(np.float32)
  logits = classifier(x).numpy()
  got = ebmkit.energy_score(classifier, x, temperature=3.0, batch_size=3)
  np.testing.assert_allclose(got, 3.0 * special.logsumexp(logits / 3.0, -1),
                             rtol=1e-5)


def test_at_t_1_it_is_jems_log_px():
  model = compiled_digits_model()
  x = np.random.default_rng(1).uniform(-1, 1, (6, 8, 8, 1)).astype(np.float32)
  scores = ood.scores(model, x, energy_temperatures=(1.0, 10.0))
  np.testing.assert_allclose(scores["neg_energy_T1"], scores["log_px"],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ebmkit.energy_score(model, x, 10.0),
                             scores["neg_energy_T10"], rtol=1e-5)


def test_the_ood_tables_carry_the_energy_score(tmp_path):
  model = compiled_digits_model()
  x = np.random.default_rng(2).uniform(-1, 1, (32, 8, 8, 1)).astype(
      np.float32)
  out = ood_detection.ood_detection(
      model, x, "sklearn_digits", str(tmp_path), sets=("constant",),
      examples=16, energy_temperatures=(2.0,))
  assert set(out["auroc"]) == {"log_px", "max_prob", "neg_grad_norm",
                               "neg_energy_T2"}
  assert 0.0 <= out["auroc"]["neg_energy_T2"]["constant"] <= 1.0
