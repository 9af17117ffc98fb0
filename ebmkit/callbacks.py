"""Keras callbacks for training EBMs: checkpoints and sample grids (the
divergence guard is in `ebmkit.recovery`)."""

import os

import keras
import numpy as np
import tensorflow as tf

from ebmkit import checkpoints
from ebmkit import images


class Checkpointer(keras.callbacks.Callback):
  """Saves the training state every `every_steps` steps and at epoch ends,
  and keeps track of which checkpoints are good rollback targets.

  A checkpoint written after step k holds the weights that step k+1 runs
  with; it is marked verified (`checkpoints.mark_verified`) once step k+1
  has passed the divergence guard. Rotation keeps the newest `keep`, the
  newest verified one and, while recovery is on, the oldest (the state
  training started from).

  Args:
    manager: a `tf.train.CheckpointManager` from `checkpoints.make_manager`.
    workdir: the workdir (for the verified list).
    every_steps: save every this many optimizer steps (0: epoch ends only).
    keep: checkpoints kept by rotation (besides the protected ones).
    guard: a `recovery.DivergenceGuard`, or None (no recovery: every
      checkpoint counts as verified).
    pending: a checkpoint not yet verified that the next step's weights come
      from (e.g. the one training resumed from).
  """

  def __init__(self, manager, workdir, every_steps=0, keep=3, guard=None,
               pending=None):
    super().__init__()
    self.manager = manager
    self.workdir = workdir
    self.every_steps = int(every_steps)
    self.keep = int(keep)
    self.guard = guard
    self.pending = pending

  def _step(self):
    return int(self.model.optimizer.iterations.numpy())

  def _verify_pending(self):
    if self.pending is not None and (self.guard is None
                                     or self.guard.reason is None):
      checkpoints.mark_verified(self.workdir, self.pending)
      self.pending = None

  def _save(self):
    if self.guard is not None and not self.guard.healthy():
      return
    step = self._step()
    latest = self.manager.latest_checkpoint
    if latest and latest.endswith(f"-{step}"):
      return
    path = self.manager.save(checkpoint_number=step)
    if self.guard is None:
      checkpoints.mark_verified(self.workdir, path)
    else:
      self.pending = path
    checkpoints.prune(self.manager, self.workdir, self.keep,
                      protect_anchor=self.guard is not None)

  def on_train_batch_end(self, batch, logs=None):
    self._verify_pending()
    if self.every_steps and self._step() % self.every_steps == 0:
      self._save()

  def on_epoch_end(self, epoch, logs=None):
    self._save()


def buffer_grid(model, num_images=64):
  """A grid of replay-buffer samples, evenly spaced over the buffer's slots.

  Even spacing shows every class slice of a class-conditional buffer.
  """
  buf = model.replay_buffer
  slots = np.linspace(0, buf.size - 1, min(num_images, buf.size)).astype(int)
  samples = tf.gather(buf.samples.value, slots).numpy()
  return images.make_grid(samples, scale=images.default_scale(
      samples.shape[1]))


class SampleGrid(keras.callbacks.Callback):
  """At each epoch end, writes a PNG grid of buffer samples and logs it.

  Files: `<folder>/buffer_epoch_<NNNN>.png` and `<folder>/buffer_latest.png`;
  the same picture goes to TensorBoard (`samples/buffer`) if `log_dir` is set.
  """

  def __init__(self, folder, num_images=64, log_dir=None):
    super().__init__()
    self.folder = folder
    self.num_images = num_images
    self.writer = (tf.summary.create_file_writer(os.path.join(log_dir, "train"))
                   if log_dir else None)

  def on_epoch_end(self, epoch, logs=None):
    grid = buffer_grid(self.model, self.num_images)
    images.save_png(os.path.join(self.folder, f"buffer_epoch_{epoch + 1:04d}.png"),
                    grid)
    images.save_png(os.path.join(self.folder, "buffer_latest.png"), grid)
    if self.writer is not None:
      with self.writer.as_default():
        tf.summary.image("samples/buffer", grid[None],
                         step=int(self.model.optimizer.iterations.numpy()))
      self.writer.flush()
