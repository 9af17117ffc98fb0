"""Checkpoints of the whole training state: weights, optimizer, buffer, RNG."""

from absl import logging
import tensorflow as tf

from ebmkit import workdir as workdir_lib


def _by_position(variables):
  """Variables keyed by their position, so checkpoints name every one.

  Keras 3 models do not expose all their variables as checkpoint children
  (backbone weights would be saved only through the optimizer's references),
  so ebmkit checkpoints list them explicitly: weights, the replay buffer and
  the seed generators' states. Keys are positions, not Keras paths, because
  paths carry per-process name counters ("adam_2/iteration"); positions depend
  only on the model's structure.
  """
  return {f"v{i:04d}": v for i, v in enumerate(variables)}


def make_checkpoint(model, with_optimizer=True):
  """A `tf.train.Checkpoint` of every model (and optimizer) variable."""
  parts = {"model": _by_position(model.variables)}
  if with_optimizer:
    parts["optimizer"] = _by_position(model.optimizer.variables)
  return tf.train.Checkpoint(**parts)


def make_manager(model, workdir, max_to_keep=3):
  """A `tf.train.CheckpointManager` for `model` (built, with an optimizer).

  Writes are atomic: a checkpoint becomes visible only once complete. Files
  go to `workdir/checkpoints/ckpt-<step>`.
  """
  if model.optimizer is None:
    raise ValueError("Compile the model with an optimizer before making its "
                     "checkpoint manager.")
  if not model.optimizer.built:
    model.optimizer.build(model.trainable_variables)
  return tf.train.CheckpointManager(
      make_checkpoint(model), workdir_lib.checkpoints_dir(workdir),
      max_to_keep=max_to_keep)


def restore_latest(manager, model):
  """Restores the newest checkpoint; returns its path or None if none exist.

  A newest checkpoint that cannot be read (e.g. a partial copy) is skipped
  with a warning and the previous one is tried. One that holds the model but
  no matching optimizer state restores the model, with a warning.

  Args:
    manager: from `make_manager(model, ...)`.
    model: the same model.
  """
  for path in reversed(manager.checkpoints):
    try:
      manager.checkpoint.restore(path).assert_existing_objects_matched()
    except Exception as e:  # pylint: disable=broad-except
      # A truncated or corrupt file fails in many ways (OpError, IndexError,
      # ValueError, ...). A checkpoint without (matching) optimizer state,
      # e.g. one converted from the reference, still gives the model.
      try:
        model_only = make_checkpoint(model, with_optimizer=False)
        model_only.restore(path).expect_partial(
        ).assert_existing_objects_matched()
      except Exception:  # pylint: disable=broad-except
        logging.warning("Could not restore checkpoint %s (%s: %.300s); trying "
                        "the previous one.", path, type(e).__name__, e)
        continue
      logging.warning("Restored the model (weights, buffer) from %s but not "
                      "the optimizer state, which it lacks or which belongs to "
                      "another optimizer; the optimizer starts fresh.", path)
    logging.info("Restored %s.", path)
    return path
  return None


def save_model_only(model, workdir, step=0):
  """Writes a checkpoint of the model's variables alone (no optimizer).

  `restore_latest` restores such a checkpoint's model and starts the
  optimizer fresh; `restore_model` reads it as any other.
  """
  manager = tf.train.CheckpointManager(
      make_checkpoint(model, with_optimizer=False),
      workdir_lib.checkpoints_dir(workdir), max_to_keep=None)
  return manager.save(checkpoint_number=step)


def restore_model(model, workdir):
  """Restores only the model's variables from the newest checkpoint.

  For evaluation and export: the optimizer's state is not needed.

  Returns:
    The checkpoint path, or None if `workdir` holds no checkpoint.
  """
  path = tf.train.latest_checkpoint(workdir_lib.checkpoints_dir(workdir))
  if path is None:
    return None
  status = make_checkpoint(model, with_optimizer=False).restore(path)
  status.expect_partial().assert_existing_objects_matched()
  return path
