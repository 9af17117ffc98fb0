"""The private Keras, TensorFlow, TFDS and gin APIs of `ebmkit.compat` still
do what ebmkit needs of them. When an upgrade breaks one, this file says
which (and importing ebmkit says so at once when one is gone)."""

import os

import gin
import keras
import numpy as np
import tensorflow as tf

from ebmkit import compat
from ebmkit import gin_utils
from ebmkit.models import metrics as model_metrics


def test_a_reported_metric_direction_reaches_keras_callbacks():
  # EarlyStopping in mode "auto" reads a metric's direction only inside a
  # MetricsList. Names Keras cannot guess from ("acc"/"loss" in the name).
  model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
  up, down = keras.metrics.Mean("fidelity"), keras.metrics.Mean("spread")
  compat.set_metric_direction(up, "up")
  compat.set_metric_direction(down, "down")
  reported = [model_metrics.Reported(m) for m in (up, down)]
  assert isinstance(reported[0], compat.MetricsList)
  object.__setattr__(model, "_ebmkit_test_metrics", reported)
  model.__class__ = type("WithMetrics", (keras.Sequential,), {
      "metrics": property(lambda self: self._ebmkit_test_metrics)})
  for monitor, improves in (("fidelity", np.greater), ("spread", np.less)):
    stop = keras.callbacks.EarlyStopping(monitor=monitor, mode="auto")
    stop.set_model(model)
    stop._set_monitor_op()  # pylint: disable=protected-access
    assert stop.monitor_op(2.0, 1.0) == improves(2.0, 1.0), monitor


def test_flatten_layers_reaches_nested_layers():
  inner = keras.Sequential([keras.layers.Dense(2, name="deep")], name="inner")
  outer = keras.Sequential([keras.Input((3,)), inner,
                            keras.layers.BatchNormalization(name="bn")])
  names = {l.name for l in compat.flatten_layers(outer)}
  assert {"deep", "inner", "bn"} <= names


def test_a_checkpoint_manager_adopts_and_forgets_checkpoints(tmp_path):
  v = tf.Variable(0.0)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=v),
                                       str(tmp_path), max_to_keep=None)
  paths = [manager.save(checkpoint_number=i) for i in range(3)]
  compat.set_manager_checkpoints(manager, [paths[0], paths[2]], now=1.0)
  assert manager.checkpoints == [paths[0], paths[2]]
  assert manager.latest_checkpoint == paths[2]
  state = tf.train.get_checkpoint_state(str(tmp_path))
  assert list(state.all_model_checkpoint_paths) == [paths[0], paths[2]]
  compat.set_manager_checkpoints(manager, [paths[0]], now=1.0)
  assert tf.train.latest_checkpoint(str(tmp_path)) == paths[0]


def test_a_tfds_builder_takes_local_split_generators(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder("sklearn_digits", data_dir=str(tmp_path))
  marker = object()
  compat.replace_split_generators(builder, lambda dl_manager: marker)
  assert builder._split_generators(None) is marker  # pylint: disable=protected-access


def test_gin_private_state_is_where_ebmkit_reads_it():
  gin.clear_config()
  try:
    gin_utils.parse(["jem_digits.gin"], ["EPOCHS = 3"])
    assert any(os.path.isdir(p) for p in compat.gin_search_path())
    assert all(len(pair) == 2 and callable(pair[0]) and callable(pair[1])
               for pair in compat.gin_file_readers())
    bindings = dict(compat.gin_bindings())
    # A macro is a binding of "gin.macro" scoped by its name.
    assert bindings[("EPOCHS", "gin.macro")]["value"] == 3
    assert any(selector.endswith("train") and "epochs" in params
               for (_, selector), params in bindings.items())
    sampler = compat.gin_configurable("ebmkit.LangevinSampler")
    assert sampler is not None and sampler.wrapped.__name__ == (
        "LangevinSampler")
    assert compat.gin_configurable("no_such_thing") is None
  finally:
    gin.clear_config()


def test_a_missing_private_api_names_itself_and_the_tested_version():
  error = compat._missing("keras.layers.Layer._flatten_layers", "keras")  # pylint: disable=protected-access
  assert isinstance(error, ImportError)
  assert "keras.layers.Layer._flatten_layers" in str(error)
  assert f"keras=={compat.TESTED['keras']}.*" in str(error)
