"""Every private Keras, TensorFlow, TFDS and gin API ebmkit relies on, in one place.

Each is used because no public API does the job; the reason is next to it.
Importing this module checks that each still exists and fails with a message
naming the API and the versions ebmkit was tested with; `tests/test_compat.py`
checks that each still behaves as ebmkit needs. pyproject.toml pins these
packages below their next minor version, so an install does not pick up an
untested one; raising a pin means running that test first.
"""

import importlib.metadata

import gin
import keras
import tensorflow as tf
import tensorflow_datasets as tfds

# The versions this module was checked against (tests/test_compat.py).
TESTED = {"keras": "3.15", "tensorflow": "2.21", "tensorflow-datasets": "4.9",
          "gin-config": "0.5"}


class PrivateApiError(ImportError):
  """A private API ebmkit uses is missing from an installed package."""


def _missing(what, package):
  try:
    installed = importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    installed = "not installed"
  return PrivateApiError(
      f"ebmkit relies on {what}, which {package} {installed} lacks; ebmkit "
      f"was tested with {package} {TESTED[package]}.x. Install that version "
      f"(pip install '{package}=={TESTED[package]}.*') or report it.")


try:
  # Keras' monitoring callbacks (EarlyStopping, ModelCheckpoint,
  # ReduceLROnPlateau) in mode="auto" read a metric's direction only from
  # metrics inside this container (keras/src/callbacks/monitor_callback.py);
  # Keras exports no public name for it.
  from keras.src.trainers.compile_utils import MetricsList  # pylint: disable=g-import-not-at-top,unused-import
except ImportError as e:
  raise _missing("keras.src.trainers.compile_utils.MetricsList",
                 "keras") from e

if not hasattr(keras.layers.Layer, "_flatten_layers"):
  raise _missing("keras.layers.Layer._flatten_layers", "keras")
if not hasattr(tf.train.CheckpointManager, "_record_state"):
  raise _missing("tf.train.CheckpointManager._record_state", "tensorflow")
if not hasattr(tfds.core.GeneratorBasedBuilder, "_split_generators"):
  raise _missing("tfds.core.GeneratorBasedBuilder._split_generators",
                 "tensorflow-datasets")
for _name in ("_LOCATION_PREFIXES", "_FILE_READERS", "_CONFIG", "_REGISTRY"):
  if not hasattr(gin.config, _name):
    raise _missing(f"gin.config.{_name}", "gin-config")

# pylint: disable=protected-access


def set_metric_direction(metric, direction):
  """Tells Keras' monitoring callbacks which way `metric` improves ("up" or
  "down"): the attribute they read, which has no public setter."""
  metric._direction = direction


def flatten_layers(layer):
  """`layer` and every layer inside it, at any depth (Keras has no public
  recursive listing; `layer.layers` is one level of a Sequential/Model)."""
  return list(layer._flatten_layers())


def set_manager_checkpoints(manager, paths, now):
  """Makes a `tf.train.CheckpointManager` list exactly `paths` (oldest
  first) and writes its index file. It has no public way to adopt or forget
  a checkpoint; its state is an ordered dict of path → timestamp.

  Args:
    manager: the manager.
    paths: checkpoint prefixes, oldest first.
    now: the timestamp for paths it did not list before.
  """
  if not hasattr(manager, "_maybe_delete"):
    raise _missing("tf.train.CheckpointManager._maybe_delete", "tensorflow")
  old = dict(manager._maybe_delete)
  manager._maybe_delete.clear()
  for p in paths:
    manager._maybe_delete[p] = old.get(p, now)
  manager._latest_checkpoint = paths[-1] if paths else None
  if paths:
    manager._record_state()


def replace_split_generators(builder, split_generators):
  """Answers a TFDS builder's download step with `split_generators`
  (dl_manager → SplitGenerators) so that it prepares from local files; its
  example generator, features and writer stay TFDS's own. TFDS has no
  public hook for "the files are already here" with its own example order."""
  builder._split_generators = split_generators


def gin_search_path():
  """The folders gin searches for included and named config files."""
  return gin.config._LOCATION_PREFIXES


def gin_file_readers():
  """gin's (reader, exists) pairs, as it opens config files."""
  return gin.config._FILE_READERS


def gin_bindings():
  """gin's parsed bindings: {(scope, selector): {parameter: value}}. gin's
  public `operative_config_str` lists only what has run; ebmkit checks the
  bindings before anything runs."""
  return gin.config._CONFIG.items()


def gin_configurable(selector):
  """The registered configurable a selector names, or None."""
  return gin.config._REGISTRY.get_match(selector)
