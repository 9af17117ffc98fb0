"""Keras callbacks for training EBMs: checkpoints and sample grids (the
divergence guard is in `ebmkit.recovery`)."""

import os

import keras
import numpy as np
import tensorflow as tf

from ebmkit import images


class Checkpointer(keras.callbacks.Callback):
  """Saves the training state every `every_steps` steps and at epoch ends.

  Args:
    manager: a `tf.train.CheckpointManager` over the model and optimizer.
    every_steps: save every this many optimizer steps (0: epoch ends only).
  """

  def __init__(self, manager, every_steps=0, guard=None):
    super().__init__()
    self.manager = manager
    self.every_steps = int(every_steps)
    self.guard = guard  # A recovery.DivergenceGuard: no diverged state saved.

  def _step(self):
    return int(self.model.optimizer.iterations.numpy())

  def _save(self):
    if self.guard is not None and not self.guard.healthy():
      return
    step = self._step()
    if self.manager.latest_checkpoint and self.manager.latest_checkpoint.endswith(
        f"-{step}"):
      return
    self.manager.save(checkpoint_number=step)

  def on_train_batch_end(self, batch, logs=None):
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
