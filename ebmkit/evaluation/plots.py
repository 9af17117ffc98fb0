"""Figures of the evaluation report (matplotlib, written as PNG)."""

import os

import matplotlib

matplotlib.use("Agg")  # Files only; no display needed.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def _save(fig, path):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def reliability_diagram(bins, ece, path, title=""):
  """Accuracy against confidence per bin, with the diagonal of perfect
  calibration and each bin's share of examples."""
  edges = bins["edges"]
  centers = 0.5 * (edges[1:] + edges[:-1])
  width = edges[1] - edges[0]
  accuracy = np.nan_to_num(bins["accuracy"])
  fig, ax = plt.subplots(figsize=(4.2, 4.2))
  ax.bar(centers, accuracy, width=width, edgecolor="black", color="#4c72b0",
         label="accuracy")
  gap = np.nan_to_num(bins["confidence"]) - accuracy
  ax.bar(centers, gap, bottom=accuracy, width=width, color="#dd8452",
         alpha=0.5, edgecolor="#dd8452", label="gap to confidence")
  ax.plot([0, 1], [0, 1], "k--", linewidth=1)
  ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
         title=f"{title} ECE = {100 * ece:.2f}%".strip())
  ax.legend(loc="upper left")
  return _save(fig, path)


def score_histograms(in_scores, ood_scores, score, path, title=""):
  """Histograms of one OOD score: the test set against each OOD set."""
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  everything = np.concatenate([in_scores] + list(ood_scores.values()))
  everything = everything[np.isfinite(everything)]
  bins = np.linspace(np.percentile(everything, 0.5),
                     np.percentile(everything, 99.5), 50)
  ax.hist(in_scores, bins=bins, density=True, alpha=0.6, label="test (in)",
          color="black")
  for name, values in ood_scores.items():
    ax.hist(values, bins=bins, density=True, alpha=0.45, label=name)
  ax.set(xlabel=score, ylabel="density", title=title)
  ax.legend(fontsize=8)
  return _save(fig, path)


def robustness_curves(curves, path, title=""):
  """Accuracy against ε, one panel per threat model.

  Args:
    curves: {norm: {label: (eps list, accuracy list)}}.
  """
  fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6),
                           squeeze=False)
  for ax, (norm, lines) in zip(axes[0], curves.items()):
    for label, (eps, acc) in lines.items():
      ax.plot(eps, acc, marker="o", label=label)
    ax.set(xlabel=f"ε ({'L∞' if norm == 'linf' else 'L2'}, inputs in [-1, 1])",
           ylabel="accuracy", ylim=(0, 1.02), title=f"{title} PGD {norm}")
    ax.legend(fontsize=8)
  return _save(fig, path)
