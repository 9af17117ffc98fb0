"""Checkpoints of the whole training state: weights, optimizer, buffer, RNG."""

import os

from absl import logging
import tensorflow as tf


def make_manager(model, workdir, max_to_keep=3):
  """A `tf.train.CheckpointManager` for `model` (built, with an optimizer).

  The checkpoint holds every model variable (the replay buffer and the seed
  generators' states included) and the optimizer's (its step too). Writes
  are atomic: a checkpoint becomes visible only once complete.
  """
  if model.optimizer is None:
    raise ValueError("Compile the model with an optimizer before making its "
                     "checkpoint manager.")
  if not model.optimizer.built:
    model.optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
  return tf.train.CheckpointManager(
      checkpoint, os.path.join(workdir, "checkpoints"), max_to_keep=max_to_keep,
      step_counter=model.optimizer.iterations)


def restore_latest(manager):
  """Restores the newest checkpoint; returns its path or None if none exist.

  A newest checkpoint that cannot be read (e.g. a partial copy) is skipped
  with a warning and the previous one is tried.
  """
  for path in reversed(manager.checkpoints):
    try:
      manager.checkpoint.restore(path).assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
      logging.warning("Could not restore checkpoint %s (%s); trying the "
                      "previous one.", path, e)
      continue
    logging.info("Restored %s (step %d).", path,
                 int(manager._step_counter))  # pylint: disable=protected-access
    return path
  return None


def restore_model(model, workdir):
  """Restores only the model's variables from the newest checkpoint.

  For evaluation and export: the optimizer's state is not needed.

  Returns:
    The checkpoint path, or None if `workdir` holds no checkpoint.
  """
  path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  if path is None:
    return None
  tf.train.Checkpoint(model=model).restore(path).expect_partial()
  return path
