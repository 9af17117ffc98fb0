"""The four uses of an energy-based model (LeCun et al., "A tutorial on
energy-based learning"), with input validation, on a trained EnergyModel.

prediction: argmin_y E(x, y); ranking: which of y1, y2 is more compatible
with x; detection: is E(x, y) below a threshold calibrated for a target
false-positive rate; conditional density: p(y|x) at inverse temperature β.
"""

import numpy as np
import tensorflow as tf

from ebmkit.models import validation


def check_inputs(model, x):
  """Validates a batch of inputs for `model`; returns it as float32.

  The one input check (`validation.check_array`) against the model's sample
  shape and data range.

  Raises:
    ValueError: wrong rank, shape or dtype, NaN/Inf, or values outside the
      model's data range (with `validation.TOLERANCE`).
  """
  return validation.check_array(x, model.replay_buffer.sample_shape,
                                model.replay_buffer.data_range)


def _check_labels(model, y, n):
  y = np.asarray(y)
  if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
    raise ValueError(f"Labels must be {n} integers (one per input), got "
                     f"dtype {y.dtype} shape {y.shape}.")
  if y.min() < 0 or y.max() >= model.num_classes:
    raise ValueError(f"Labels must be in [0, {model.num_classes}), got "
                     f"values in [{y.min()}, {y.max()}].")
  return y.astype(np.int32)


def class_energies(model, x):
  """E(x, y) for every y, [n, K] (validated inputs)."""
  if not model.classifies:
    raise ValueError("This model has no classes (a ScalarEnergyHead).")
  x = check_inputs(model, x)
  if not len(x):  # The backbone's convolutions fail on zero examples.
    return np.zeros((0, model.num_classes), np.float32)
  return model(x)["class_energy"].numpy()


def predict(model, x):
  """Prediction: argmin_y E(x, y), int [n]."""
  return class_energies(model, x).argmin(-1)


def rank(model, x, y1, y2):
  """Ranking: E(x, y1) − E(x, y2) per example; negative means y1 is more
  compatible with x than y2."""
  energies = class_energies(model, x)
  n = len(energies)
  y1, y2 = _check_labels(model, y1, n), _check_labels(model, y2, n)
  return energies[np.arange(n), y1] - energies[np.arange(n), y2]


def calibrate_detection(model, x, y, target_fpr=0.05):
  """Detection threshold on E(x, y) for a target false-positive rate.

  On held-out labelled data, the incompatible pairs (x, y') with y' ≠ y are
  the negatives; the threshold is the `target_fpr` quantile of their
  energies, so that a fraction `target_fpr` of them falls at or below it.

  Returns:
    dict with `threshold`, `target_fpr`, the calibration set's
    `true_positive_rate` (compatible pairs detected) and sizes.
  """
  if not 0 < target_fpr < 1:
    raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}.")
  energies = class_energies(model, x)
  n, k = energies.shape
  y = _check_labels(model, y, n)
  positive = np.zeros_like(energies, bool)
  positive[np.arange(n), y] = True
  threshold = float(np.quantile(energies[~positive], target_fpr))
  return {"threshold": threshold, "target_fpr": float(target_fpr),
          "true_positive_rate": float(np.mean(energies[positive]
                                              <= threshold)),
          "negatives": int((~positive).sum()), "positives": int(n)}


def detect(model, x, y, threshold):
  """Detection: is y compatible with x, i.e. E(x, y) <= threshold; bool [n]."""
  energies = class_energies(model, x)
  y = _check_labels(model, y, len(energies))
  return energies[np.arange(len(y)), y] <= threshold


def conditional_density(model, x, beta=1.0):
  """p(y|x) = exp(−βE(x, y)) / Σ_y' exp(−βE(x, y')), [n, K].

  Raises:
    ValueError: β (`beta`) negative, NaN or infinite (β = ∞ would give NaN,
      not the argmin's one-hot; a large finite β does that).
  """
  if not np.isfinite(beta) or beta < 0:
    raise ValueError(f"beta (inverse temperature) must be a finite number "
                     f">= 0, got {beta}.")
  return tf.nn.softmax(-beta * class_energies(model, x), axis=-1).numpy()
