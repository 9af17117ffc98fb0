"""Assembling an experiment's model from gin, for training, evaluation,
export and conversion alike; and loading a trained workdir's model."""

import os

import gin

from ebmkit import gin_utils
from ebmkit import workdir as workdir_lib
from ebmkit.data import pipeline as data
from ebmkit.models import kind
from ebmkit.training import checkpoints


class NoModelConfiguredError(ValueError):
  """The gin config binds no `get_model.model`."""


@gin.configurable
def get_model(model=gin.REQUIRED):
  """The configured model (`get_model.model = @ebmkit.EnergyModel()`).

  One binding used by train, evaluate, export and convert alike, so that the
  operative config saved in a workdir rebuilds the same model. The shipped
  configs bind it in models/energy_model.gin.
  """
  return model


def build_model(info):
  """Builds the configured model for a data set's images; checks classes.

  Args:
    info: the data set's `data.DatasetInfo`.

  Raises:
    NoModelConfiguredError: no model is configured.
    TypeError, ValueError: the model does not fit the data set.
  """
  try:
    model = get_model()
  except RuntimeError as e:
    if "Required bindings for `get_model`" not in str(e):
      raise
    raise NoModelConfiguredError(
        "No model is configured: bind get_model.model (include "
        "'models/energy_model.gin' as the shipped configs do, or start from "
        f"one: {', '.join(gin_utils.shipped_configs()[:4])}, ...).") from None
  if not isinstance(model, kind.ModelKind):
    raise TypeError(f"get_model.model must be a model kind ebmkit trains "
                    f"(ebmkit.EnergyModel, ebmkit.GAN: an "
                    f"ebmkit.models.kind.ModelKind), got "
                    f"{type(model).__name__}.")
  model.build((None,) + info.image_shape)
  if model.classifies:
    out = model.backbone.compute_output_shape((None,) + info.image_shape)
    if out[-1] != info.num_classes:
      raise ValueError(
          f"The backbone outputs {out[-1]} logits but data set {info.name!r} "
          f"has {info.num_classes} classes: set the backbone's num_classes "
          f"(the NUM_CLASSES macro in the shipped configs) to "
          f"{info.num_classes}.")
  return model


def configured_model():
  """The configured model, built for the configured data set's images."""
  return build_model(data.dataset_info(data.configured_name()))


def parse_workdir_config(workdir, allow_imports=False):
  """Replaces gin's config with the workdir's operative config.

  Args:
    workdir: a trained workdir.
    allow_imports: allow imports outside gin_utils.ALLOWED_IMPORTS (for a
      workdir trained with --allow_gin_imports).

  Raises:
    FileNotFoundError: `workdir` holds no operative config.
    gin_utils.GinImportError: it imports a module outside the allow-list.
  """
  config = workdir_lib.path(workdir, workdir_lib.OPERATIVE_CONFIG)
  if not os.path.isfile(config):
    raise FileNotFoundError(f"{config} does not exist: is {workdir} a "
                            "workdir written by ebmkit's train?")
  gin.clear_config()
  gin_utils.parse([config], allow_imports=allow_imports)


def load_model(workdir, allow_imports=False):
  """The trained model of a workdir, ready to use from Python.

  Parses the workdir's operative_config.gin (replacing gin's current
  config), rebuilds the model and restores the newest readable checkpoint.

  Args:
    workdir: a trained (or converted) workdir.
    allow_imports: see `parse_workdir_config`.

  Raises:
    FileNotFoundError: no operative config or no checkpoint in `workdir`.
  """
  parse_workdir_config(workdir, allow_imports)
  model = configured_model()
  restore(model, workdir)
  return model


def restore(model, workdir):
  """Restores the model's variables from the workdir's newest checkpoint.

  Returns:
    The checkpoint's path.

  Raises:
    FileNotFoundError: the workdir holds no checkpoint.
  """
  path = checkpoints.restore_model(model, workdir)
  if path is None:
    raise FileNotFoundError(
        f"No checkpoint in {workdir_lib.checkpoints_dir(workdir)}: train "
        f"first (python -m ebmkit.run --workdir={workdir}).")
  return path
