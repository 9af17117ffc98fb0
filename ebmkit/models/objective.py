"""The JEM objective's parts as functions of the model's outputs: the
batches' layout, the cross-entropy and the energy terms of the loss.

  L = w_clf·CE(f(x), y)
    + w_px ·(mean E(x) − mean E(x̂))            x̂ ~ SGLD on E(x)
    + w_pxy·(mean E(x, y) − mean E(x̂_y, y))    x̂_y ~ SGLD on E(x, y)
    + w_l2 ·mean(E(x)² + E(x̂)²)

`EnergyModel` runs the passes and the chains; this module turns their
outputs into the terms (`loss_terms`) and their weighted sum (`total`).
"""

import keras
import tensorflow as tf

from ebmkit.models import heads as energy_lib

# The loss terms, in the order of their weights (w_clf, w_px, w_pxy, w_l2).
TERMS = ("clf_loss", "px_loss", "pxy_loss", "l2_loss")

# Semi-supervised batches: x is a dict of the p(x) batch (all images) and the
# cross-entropy batch (labelled images only); y labels the latter.
IMAGES = "images"
LABELLED_IMAGES = "labelled_images"


def split_images(x):
  """(p(x) images, labelled images or None) of a batch's x."""
  if isinstance(x, dict):
    missing = {IMAGES, LABELLED_IMAGES} - set(x)
    if missing:
      raise ValueError(
          f"A dict batch needs the keys {IMAGES!r} (images for p(x)) and "
          f"{LABELLED_IMAGES!r} (the labelled images); it lacks "
          f"{', '.join(sorted(missing))}.")
    return x[IMAGES], x[LABELLED_IMAGES]
  return x, None


def require_labels(y, weight):
  """Raises a clear error when a term weighted by `weight` has no labels."""
  if y is None:
    raise ValueError(f"{weight} > 0 needs labels: the data set must yield "
                     "(image, label) pairs.")


def example_weights(y, sample_weight=None):
  """Per-example weights of the cross-entropy and the classifier metrics:
  0 for unlabelled examples (label < 0), else `sample_weight` (default 1)."""
  weights = tf.cast(tf.cast(y, tf.int32) >= 0, tf.float32)
  if sample_weight is not None:
    weights *= tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
  return weights


def cross_entropy(logits, y, sample_weight=None):
  """CE(f(x), y) summed over the labelled examples (label >= 0), weighted
  by `sample_weight`, divided by their number (Keras'
  "sum_over_batch_size" over the labelled part)."""
  require_labels(y, "clf_weight")
  # Labels < 0 mark unlabelled examples (semi-supervised training): they
  # count in the energy terms but not in the cross-entropy.
  labelled = example_weights(y)
  ce = keras.losses.sparse_categorical_crossentropy(
      tf.maximum(tf.cast(y, tf.int32), 0), logits, from_logits=True)
  weights = example_weights(y, sample_weight)
  return tf.reduce_sum(ce * weights) / tf.maximum(tf.reduce_sum(labelled),
                                                  1.0)


def loss_terms(named, y, chains, clf_weight, l2_weight, sample_weight=None):
  """Each term of the loss from the parts' (backbone output, energy).

  Args:
    named: {"data", "labelled" (semi-supervised only), and each chain's
      name ("px", "pxy")}: (backbone output, E of that output).
    y: the labels of the cross-entropy batch (or None).
    chains: (name, samples, labels or None) of the step's chains.
    clf_weight: w_clf (the cross-entropy is computed only when > 0).
    l2_weight: w_l2 (the L2 term is computed only when > 0).
    sample_weight: per-example weights of the cross-entropy.

  Returns:
    (terms: {"energy_data", and the weighted terms}, the classifier's
      output, E(x̂) of the first chain or None).
  """
  data_out, e_data = named["data"]
  clf_out = named["labelled"][0] if "labelled" in named else data_out
  terms = {"energy_data": tf.reduce_mean(e_data)}
  energy_samples = None
  if clf_weight:
    terms["clf_loss"] = cross_entropy(clf_out, y, sample_weight)
  for name, _, labels in chains:
    sample_out, e_marginal = named[name]
    if name == "px":
      e_samples = e_marginal
      terms["px_loss"] = tf.reduce_mean(e_data) - tf.reduce_mean(e_samples)
    else:
      e_samples = energy_lib.class_energy_from_logits(sample_out, labels)
      terms["pxy_loss"] = (
          tf.reduce_mean(energy_lib.class_energy_from_logits(clf_out,
                                                             labels))
          - tf.reduce_mean(e_samples))
    if energy_samples is None:
      energy_samples = e_samples
  if l2_weight:
    l2 = tf.reduce_mean(tf.square(e_data))
    if energy_samples is not None:
      l2 += tf.reduce_mean(tf.square(energy_samples))
    terms["l2_loss"] = l2
  return terms, clf_out, energy_samples


def total(terms, weights):
  """L: the terms weighted by (w_clf, w_px, w_pxy, w_l2) and summed."""
  return tf.add_n([w * terms[t] for t, w in zip(TERMS, weights) if w])
