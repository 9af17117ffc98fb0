"""What training records and says: Keras callbacks for checkpoints, sample
grids, one console line per epoch and per-step TensorBoard scalars. (The
divergence guard is in `ebmkit.recovery`; the evaluation's TensorBoard
summaries in `ebmkit.evaluation.summaries`; the progress display of long
jobs in `ebmkit.progress`.)"""

import os
import sys
import time

import keras
import tensorflow as tf

from ebmkit import images
from ebmkit import workdir as workdir_lib
from ebmkit.training import checkpoints
from ebmkit.training import schedules


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


class SampleGrid(keras.callbacks.Callback):
  """At each epoch end, writes a PNG grid of buffer samples and logs it.

  Files: `<folder>/buffer_epoch_<NNNN>.png` and `<folder>/buffer_latest.png`;
  the same picture goes to TensorBoard (`samples/buffer`, at the optimizer
  step, the axis of `StepScalars`) if `writer` or `log_dir` is set.

  Args:
    folder: where the PNGs go.
    num_images: buffer samples in each grid.
    log_dir: TensorBoard folder (its `train` run is written); ignored when
      `writer` is given.
    writer: a `tf.summary` writer to share (e.g. with `StepScalars`).
  """

  def __init__(self, folder, num_images=64, log_dir=None, writer=None):
    super().__init__()
    self.folder = folder
    self.num_images = num_images
    self.writer = writer or (
        tf.summary.create_file_writer(os.path.join(log_dir, "train"))
        if log_dir else None)

  def on_epoch_end(self, epoch, logs=None):
    grid = self.model.sample_grid(self.num_images)
    images.save_png(os.path.join(self.folder, f"buffer_epoch_{epoch + 1:04d}.png"),
                    grid)
    images.save_png(os.path.join(self.folder, workdir_lib.LATEST_GRID), grid)
    if self.writer is not None:
      with self.writer.as_default():
        tf.summary.image("samples/buffer", grid[None],
                         step=int(self.model.optimizer.iterations.numpy()))
      self.writer.flush()


class StepScalars(keras.callbacks.Callback):
  """Every `every_steps` optimizer steps, the step's own training metrics
  (loss terms, energies, accuracy) and the learning rate as TensorBoard
  scalars `step/<name>`, at the optimizer step (resumes continue the axis).

  Keras hands callbacks the running mean since the epoch began; the step's
  own value is recovered from it: with m_b the mean after the epoch's batch
  b (0-based), the value of batch b is (b + 1)·m_b − b·m_(b−1). That holds
  for ebmkit's metrics, which average one equally weighted value per step
  (training batches have a fixed size and, for accuracy, are all labelled).
  Keras' own TensorBoard callback keeps the per-epoch `epoch_*` scalars.

  Args:
    writer: a `tf.summary` writer (the TensorBoard run `train`).
    every_steps: log at the optimizer steps divisible by this (>= 1).
  """

  def __init__(self, writer, every_steps=10):
    super().__init__()
    self.writer = writer
    self.every_steps = int(every_steps)
    self._previous = None  # (batch, running means) one step before a log.

  def on_epoch_begin(self, epoch, logs=None):
    self._previous = None

  def on_train_batch_end(self, batch, logs=None):
    logs = {k: float(v) for k, v in (logs or {}).items()}
    step = int(self.model.optimizer.iterations.numpy())
    if step % self.every_steps == 0:
      if batch == 0:
        values = dict(logs)
      elif self._previous is not None and self._previous[0] == batch - 1:
        before = self._previous[1]
        values = {k: (batch + 1) * m - batch * before[k]
                  for k, m in logs.items() if k in before}
      else:
        values = {}
      values["learning_rate"] = schedules.current_learning_rate(
          self.model.optimizer)
      with self.writer.as_default(step=step):
        for name, value in values.items():
          tf.summary.scalar(f"step/{name}", value)
    if (step + 1) % self.every_steps == 0:
      self._previous = (batch, logs)

  def on_epoch_end(self, epoch, logs=None):
    self.writer.flush()

  def on_train_end(self, logs=None):
    self.writer.flush()


class EpochLog(keras.callbacks.Callback):
  """One line per epoch on stdout, for logs that go to files (no progress
  bar, carriage returns or colour codes), e.g.
  `Epoch 3/20 (step 2343, 41.2 s): loss 1.234 - accuracy 0.9 - val_loss ...`.

  Args:
    epochs: the run's number of epochs (a resumed run's `fit` may be asked
      for fewer).
    stream: where the lines go (default: sys.stdout at the time of writing).
  """

  def __init__(self, epochs, stream=None):
    super().__init__()
    self.epochs = epochs
    self.stream = stream
    self._started = time.time()

  def on_epoch_begin(self, epoch, logs=None):
    self._started = time.time()

  def on_epoch_end(self, epoch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    metrics = " - ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items())
    print(f"Epoch {epoch + 1}/{self.epochs} (step {step}, "
          f"{time.time() - self._started:.1f} s): {metrics}",
          file=self.stream or sys.stdout, flush=True)
