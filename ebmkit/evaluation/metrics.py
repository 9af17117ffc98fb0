"""Scalar metrics: calibration, AUROC, Inception Score, FID (NumPy/SciPy)."""

import warnings

import numpy as np
from scipy import linalg


def calibration_bins(probs, labels, num_bins=15):
  """Confidence/accuracy per equal-width confidence bin.

  Args:
    probs: [n, K] predicted class probabilities.
    labels: [n] true classes.
    num_bins: equal-width bins over [0, 1] of the top probability.

  Returns:
    dict with `confidence`, `accuracy` (NaN for empty bins) and `count` per
    bin, and `edges` [num_bins + 1].
  """
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  confidence = probs.max(axis=1)
  correct = (probs.argmax(axis=1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  # Bin i holds confidences in (edges[i], edges[i + 1]]; 0 goes to bin 0.
  which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0,
                  num_bins - 1)
  count = np.bincount(which, minlength=num_bins)
  with np.errstate(invalid="ignore"):
    conf = np.bincount(which, confidence, num_bins) / count
    acc = np.bincount(which, correct, num_bins) / count
  return {"confidence": conf, "accuracy": acc, "count": count, "edges": edges}


def expected_calibration_error(probs, labels, num_bins=15):
  """ECE = Σ_b (n_b / n) |accuracy_b − confidence_b| over equal-width bins."""
  bins = calibration_bins(probs, labels, num_bins)
  filled = bins["count"] > 0
  weights = bins["count"][filled] / bins["count"].sum()
  return float(np.sum(weights * np.abs(bins["accuracy"][filled]
                                       - bins["confidence"][filled])))


def auroc(scores_in, scores_out):
  """Area under the ROC curve for telling in-distribution (higher score) from
  out-of-distribution: P(s_in > s_out) + ½ P(s_in = s_out) (Mann–Whitney).
  """
  scores_in = np.asarray(scores_in, np.float64).ravel()
  scores_out = np.asarray(scores_out, np.float64).ravel()
  if not len(scores_in) or not len(scores_out):
    raise ValueError("auroc needs at least one score on each side.")
  values = np.concatenate([scores_in, scores_out])
  order = np.argsort(values, kind="mergesort")
  ranks = np.empty(len(values))
  ranks[order] = np.arange(1, len(values) + 1)
  # Tied values share their average rank.
  _, inverse = np.unique(values, return_inverse=True)
  ranks = (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
  n_in, n_out = len(scores_in), len(scores_out)
  u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2
  return float(u / (n_in * n_out))


def inception_score(probs, eps=1e-12):
  """IS = exp(E_x KL(p(y|x) ‖ p(y))), p(y) the mean prediction."""
  probs = np.asarray(probs, np.float64)
  marginal = probs.mean(axis=0, keepdims=True)
  kl = np.sum(probs * (np.log(probs + eps) - np.log(marginal + eps)), axis=1)
  return float(np.exp(kl.mean()))


def frechet_distance(features_a, features_b):
  """FID between two feature sets: ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½)."""
  a = np.asarray(features_a, np.float64)
  b = np.asarray(features_b, np.float64)
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  with warnings.catch_warnings():
    # Features with dead units give singular covariances; the regularised
    # product below handles them, so SciPy's warning says nothing new.
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
      eye = np.eye(len(cov_a)) * 1e-6
      root = linalg.sqrtm((cov_a + eye) @ (cov_b + eye))
  root = np.real(root)
  return float(np.sum((mu_a - mu_b) ** 2)
               + np.trace(cov_a + cov_b - 2.0 * root))
