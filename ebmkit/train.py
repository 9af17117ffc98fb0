"""Training and evaluation entry points (configured with gin)."""

import time

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from ebmkit import callbacks as callbacks_lib
from ebmkit import checkpoints
from ebmkit import data
from ebmkit import experiment
from ebmkit import gin_utils
from ebmkit import models
from ebmkit import recovery as recovery_lib
from ebmkit import sampling
from ebmkit import schedules
from ebmkit import workdir as workdir_lib


def _fit_informative_init(model, train_ds):
  """Fits the buffer's per-class Gaussians to one pass of the training data."""
  images, labels = [], []
  for x, y in train_ds:
    x, x_labelled = models.split_images(x)
    images.append((x if x_labelled is None else x_labelled).numpy())
    labels.append(y.numpy())
  images, labels = np.concatenate(images), np.concatenate(labels)
  labelled = labels >= 0
  model.replay_buffer.fit_informative_init(images[labelled], labels[labelled])


def _check_data(train_ds, info, model, split, steps_per_epoch):
  """Fails before anything is written when the data cannot train the model."""
  if steps_per_epoch == 0:
    raise ValueError(
        f"The training split {split!r} of {info.name!r} gives no batch: it is "
        f"empty or smaller than load_dataset.batch_size.")
  x_spec = models.split_images(train_ds.element_spec[0])[0]
  batch = x_spec.shape[0]
  if batch is not None and model.draws_samples and (
      batch > model.replay_buffer.size):
    raise ValueError(
        f"The batch ({batch}) is larger than the replay buffer "
        f"({model.replay_buffer.size} samples): raise BUFFER_SIZE or lower "
        f"BATCH_SIZE.")
  if tuple(x_spec.shape[1:]) != tuple(info.image_shape):
    raise ValueError(
        f"The training images have shape {tuple(x_spec.shape[1:])}, the data "
        f"set {info.name!r} says {tuple(info.image_shape)}.")


def _fit_to(model, train_ds, val_ds, steps_per_epoch, epochs, callbacks,
            verbose):
  """Runs `fit` from the optimizer's step to `epochs`; returns the history."""
  step = int(model.optimizer.iterations.numpy())
  history = {}
  epoch, done_in_epoch = divmod(step, steps_per_epoch)
  if epoch < epochs and done_in_epoch:
    # Finish the interrupted epoch with the batches it still owes (the same
    # ones, when the pipeline does not shuffle).
    h = model.fit(train_ds.skip(done_in_epoch),
                  epochs=epoch + 1, initial_epoch=epoch, callbacks=callbacks,
                  verbose=verbose, shuffle=False, validation_data=val_ds)
    history = h.history
    epoch += 1
    if model.stop_training:
      return history
  if epoch < epochs:
    h = model.fit(train_ds, epochs=epochs, initial_epoch=epoch,
                  callbacks=callbacks, verbose=verbose, shuffle=False,
                  validation_data=val_ds)
    history = h.history
  return history


def _floats(logs):
  return {k: float(v) for k, v in (logs or {}).items()}


@gin.configurable
def train(workdir="ebmkit_runs/default", train_split="train",
          test_split="test", validation_split=None, epochs=20, optimizer=None,
          jit_compile="auto", mixed_precision=None,
          checkpoint_every_steps=200, keep_checkpoints=3,
          sample_grid_images=64, seed=0, verbose="auto", recovery=True,
          max_recoveries=3, recovery_lr_factor=0.5, recovery_l2_increase=0.0,
          loss_bound=1e4, energy_bound=1e4, gap_bound=1e3):
  """Trains an EnergyModel with `model.fit`, resuming from `workdir`.

  Writes to `workdir`: checkpoints/ (weights, optimizer, replay buffer, step),
  operative_config.gin, tensorboard/, samples/ (a PNG grid of buffer samples
  per epoch) and results.json (test accuracy and the last epoch's metrics).
  Running it again on the same workdir resumes from the newest checkpoint.
  The model comes from `experiment.get_model` (bound by the config), the data
  from `load_dataset` (default: the embedded digits).

  Args:
    workdir: output folder.
    train_split: split to train on.
    test_split: split to report accuracy on at the end.
    validation_split: optional split evaluated at each epoch end (the JEM
      reference holds out 5,000 training images: "train[:5000]").
    epochs: passes over the training split.
    optimizer: a Keras optimizer (default Adam, learning rate 1e-4).
    jit_compile: compile the train step (SGLD included) with XLA; "auto":
      on a GPU/TPU, not on the CPU (see `sampling.resolve_jit_compile`).
    mixed_precision: None (float32) or "mixed_bfloat16": bfloat16 compute,
      float32 variables, energies and loss (sets Keras' global policy).
    checkpoint_every_steps: also checkpoint every this many steps (0: only at
      epoch ends).
    keep_checkpoints: number of checkpoints kept.
    sample_grid_images: buffer samples in each epoch's PNG grid.
    seed: global seed (Python, NumPy, TensorFlow, Keras); None for none.
    verbose: Keras progress display ("auto", 0, 1 or 2).
    recovery: on divergence (NaN/Inf or out-of-bound loss, energies or
      energy gap; a non-finite buffer), roll back to the last good
      checkpoint, multiply the learning rate by `recovery_lr_factor`, add
      `recovery_l2_increase` to the L2 energy coefficient, re-initialise a
      non-finite buffer, and continue. Each recovery is printed, logged to
      TensorBoard and listed in results.json and recoveries.json.
    max_recoveries: recoveries allowed before giving up with
      `TrainingDivergedError`.
    recovery_lr_factor: learning-rate multiplier per recovery.
    recovery_l2_increase: added to EnergyModel.l2_weight per recovery.
    loss_bound, energy_bound, gap_bound: divergence thresholds on |loss|,
      |mean energy| and |mean E(data) − mean E(samples)|.

  Returns:
    The results dict that is also written to results.json.

  Raises:
    recovery.TrainingDivergedError: training kept diverging after
      `max_recoveries`
      recoveries; the workdir keeps its last good checkpoint.
  """
  if epochs < 1:
    raise ValueError(f"train.epochs must be >= 1, got {epochs}.")
  if seed is not None:
    keras.utils.set_random_seed(seed)
  started = time.time()
  if mixed_precision:
    keras.mixed_precision.set_global_policy(mixed_precision)
  train_ds, info = data.load_dataset(split=train_split, training=True,
                                     with_info=True)
  test_ds = data.load_dataset(split=test_split, training=False)
  val_ds = (data.load_dataset(split=validation_split, training=False)
            if validation_split else None)
  dataset = info.name
  model = experiment.build_model(info)
  model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-4),
                jit_compile=sampling.resolve_jit_compile(jit_compile))
  steps_per_epoch = int(train_ds.cardinality())
  _check_data(train_ds, info, model, train_split, steps_per_epoch)
  schedule = getattr(model.optimizer, "_learning_rate", None)
  if isinstance(schedule, schedules.WarmupStepDecay) and (
      schedule.steps_per_epoch is None):
    schedule.steps_per_epoch = steps_per_epoch
  manager = checkpoints.make_manager(model, workdir, keep_checkpoints)
  restored = checkpoints.restore_latest(manager, model)
  if not restored and model.replay_buffer.init == "informative":
    _fit_informative_init(model, train_ds)
  gin_utils.write_operative_config(workdir)
  recoveries = recovery_lib.load_recoveries(workdir)
  recovery_lib.apply_recoveries(model, recoveries,
                                restored_optimizer=bool(restored))

  total_steps = epochs * steps_per_epoch
  step = int(model.optimizer.iterations.numpy())
  if restored:
    logging.info("Resuming at step %d of %d.", step, total_steps)
    print(f"Resuming from {restored} at step {step} of {total_steps}.")
  elif recovery:
    manager.save(checkpoint_number=step)  # A good state to roll back to.

  log_dir = workdir_lib.path(workdir, workdir_lib.TENSORBOARD)
  guard = recovery_lib.DivergenceGuard(loss_bound, energy_bound, gap_bound)
  callbacks = ([guard] if recovery else []) + [
      callbacks_lib.Checkpointer(manager, checkpoint_every_steps,
                                 guard if recovery else None),
      callbacks_lib.SampleGrid(workdir_lib.path(workdir, workdir_lib.SAMPLES),
                               sample_grid_images, log_dir=log_dir),
      keras.callbacks.TensorBoard(log_dir=log_dir),
  ]
  while True:
    guard.reset()
    history = _fit_to(model, train_ds, val_ds, steps_per_epoch, epochs,
                      callbacks, verbose)
    if guard.reason is None:
      break
    recoveries.append(recovery_lib.recover(
        model, manager, guard, workdir, recovery_lr_factor,
        recovery_l2_increase))
    if len(recoveries) > max_recoveries:
      raise recovery_lib.gave_up(recoveries, max_recoveries,
                                 recovery_lr_factor, recovery_l2_increase,
                                 model.l2_weight, workdir)

  test_metrics = _floats(model.evaluate(test_ds, return_dict=True, verbose=0))
  results = {
      "dataset": dataset,
      "steps": int(model.optimizer.iterations.numpy()),
      "epochs": epochs,
      "resumed_from": restored,
      "recoveries": recoveries,
      "train_metrics_last_epoch": {k: float(v[-1]) for k, v in history.items()},
      "test": test_metrics,
      "learning_rate": recovery_lib.learning_rate(model.optimizer),
      "sample_grid": workdir_lib.path(workdir, workdir_lib.SAMPLES,
                                      "buffer_latest.png"),
      "wall_time_s": round(time.time() - started, 1),
  }
  if model.classifies:
    results["test_accuracy"] = test_metrics.get("accuracy")
    print(f"Test accuracy on {dataset}/{test_split}: "
          f"{results['test_accuracy']:.4f}")
  workdir_lib.write_json(workdir_lib.path(workdir, workdir_lib.RESULTS),
                         results)
  return results
