"""What `EnergyModel` reports to Keras: its metric trackers, the metrics
users add with `compile(metrics=...)`, and each metric's direction for
Keras' monitoring callbacks."""

import keras
import tensorflow as tf

from ebmkit import compat
from ebmkit.models import objective

# Which way is better, for Keras' callbacks in mode="auto" (EarlyStopping,
# ModelCheckpoint, ReduceLROnPlateau). px_loss and pxy_loss (data-minus-
# sample energy gaps, which training holds near 0) and the energies (levels)
# have none: lower is not a better model, so monitoring them needs an
# explicit mode, as Keras' error then says.
DIRECTIONS = {"loss": "down", "clf_loss": "down", "l2_loss": "down",
              "accuracy": "up"}

# Strings for the accuracy the model reports anyway (as "accuracy").
ACCURACY_NAMES = ("accuracy", "acc")


class Reported(compat.MetricsList):
  """One metric as `EnergyModel.metrics` lists it, under the metric's name.

  Keras' monitoring callbacks in mode="auto" read a metric's `_direction`
  ("up"/"down") only from metrics inside a `MetricsList` or `CompileMetrics`
  (keras/src/callbacks/monitor_callback.py); a bare metric in `model.metrics`
  is never looked at, so `EarlyStopping(monitor="val_accuracy")` would need
  mode="max". Wrapped one by one, the metrics keep their own names and
  order in `metrics_names` and in `evaluate`'s list.
  """

  def __init__(self, metric):
    super().__init__([metric], name=metric.name)

  def result(self):
    return self.metrics[0].result()


def set_untracked(model, name, value):
  """Sets an attribute past Keras' and TensorFlow's tracking.

  For state that is not the model's: compiled metrics (Keras' `compile`
  does not track its own either, and a built model refuses new tracked
  state) and the compiled samplers (tracked, they would be saved with the
  model, and `tf.saved_model.save(model)` fails on their captured seed
  states).
  """
  object.__setattr__(model, name, value)


def trackers(names):
  """{name: metric} for the names the model reports: accuracy as Keras'
  SparseCategoricalAccuracy, the others as means, with their direction."""
  out = {}
  for name in names:
    if name == "accuracy":
      metric = keras.metrics.SparseCategoricalAccuracy(name)
    else:
      metric = keras.metrics.Mean(name)
      if name in DIRECTIONS:
        compat.set_metric_direction(metric, DIRECTIONS[name])
    out[name] = metric
  return out


def compiled_metric(identifier):
  """A `keras.metrics.Metric` for one entry of `compile(metrics=...)`."""
  metric = keras.metrics.get(identifier)
  if isinstance(metric, keras.metrics.Metric):
    return metric
  if callable(metric):  # A function (y_true, y_pred) -> values.
    return keras.metrics.MeanMetricWrapper(
        metric, name=getattr(metric, "__name__", None))
  raise ValueError(f"Unknown metric {identifier!r}.")


def compile_metrics(metrics, weighted_metrics, classifies, reported_names):
  """The (metric, reads sample_weight) pairs of `compile`'s `metrics` and
  `weighted_metrics`, checked against what the model reports.

  Raises:
    ValueError: for metrics not in a list, metrics on a model without
      classes, or a metric named like one the model reports.
  """
  extra = []
  for weighted, identifiers in ((False, metrics), (True, weighted_metrics)):
    if identifiers is None:
      continue
    if not isinstance(identifiers, (list, tuple)):
      raise ValueError(
          f"EnergyModel.compile takes metrics as a list (the model has one "
          f"classifier output), got {identifiers!r}.")
    if identifiers and not classifies:
      raise ValueError(
          "compile(metrics=...) are computed on class predictions, but "
          "this model has a ScalarEnergyHead (an unconditional EBM, no "
          "classes).")
    extra += [(compiled_metric(i), weighted) for i in identifiers
              if not (isinstance(i, str) and i in ACCURACY_NAMES)]
  names = list(reported_names) + [m.name for m, _ in extra]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(
        f"EnergyModel.compile: metric names must be unique, and "
        f"{', '.join(repeated)} is already reported (the model reports "
        f"{', '.join(reported_names)}); give the metric another `name`.")
  return extra


def update(trackers_, extra_metrics, classifies, loss, terms, logits, y,
           energy_samples, sample_weight=None):
  """Updates the model's trackers and compiled metrics with one batch."""
  t = trackers_
  t["loss"].update_state(loss)
  for name in objective.TERMS:
    if name in t and name in terms:
      t[name].update_state(terms[name])
  if classifies and y is not None:
    labels = tf.maximum(tf.cast(y, tf.int32), 0)
    weights = objective.example_weights(y, sample_weight)
    t["accuracy"].update_state(labels, logits, sample_weight=weights)
    if extra_metrics:
      probabilities = tf.nn.softmax(logits)
      labelled = objective.example_weights(y)
      for reported, weighted in extra_metrics:
        reported.metrics[0].update_state(
            labels, probabilities,
            sample_weight=weights if weighted else labelled)
  t["energy_data"].update_state(terms["energy_data"])
  if "energy_samples" in t and energy_samples is not None:
    t["energy_samples"].update_state(tf.reduce_mean(energy_samples))
