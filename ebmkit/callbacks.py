"""Keras callbacks for training EBMs: checkpoints and sample grids."""

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
    self.guard = guard  # A DivergenceGuard: no save of a diverged state.

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


class DivergenceGuard(keras.callbacks.Callback):
  """Stops training at the first sign of divergence and says why.

  After each step it checks the running loss and mean energies of data and
  samples: NaN or Inf, |loss| above `loss_bound`, |E| above `energy_bound`,
  or the gap between the data's and the samples' energies above `gap_bound`.
  `healthy()` also checks that the replay buffer holds only finite samples
  (the `Checkpointer` asks it before every save, so no diverged state is ever
  written). `ebmkit.train` then rolls back and recovers.
  """

  def __init__(self, loss_bound=1e4, energy_bound=1e4, gap_bound=1e3):
    super().__init__()
    self.loss_bound = loss_bound
    self.energy_bound = energy_bound
    self.gap_bound = gap_bound
    self.reason = None

  def reset(self):
    self.reason = None

  def _flag(self, reason):
    if self.reason is None:
      self.reason = reason
      self.model.stop_training = True

  def on_train_batch_end(self, batch, logs=None):
    logs = logs or {}
    values = {}
    for key, bound in (("loss", self.loss_bound),
                       ("energy_data", self.energy_bound),
                       ("energy_samples", self.energy_bound)):
      if key not in logs:
        continue
      value = float(logs[key])
      values[key] = value
      if not np.isfinite(value):
        return self._flag(f"{key} is {value}")
      if abs(value) > bound:
        return self._flag(f"|{key}| = {abs(value):.4g} exceeds {bound:g}")
    if "energy_data" in values and "energy_samples" in values:
      gap = abs(values["energy_data"] - values["energy_samples"])
      if gap > self.gap_bound:
        self._flag(f"the energy gap between data and samples, {gap:.4g}, "
                   f"exceeds {self.gap_bound:g}")

  def buffer_finite(self):
    return bool(tf.reduce_all(tf.math.is_finite(
        self.model.replay_buffer.samples.value)))

  def healthy(self):
    if self.reason is None and not self.buffer_finite():
      self._flag("the replay buffer holds NaN or Inf samples")
    return self.reason is None
