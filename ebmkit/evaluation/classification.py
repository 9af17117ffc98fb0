"""Evaluation parts of a classifying model: accuracy and calibration (ECE,
reliability diagram), and the detection threshold on E(x, y)."""

import numpy as np
import tensorflow as tf

from ebmkit.evaluation import common
from ebmkit.evaluation import metrics
from ebmkit.evaluation import plots
from ebmkit.models import inference


def classification(model, x_test, y_test, workdir, num_bins=15):
  """Test accuracy and calibration (ECE, reliability diagram).

  Args:
    model: a classifying EnergyModel.
    x_test, y_test: test images and int labels.
    workdir: the evaluated workdir (figures/reliability.png).
    num_bins: ECE bins (equal width).

  Returns:
    {"accuracy": ..., "calibration": {...}}.
  """
  log_pyx = np.concatenate([
      model(tf.constant(x_test[i:i + 500]))["log_pyx"].numpy()
      for i in range(0, len(x_test), 500)])
  probs = np.exp(log_pyx)
  bins = metrics.calibration_bins(probs, y_test, num_bins)
  ece = metrics.expected_calibration_error(probs, y_test, num_bins)
  as_list = lambda values: [None if np.isnan(v) else float(v) for v in values]
  return {"accuracy": float(np.mean(probs.argmax(-1) == y_test)),
          "calibration": {
              "ece": ece, "num_bins": num_bins,
              "bin_accuracy": as_list(bins["accuracy"]),
              "bin_confidence": as_list(bins["confidence"]),
              "bin_count": bins["count"].tolist(),
              "figure": plots.reliability_diagram(
                  bins, ece, common.figure_path(workdir, "reliability.png"))}}


def detection(model, x_held, y_held, x_test, y_test, held_out,
              target_fpr=0.05, calibration_examples=2000, batch_size=500):
  """The detection threshold on E(x, y), calibrated on held-out data and
  measured on the test split.

  Args:
    model: a classifying EnergyModel.
    x_held, y_held: held-out labelled images (the threshold's calibration).
    x_test, y_test: test images and labels (where it is measured).
    held_out: `held_out_split`'s description of them (for the report).
    target_fpr: false-positive rate the threshold is calibrated for.
    calibration_examples: held-out examples used at most.
    batch_size: examples per forward pass on the test split.

  Returns:
    {"calibration": description, "calibration_examples", "target_fpr",
      "threshold", "calibration_tpr", "test_fpr", "test_tpr", "test_examples"}.
  """
  n = min(calibration_examples, len(x_held))
  calibrated = inference.calibrate_detection(model, x_held[:n], y_held[:n],
                                             target_fpr)
  energies = np.concatenate([
      inference.class_energies(model, x_test[i:i + batch_size])
      for i in range(0, len(x_test), batch_size)])
  positive = np.zeros(energies.shape, bool)
  positive[np.arange(len(y_test)), y_test] = True
  accepted = energies <= calibrated["threshold"]
  return {"calibration": held_out, "calibration_examples": int(n),
          "target_fpr": float(target_fpr),
          "threshold": calibrated["threshold"],
          "calibration_tpr": calibrated["true_positive_rate"],
          "test_fpr": float(np.mean(accepted[~positive])),
          "test_tpr": float(np.mean(accepted[positive])),
          "test_examples": int(len(x_test))}
