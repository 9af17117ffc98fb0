"""Training and evaluation entry points (configured with gin)."""

import json
import os
import time

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from ebmkit import backbones
from ebmkit import buffer as buffer_lib
from ebmkit import callbacks as callbacks_lib
from ebmkit import checkpoints
from ebmkit import data
from ebmkit import gin_utils
from ebmkit import models
from ebmkit import sampling
from ebmkit import schedules

RESULTS_FILE = "results.json"


def default_model(num_classes):
  """JEM on the small convnet, for when no model is configured."""
  return models.EnergyModel(
      backbones.small_convnet(num_classes),
      replay_buffer=buffer_lib.ReplayBuffer(size=2000, reinit_prob=0.05),
      sampler=sampling.LangevinSampler(steps=20, step_size=1.0, noise=0.01))


@gin.configurable
def get_model(model=None):
  """The configured model (`get_model.model = @ebmkit.EnergyModel()`).

  One binding used by train and evaluate alike, so that the operative config
  saved in a workdir rebuilds the same model.
  """
  return model


def build_model(info):
  """Builds the configured model for the data set's images; checks classes."""
  model = get_model()
  if model is None:
    model = default_model(info.num_classes)
  if not isinstance(model, models.EnergyModel):
    raise TypeError(f"train.model must be an ebmkit.EnergyModel, got "
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


class TrainingDivergedError(RuntimeError):
  """Training kept diverging after every allowed recovery."""


RECOVERIES_FILE = "recoveries.json"


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


def _scale_learning_rate(optimizer, factor):
  """Multiplies the learning rate; returns how (for the log)."""
  schedule = getattr(optimizer, "_learning_rate", None)
  if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
    if not hasattr(schedule, "learning_rate"):
      raise TrainingDivergedError(
          f"Cannot lower the learning rate of a {type(schedule).__name__} "
          "schedule during recovery; use ebmkit.WarmupStepDecay or a constant "
          "rate.")
    schedule.learning_rate *= factor
  else:
    optimizer.learning_rate = float(optimizer.learning_rate) * factor


def _recover(model, manager, guard, workdir, log_dir, lr_factor, l2_increase):
  """Rolls back to the last good checkpoint and makes training gentler."""
  bad_step = int(model.optimizer.iterations.numpy())
  restored = checkpoints.restore_latest(manager, model)
  _scale_learning_rate(model.optimizer, lr_factor)
  if l2_increase:
    model.l2_weight += l2_increase
  reset_buffer = not guard.buffer_finite()
  if reset_buffer:
    model.replay_buffer.reset()
  model.train_function = None  # Retrace: the step reads these as constants.
  model.stop_training = False
  previous = _load_recoveries(workdir)
  lr_scale = (previous[-1]["lr_scale"] if previous else 1.0) * lr_factor
  event = {"step": bad_step, "reason": guard.reason,
           "rolled_back_to": restored, "lr_scale": lr_scale,
           "learning_rate": float(model.optimizer.learning_rate),
           "l2_weight": model.l2_weight, "buffer_reset": reset_buffer,
           "l2_increase": l2_increase}
  write_json(os.path.join(workdir, RECOVERIES_FILE), previous + [event])
  message = (f"Divergence at step {bad_step}: {guard.reason}. Rolled back to "
             f"{restored}; learning rate now {event['learning_rate']:.3g}, "
             f"L2 energy coefficient {model.l2_weight:g}"
             + ("; replay buffer re-initialised" if reset_buffer else "")
             + ".")
  print(message)  # Console (stdout); TensorBoard and the files below too.
  writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
  with writer.as_default():
    tf.summary.scalar("recovery/learning_rate", event["learning_rate"],
                      step=bad_step)
    tf.summary.text("recovery/event", message, step=bad_step)
  writer.close()
  return event


def _load_recoveries(workdir):
  path = os.path.join(workdir, RECOVERIES_FILE)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return json.load(f)


def _apply_recoveries(model, recoveries, restored_optimizer):
  """Re-applies earlier recoveries after a restart: the L2 increases, and the
  learning-rate cuts of a schedule (a constant rate is optimizer state and
  comes back with the checkpoint)."""
  if not recoveries:
    return
  model.l2_weight += sum(r.get("l2_increase", 0.0) for r in recoveries)
  schedule = getattr(model.optimizer, "_learning_rate", None)
  if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
    schedule.learning_rate *= recoveries[-1]["lr_scale"]
  elif not restored_optimizer:
    model.optimizer.learning_rate = (float(model.optimizer.learning_rate)
                                     * recoveries[-1]["lr_scale"])


def write_json(path, payload):
  """Writes JSON atomically (write, then rename)."""
  with open(path + ".tmp", "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)


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
  The model comes from `get_model` (default: JEM on `small_convnet`), the data
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
    TrainingDivergedError: training kept diverging after `max_recoveries`
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
  model = build_model(info)
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
  recoveries = _load_recoveries(workdir)
  _apply_recoveries(model, recoveries, restored_optimizer=bool(restored))

  total_steps = epochs * steps_per_epoch
  step = int(model.optimizer.iterations.numpy())
  if restored:
    logging.info("Resuming at step %d of %d.", step, total_steps)
    print(f"Resuming from {restored} at step {step} of {total_steps}.")
  elif recovery:
    manager.save(checkpoint_number=step)  # A good state to roll back to.

  log_dir = os.path.join(workdir, "tensorboard")
  guard = callbacks_lib.DivergenceGuard(loss_bound, energy_bound, gap_bound)
  callbacks = ([guard] if recovery else []) + [
      callbacks_lib.Checkpointer(manager, checkpoint_every_steps,
                                 guard if recovery else None),
      callbacks_lib.SampleGrid(os.path.join(workdir, "samples"),
                               sample_grid_images, log_dir=log_dir),
      keras.callbacks.TensorBoard(log_dir=log_dir),
  ]
  while True:
    guard.reset()
    history = _fit_to(model, train_ds, val_ds, steps_per_epoch, epochs,
                      callbacks, verbose)
    if guard.reason is None:
      break
    recoveries.append(_recover(model, manager, guard, workdir, log_dir,
                               recovery_lr_factor, recovery_l2_increase))
    if len(recoveries) > max_recoveries:
      raise TrainingDivergedError(
          f"Training diverged {len(recoveries)} times; ebmkit gave up after "
          f"{max_recoveries} recoveries. Last: {recoveries[-1]['reason']} at "
          f"step {recoveries[-1]['step']}. Tried: rolling back to the last "
          f"good checkpoint and multiplying the learning rate by "
          f"{recovery_lr_factor} each time (now {recoveries[-1]['lr_scale']:g}"
          f"× the original), adding {recovery_l2_increase} to the L2 energy "
          f"coefficient each time (now {model.l2_weight:g}), re-initialising "
          f"non-finite buffers. {workdir} keeps the last good checkpoint. "
          f"Restart with a lower LEARNING_RATE, a larger L2 (samplers/"
          f"l2_energy.gin) or a smaller SGLD_STEP_SIZE; recoveries.json lists "
          f"every recovery.")

  test_metrics = _floats(model.evaluate(test_ds, return_dict=True, verbose=0))
  results = {
      "dataset": dataset,
      "steps": int(model.optimizer.iterations.numpy()),
      "epochs": epochs,
      "resumed_from": restored,
      "recoveries": recoveries,
      "train_metrics_last_epoch": {k: float(v[-1]) for k, v in history.items()},
      "test": test_metrics,
      "learning_rate": float(model.optimizer.learning_rate),
      "sample_grid": os.path.join(workdir, "samples", "buffer_latest.png"),
      "wall_time_s": round(time.time() - started, 1),
  }
  if model.classifies:
    results["test_accuracy"] = test_metrics.get("accuracy")
    print(f"Test accuracy on {dataset}/{test_split}: "
          f"{results['test_accuracy']:.4f}")
  write_json(os.path.join(workdir, RESULTS_FILE), results)
  return results


def load_model(workdir):
  """The trained model of a workdir, ready to use from Python.

  Parses the workdir's operative_config.gin (replacing gin's current
  config), rebuilds the model and restores the newest checkpoint.

  Raises:
    FileNotFoundError: no operative config or no checkpoint in `workdir`.
  """
  config = os.path.join(workdir, gin_utils.OPERATIVE_CONFIG)
  if not os.path.isfile(config):
    raise FileNotFoundError(f"{config} does not exist: is {workdir} a "
                            "workdir written by ebmkit's train?")
  gin.clear_config()
  gin_utils.parse([config])
  model = build_model(data.dataset_info(data.configured_name()))
  if checkpoints.restore_model(model, workdir) is None:
    raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints.")
  return model
