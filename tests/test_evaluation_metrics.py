"""ECE, AUROC, IS, FID and nearest-neighbour distances against hand
computations."""

import numpy as np
import pytest

from ebmkit.evaluation import metrics


def two_class(confidence, n, n_correct):
  probs = np.tile([confidence, 1 - confidence], (n, 1))
  labels = np.array([0] * n_correct + [1] * (n - n_correct))
  return probs, labels


def test_ece_is_zero_for_a_calibrated_predictor():
  parts = [two_class(0.6, 100, 60), two_class(0.9, 50, 45),
           two_class(0.75, 40, 30)]
  probs = np.concatenate([p for p, _ in parts])
  labels = np.concatenate([l for _, l in parts])
  # TFP computes in float32: zero up to its rounding.
  assert metrics.expected_calibration_error(probs, labels) == pytest.approx(
      0.0, abs=1e-6)


def test_ece_by_hand():
  # Bin of 0.9: 2 examples, 1 correct → |0.5 − 0.9| = 0.4, weight 1/2.
  # Bin of 0.7: 2 examples, 2 correct → |1 − 0.7| = 0.3, weight 1/2.
  p1, l1 = two_class(0.9, 2, 1)
  p2, l2 = two_class(0.7, 2, 2)
  ece = metrics.expected_calibration_error(np.concatenate([p1, p2]),
                                           np.concatenate([l1, l2]))
  assert ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.3, abs=1e-6)


def test_tfp_ece_and_our_bins_agree_by_hand():
  # 15 bins of width 1/15: 0.62 and 0.64 share bin 9 ([0.6, 0.667)), 0.97
  # is in bin 14, 1.0 goes to the last bin too (TFP's histogram bins).
  # Bin 9: confidences 0.62, 0.64, 0.64 (mean 0.6333), 1 of 3 correct;
  # bin 14: 0.97, 1.0 (mean 0.985), 2 of 2 correct.
  # ECE = 3/5 · |1/3 − 0.6333| + 2/5 · |1 − 0.985| = 0.18 + 0.006 = 0.186.
  conf = np.array([0.62, 0.64, 0.64, 0.97, 1.0])
  probs = np.stack([conf, 1 - conf], axis=1)
  labels = np.array([0, 1, 1, 0, 0])
  bins = metrics.calibration_bins(probs, labels, num_bins=15)
  assert list(np.flatnonzero(bins["count"])) == [9, 14]
  assert list(bins["count"][[9, 14]]) == [3, 2]
  np.testing.assert_allclose(bins["accuracy"][[9, 14]], [1 / 3, 1.0])
  np.testing.assert_allclose(bins["confidence"][[9, 14]], [1.9 / 3, 0.985])
  from_bins = np.nansum(bins["count"] / 5 * np.abs(
      bins["accuracy"] - bins["confidence"]))
  assert from_bins == pytest.approx(0.186, abs=1e-12)
  assert metrics.expected_calibration_error(probs, labels) == pytest.approx(
      0.186, abs=1e-6)


def test_calibration_bins_have_equal_width():
  probs = np.array([[0.55, 0.45], [0.95, 0.05]])
  bins = metrics.calibration_bins(probs, np.array([0, 1]), num_bins=10)
  assert list(np.flatnonzero(bins["count"])) == [5, 9]
  assert bins["accuracy"][9] == 0.0 and bins["confidence"][5] == 0.55


def test_auroc_by_hand_with_ties():
  # Pairs: (3>1), (3>2), (2>1), (2=2 → ½): 3.5 / 4.
  assert metrics.auroc([3, 2], [1, 2]) == pytest.approx(0.875)
  assert metrics.auroc([5, 6], [1, 2]) == 1.0
  assert metrics.auroc([1, 2], [5, 6]) == 0.0
  assert metrics.auroc([1, 1, 1], [1, 1]) == 0.5


def test_oriented_auroc_takes_its_sign_from_held_out_data():
  # A score that points the wrong way: in-distribution lower.
  scores_in, scores_out = [1.0, 2.0], [3.0, 4.0]
  flipped = metrics.oriented_auroc(scores_in, scores_out, [0.0, 1.0],
                                   [2.0, 5.0])
  assert flipped == {"sign": -1, "held_out_auroc": 0.0, "auroc": 1.0}
  # Held-out data that points the defined way keeps the sign, even where
  # the evaluated scores then look bad: the sign is not fitted to them.
  kept = metrics.oriented_auroc(scores_in, scores_out, [3.0, 2.0],
                                [1.0, 2.0])
  assert kept == {"sign": 1, "held_out_auroc": 0.875, "auroc": 0.0}


def test_auroc_matches_pairwise_count():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 5, 40).astype(float)
  b = rng.integers(0, 5, 30).astype(float)
  pairwise = np.mean((a[:, None] > b[None]) + 0.5 * (a[:, None] == b[None]))
  assert metrics.auroc(a, b) == pytest.approx(pairwise)


def test_inception_score_extremes():
  assert metrics.inception_score(np.full((50, 10), 0.1)) == pytest.approx(1.0)
  one_hot = np.eye(10)[np.arange(100) % 10]
  assert metrics.inception_score(one_hot) == pytest.approx(10.0, rel=1e-6)


def test_frechet_distance():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(2000, 4))
  assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
  # Same covariance, mean shifted by d: FID = ‖d‖² exactly.
  d = np.array([1.0, -2.0, 0.5, 0.0])
  assert metrics.frechet_distance(a, a + d) == pytest.approx(5.25, rel=1e-6)
  noise = rng.normal(size=a.shape)
  small = metrics.frechet_distance(a, a + 0.1 * noise)
  large = metrics.frechet_distance(a, a + 0.5 * noise)
  assert 0 < small < large


def test_nearest_neighbour_distance_by_hand():
  reference = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
  x = np.array([[0.0, 1.0], [3.0, 0.0], [9.0, 0.0]])
  # (0, 1) → (0, 0): 1; (3, 0) → (0, 0): 3 (to (3, 4): 4); (9, 0) → 1.
  np.testing.assert_allclose(
      metrics.nearest_neighbour_distance(x, reference, batch_size=2),
      [1.0, 3.0, 1.0])
  images = np.arange(8.0).reshape(2, 2, 2, 1)  # Flattened per image.
  np.testing.assert_allclose(metrics.nearest_neighbour_distance(
      images + 0.5, images), [1.0, 1.0])  # √(4 · 0.25).

