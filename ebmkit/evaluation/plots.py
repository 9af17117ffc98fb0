"""Figures of the evaluation report (matplotlib, written as PNG).

Each figure has a `*_figure` function that builds it (tests read its
artists) and a function that saves it and returns the path.
"""

import os
import textwrap

# Figures are built as `matplotlib.figure.Figure` objects, not through pyplot:
# they need no backend (savefig picks the PNG writer), so importing ebmkit
# leaves the process's matplotlib backend as the user set it.
from matplotlib import figure as mpl_figure
import numpy as np

DPI = 110
GAP_LABEL = "gap: accuracy ↔ mean confidence"


def subplots(*args, figsize=None, **kwargs):
  """(figure, axes) as `pyplot.subplots` gives them, without pyplot."""
  fig = mpl_figure.Figure(figsize=figsize)
  return fig, fig.subplots(*args, **kwargs)


def save(fig, path, dpi=DPI):
  """Writes `fig` to `path` (PNG), making its folder; returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi)
  return path


def reliability_parts(bins):
  """What the reliability diagram draws, per non-empty bin.

  Args:
    bins: `metrics.calibration_bins`' dict.

  Returns:
    dict of arrays over the non-empty bins: `center`, `accuracy` (the bar
    heights), `gap_bottom` and `gap_top` (the gap box between accuracy and
    mean confidence: min and max of the two), `count`; and `width`.
  """
  edges = np.asarray(bins["edges"], np.float64)
  count = np.asarray(bins["count"])
  filled = count > 0
  accuracy = np.asarray(bins["accuracy"], np.float64)[filled]
  confidence = np.asarray(bins["confidence"], np.float64)[filled]
  return {"center": (0.5 * (edges[1:] + edges[:-1]))[filled],
          "width": float(edges[1] - edges[0]), "accuracy": accuracy,
          "gap_bottom": np.minimum(accuracy, confidence),
          "gap_top": np.maximum(accuracy, confidence),
          "count": count[filled]}


def reliability_figure(bins, ece, title=""):
  """Reliability diagram as in Guo et al. 2017: accuracy bars per confidence
  bin, an outlined, hatched gap box from each bar's top to the bin's mean
  confidence (above the bar: over-confident; inside it: under-confident),
  the diagonal of perfect calibration, and below, the examples per bin.

  Args:
    bins: `metrics.calibration_bins`' dict.
    ece: the expected calibration error (in the title).
    title: text before the ECE.

  Returns:
    The matplotlib Figure (axes 0: diagram, axes 1: counts).
  """
  parts = reliability_parts(bins)
  fig, (ax, ax_count) = subplots(
      2, 1, figsize=(4.6, 5.8), sharex=True,
      gridspec_kw={"height_ratios": (3, 1.2)})
  width = parts["width"]
  ax.bar(parts["center"], parts["accuracy"], width=width, color="#4c72b0",
         edgecolor="black", linewidth=0.6, label="accuracy")
  ax.bar(parts["center"], parts["gap_top"] - parts["gap_bottom"],
         bottom=parts["gap_bottom"], width=width, fill=False,
         edgecolor="#c44e52", hatch="///", linewidth=1.4, label=GAP_LABEL)
  ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
  total = int(np.sum(bins["count"]))
  ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
  fig.suptitle(f"{title} ECE = {100 * ece:.2f}% (n = {total})".strip(),
               fontsize=11)
  # Above the axes: inside, it would hide bars of one kind of model or the
  # other (under-confident ones fill the upper left, over-confident ones
  # leave the lower right).
  ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2,
            fontsize=8, frameon=False)
  ax_count.bar(parts["center"], parts["count"], width=width, color="#8c8c8c",
               edgecolor="black", linewidth=0.6, label="examples")
  for x, n in zip(parts["center"], parts["count"]):
    ax_count.annotate(str(int(n)), (x, n), ha="center", va="bottom",
                      fontsize=7)
  top = max(1, int(parts["count"].max())) if len(parts["count"]) else 1
  ax_count.set(xlabel="confidence (top p(y|x))", ylabel="examples",
               ylim=(0, 1.25 * top))
  fig.tight_layout()
  return fig


def reliability_diagram(bins, ece, path, title=""):
  """Saves `reliability_figure` to `path`; returns the path."""
  return save(reliability_figure(bins, ece, title), path)


def _as_picture(image):
  """[H, W, C] in [−1, 1] (NaN: blank) to something imshow draws as is."""
  image = np.clip(np.nan_to_num(np.asarray(image, np.float32), nan=-1.0),
                  -1.0, 1.0)
  image = (image + 1.0) / 2.0
  return image[..., 0] if image.shape[-1] == 1 else image


def image_table_figure(cells, row_labels=None, column_labels=None,
                       captions=None, title="", cell_inches=1.0):
  """A table of images with a label per row and column and an optional
  caption under each cell.

  Args:
    cells: [rows, columns, H, W, C] images in [−1, 1]; a cell that is all
      NaN is left empty.
    row_labels: one label per row (left of it), or None.
    column_labels: one label per column (above it), or None.
    captions: [rows][columns] text under each cell, or None.
    title: the figure's title.
    cell_inches: width and height of a cell (at 110 dpi, 1 inch ≈ 110 px).

  Returns:
    The matplotlib Figure; axes in row-major order, one per cell.
  """
  cells = np.asarray(cells, np.float32)
  rows, columns = cells.shape[:2]
  grey = cells.shape[-1] == 1
  fig, axes = subplots(
      rows, columns, squeeze=False,
      figsize=(columns * cell_inches + (0.9 if row_labels else 0.2),
               rows * cell_inches * (1.25 if captions else 1.0)
               + (0.5 if title or column_labels else 0.1)))
  for r in range(rows):
    for c in range(columns):
      ax = axes[r, c]
      ax.set_xticks([])
      ax.set_yticks([])
      if np.isnan(cells[r, c]).all():
        ax.axis("off")
        continue
      ax.imshow(_as_picture(cells[r, c]), cmap="gray" if grey else None,
                vmin=0.0, vmax=1.0, interpolation="nearest")
      if captions is not None and captions[r][c]:
        ax.set_xlabel(captions[r][c], fontsize=8)
    if row_labels is not None:
      axes[r, 0].set_ylabel(row_labels[r], fontsize=10, rotation=0,
                            ha="right", va="center")
  if column_labels is not None:
    for c in range(columns):
      axes[0, c].set_title(column_labels[c], fontsize=9)
  if title:
    # Wrapped to the figure's width (about 11 characters per inch at 10 pt).
    width = max(20, int(11 * fig.get_size_inches()[0]))
    fig.suptitle(textwrap.fill(title, width), fontsize=10)
  fig.tight_layout()
  return fig


def image_table(cells, path, **kwargs):
  """Saves `image_table_figure(cells, **kwargs)` to `path`; returns it."""
  return save(image_table_figure(cells, **kwargs), path)


def score_histograms(in_scores, ood_scores, score, path, title=""):
  """Histograms of one OOD score: the test set against each OOD set."""
  fig, ax = subplots(figsize=(5.5, 3.6))
  everything = np.concatenate([in_scores] + list(ood_scores.values()))
  everything = everything[np.isfinite(everything)]
  bins = np.linspace(np.percentile(everything, 0.5),
                     np.percentile(everything, 99.5), 50)
  ax.hist(in_scores, bins=bins, density=True, alpha=0.6, label="test (in)",
          color="black")
  for name, values in ood_scores.items():
    ax.hist(values, bins=bins, density=True, alpha=0.45, label=name)
  ax.set(xlabel=f"{score} (higher = in-distribution as defined)",
         ylabel="density", title=title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return save(fig, path)


def robustness_curves(curves, path, title=""):
  """Accuracy against ε, one panel per threat model.

  Args:
    curves: {norm: {label: (eps list, accuracy list)}}.
  """
  fig, axes = subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6),
                           squeeze=False)
  for ax, (norm, lines) in zip(axes[0], curves.items()):
    for label, (eps, acc) in lines.items():
      ax.plot(eps, acc, marker="o", label=label)
    ax.set(xlabel=f"ε ({'L∞' if norm == 'linf' else 'L2'}, inputs in [-1, 1])",
           ylabel="accuracy", ylim=(0, 1.02), title=f"{title} PGD {norm}")
    ax.legend(fontsize=8)
  fig.tight_layout()
  return save(fig, path)
