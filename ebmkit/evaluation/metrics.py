"""Scalar metrics: calibration, AUROC, Inception Score, FID.

ECE comes from TensorFlow Probability and AUROC from scikit-learn; the bins
of the reliability diagram are computed here with TFP's binning, so the
diagram shows the bins its ECE sums over.
"""

import warnings

import numpy as np
from scipy import linalg
from sklearn import metrics as sk_metrics
import tensorflow as tf
import tensorflow_probability as tfp


def calibration_bins(probs, labels, num_bins=15):
  """Confidence/accuracy per equal-width confidence bin.

  The bins are TFP's (`tf.histogram_fixed_width_bins` over [0, 1]): bin i
  holds top probabilities in [i/num_bins, (i + 1)/num_bins), and 1.0 goes to
  the last bin.

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
  which = np.clip(np.floor(confidence * num_bins).astype(int), 0,
                  num_bins - 1)
  count = np.bincount(which, minlength=num_bins)
  with np.errstate(invalid="ignore"):
    conf = np.bincount(which, confidence, num_bins) / count
    acc = np.bincount(which, correct, num_bins) / count
  return {"confidence": conf, "accuracy": acc, "count": count, "edges": edges}


def expected_calibration_error(probs, labels, num_bins=15):
  """ECE = Σ_b (n_b / n) |accuracy_b − confidence_b| over equal-width bins
  (Guo et al. 2017, eq. 3), by `tfp.stats.expected_calibration_error`.

  Args:
    probs: [n, K] predicted class probabilities.
    labels: [n] true classes.
    num_bins: equal-width bins over [0, 1] of the top probability.

  Returns:
    The ECE as a float (TFP computes in float32).
  """
  # log p(y|x) are logits whose softmax gives `probs` back.
  log_probs = np.log(np.maximum(np.asarray(probs, np.float64), 1e-30))
  return float(tfp.stats.expected_calibration_error(
      num_bins, logits=tf.constant(log_probs, tf.float32),
      labels_true=tf.constant(np.asarray(labels), tf.int32)))


def auroc(scores_in, scores_out):
  """Area under the ROC curve for telling in-distribution (higher score) from
  out-of-distribution: P(s_in > s_out) + ½ P(s_in = s_out) (Mann–Whitney),
  by `sklearn.metrics.roc_auc_score` with the in-distribution side as 1.
  """
  scores_in = np.asarray(scores_in, np.float64).ravel()
  scores_out = np.asarray(scores_out, np.float64).ravel()
  if not len(scores_in) or not len(scores_out):
    raise ValueError("auroc needs at least one score on each side.")
  labels = np.concatenate([np.ones(len(scores_in)), np.zeros(len(scores_out))])
  return float(sk_metrics.roc_auc_score(
      labels, np.concatenate([scores_in, scores_out])))


def oriented_auroc(scores_in, scores_out, held_in, held_out):
  """AUROC with the score's sign chosen on held-out data.

  The sign is +1 when the held-out scores give AUROC ≥ ½ (the score points
  the way its definition says: higher = in-distribution), else −1; the
  reported AUROC is that of sign · score on the evaluated scores, so a
  score that points the wrong way for a model is not read as a failure of
  the score, and a sign picked on the evaluated data does not flatter it.

  Args:
    scores_in, scores_out: evaluated scores (in-distribution, OOD).
    held_in, held_out: held-out scores of both sides, disjoint from them.

  Returns:
    {"sign": ±1, "held_out_auroc": AUROC of the held-out scores,
      "auroc": AUROC of sign · score on the evaluated scores}.
  """
  held = auroc(held_in, held_out)
  sign = 1 if held >= 0.5 else -1
  return {"sign": sign, "held_out_auroc": held,
          "auroc": auroc(sign * np.asarray(scores_in, np.float64),
                         sign * np.asarray(scores_out, np.float64))}


def nearest_neighbour_distance(x, reference, batch_size=512):
  """L2 distance from each image to its nearest image in `reference`.

  Args:
    x: [n, ...] images.
    reference: [m, ...] images of the same shape.
    batch_size: rows of `x` per distance matrix.

  Returns:
    [n] float64 distances.
  """
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
  ref_sq = np.sum(ref ** 2, axis=1)
  out = []
  for i in range(0, len(x), batch_size):
    part = x[i:i + batch_size]
    # ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b, clipped at 0 against round-off.
    sq = np.sum(part ** 2, axis=1)[:, None] + ref_sq[None] - 2 * part @ ref.T
    out.append(np.sqrt(np.maximum(sq.min(axis=1), 0.0)))
  return np.concatenate(out) if out else np.zeros(0)


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
