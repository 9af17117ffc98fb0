"""Training and evaluation entry points (configured with gin)."""

import sys
import time

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from ebmkit import gin_utils
from ebmkit import workdir as workdir_lib
from ebmkit.data import pipeline as data
from ebmkit.distribute import strategy as distribute_lib
from ebmkit.distribute import worker_loop
from ebmkit.models import energy_model as models
from ebmkit.models import replicas
from ebmkit.models import sampling
from ebmkit.models import validation
from ebmkit.training import callbacks as callbacks_lib
from ebmkit.training import checkpoints
from ebmkit.training import experiment
from ebmkit.training import recovery as recovery_lib
from ebmkit.training import schedules


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


def _checked(ds, model):
  """The input check in the input pipeline: XLA compiles the train step's
  in-graph assertions away, so under jit_compile they run here instead."""
  buf = getattr(model, "replay_buffer", None)  # A GAN has none.
  shape, data_range = ((buf.sample_shape, buf.data_range) if buf is not None
                       else (model.sample_shape, model.data_range))
  check = lambda t: validation.check_tensor(t, shape, data_range)
  return ds.map(lambda x, y: (tf.nest.map_structure(check, x), y))


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
            verbose, fit=None):
  """Runs `fit` (default `model.fit`) from the optimizer's step to `epochs`;
  returns the history."""
  fit = fit or model.fit
  step = int(model.optimizer.iterations.numpy())
  history = {}
  epoch, done_in_epoch = divmod(step, steps_per_epoch)
  if epoch < epochs and done_in_epoch:
    # Finish the interrupted epoch with the batches it still owes (the same
    # ones, when the pipeline does not shuffle).
    h = fit(train_ds.skip(done_in_epoch),
            epochs=epoch + 1, initial_epoch=epoch, callbacks=callbacks,
            verbose=verbose, shuffle=False, validation_data=val_ds)
    history = h.history
    epoch += 1
    if model.stop_training:
      return history
  if epoch < epochs:
    h = fit(train_ds, epochs=epochs, initial_epoch=epoch,
            callbacks=callbacks, verbose=verbose, shuffle=False,
            validation_data=val_ds)
    history = h.history
  return history


def _resolve_verbose(verbose):
  """train.verbose: "auto" is 1 (Keras' progress bar) when stdout is a
  terminal, else 2 (one line per epoch: logs redirected to a file)."""
  if verbose == "auto":
    return 1 if sys.stdout.isatty() else 2
  if verbose not in (0, 1, 2) or isinstance(verbose, bool):
    raise ValueError(f"train.verbose must be 'auto', 0, 1 or 2, got "
                     f"{verbose!r}.")
  return verbose


def _floats(logs):
  return {k: float(v) for k, v in (logs or {}).items()}


@gin.configurable
def train(workdir="ebmkit_runs/default", train_split="train",
          test_split="test", validation_split=None, epochs=20, optimizer=None,
          jit_compile="auto", mixed_precision=None,
          checkpoint_every_steps=200, keep_checkpoints=3,
          sample_grid_images=64, seed=0, verbose="auto", log_every_steps=10,
          recovery=True,
          max_recoveries=3, recovery_lr_factor=0.5, recovery_l2_increase=0.0,
          loss_bound=1e4, energy_bound=1e4, gap_bound=1e3, fresh=False,
          distribute=None, sync_batch_norm=False, worker_timeout_s=None):
  """Trains an EnergyModel with `model.fit`, resuming from `workdir`.

  Writes to `workdir`: checkpoints/ (weights, optimizer, replay buffer, step),
  operative_config.gin, tensorboard/ (run `train`: Keras' per-epoch
  `epoch_*` scalars on the epoch axis; `step/*` scalars and the
  `samples/buffer` grid on the optimizer-step axis; run `validation`),
  samples/ (a PNG grid of buffer samples per epoch) and results.json (test
  accuracy and the last epoch's metrics).
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
    verbose: console output while training: 0 none, 1 Keras' progress bar,
      2 one line per epoch (`callbacks.EpochLog`); "auto": 1 when stdout is
      a terminal, else 2 (no carriage returns or colour codes in log files).
    log_every_steps: every this many optimizer steps, TensorBoard scalars
      of that step's loss terms, energies, accuracy and learning rate
      (`step/*`, `callbacks.StepScalars`); 0: only the per-epoch ones.
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
    fresh: start from step 0 on purpose: the workdir's checkpoints,
      recoveries and results are moved aside (`workdir.set_aside`), never
      deleted. Without it, a workdir whose checkpoints cannot be restored
      stops training with an error (nothing is deleted).
    distribute: train on several devices or machines with `tf.distribute`:
      None (one device), "mirrored" (every local GPU, else the CPU's logical
      devices), "multi_worker" (one process per host, the cluster in
      $TF_CONFIG; ebmkit's own loop, `worker_loop`), "tpu", or a
      `tf.distribute.Strategy` (`distribute.strategy_for`). The global batch
      (BATCH_SIZE) is split equally between the replicas, and so is the
      replay buffer: each replica's chains read and write only its own part
      (`ebmkit.replicas`); checkpoints hold all of it. With several
      workers only the chief writes the workdir; the others write to
      `workers/<type>_<index>/` in it, and all of them must be able to read
      the chief's checkpoints (a shared file system) to resume.
    sync_batch_norm: under a strategy, batch normalisation uses the global
      batch's statistics (all-reduced each step) instead of each replica's.
    worker_timeout_s: "multi_worker": seconds a collective may wait for the
      other workers before training fails (None: no limit; TensorFlow's
      health check still notices a lost worker).

  The workdir is locked while training (`workdir.Lock`): a second process
  on it fails at once. The configured learning rate applies on resume too
  (times the cuts earlier recoveries of the same configuration left in
  force). results.json accumulates over resumed runs: "runs" lists each
  process's steps and wall time, "wall_time_s" is their total,
  "epochs_completed" counts finished epochs, and an evaluation in it stays.

  Returns:
    The results dict that is also written to results.json.

  Raises:
    recovery.TrainingDivergedError: training kept diverging after
      `max_recoveries`
      recoveries; the workdir keeps its last good checkpoint.
  """
  verbose = _resolve_verbose(verbose)
  _check_settings(epochs=epochs, checkpoint_every_steps=checkpoint_every_steps,
                  log_every_steps=log_every_steps,
                  keep_checkpoints=keep_checkpoints,
                  max_recoveries=max_recoveries,
                  recovery_lr_factor=recovery_lr_factor,
                  recovery_l2_increase=recovery_l2_increase,
                  loss_bound=loss_bound, energy_bound=energy_bound,
                  gap_bound=gap_bound)
  # A non-chief worker of a multi-worker run locks and writes its scratch.
  with workdir_lib.Lock(distribute_lib.write_dir(workdir, distribute)) as (
      lock), distribute_lib.scope(distribute, worker_timeout_s) as strategy:
    if lock.note:
      print(lock.note)
    return _train(**{k: v for k, v in locals().items() if k != "lock"})


def _check_settings(**settings):
  """Fails before anything is written when a training setting is invalid."""
  def whole(name, low):
    value = settings[name]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
        value < low):
      raise ValueError(f"train.{name} must be a whole number >= {low}, got "
                       f"{value!r}.")
  whole("epochs", 1)
  whole("checkpoint_every_steps", 0)
  whole("log_every_steps", 0)
  whole("keep_checkpoints", 1)
  whole("max_recoveries", 0)
  factor = settings["recovery_lr_factor"]
  if not 0 < factor <= 1:
    raise ValueError(f"train.recovery_lr_factor must be in (0, 1], got "
                     f"{factor!r}.")
  if not settings["recovery_l2_increase"] >= 0:
    raise ValueError(f"train.recovery_l2_increase must be >= 0, got "
                     f"{settings['recovery_l2_increase']!r}.")
  for name in ("loss_bound", "energy_bound", "gap_bound"):
    if not settings[name] > 0:
      raise ValueError(f"train.{name} must be > 0, got {settings[name]!r}.")


def _check_learning_rate(base):
  if base is not None and not (np.isfinite(base) and base > 0):
    raise ValueError(f"The learning rate must be a finite number > 0, got "
                     f"{base!r} (LEARNING_RATE in the shipped configs).")


def _train(workdir, train_split, test_split, validation_split, epochs,
           optimizer, jit_compile, mixed_precision, checkpoint_every_steps,
           keep_checkpoints, sample_grid_images, seed, verbose,
           log_every_steps, recovery,
           max_recoveries, recovery_lr_factor, recovery_l2_increase,
           loss_bound, energy_bound, gap_bound, fresh, distribute,
           sync_batch_norm, worker_timeout_s, strategy):
  """`train` with the workdir locked, in the scope of `strategy` (None: no
  strategy)."""
  del distribute, worker_timeout_s  # `strategy` is made of them.
  # The chief's workdir; a non-chief worker writes to its scratch.
  chief_workdir, workdir = workdir, distribute_lib.write_dir(workdir,
                                                             strategy)
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
  xla = sampling.resolve_jit_compile(jit_compile)
  model.compile(optimizer=distribute_lib.optimizer_in_scope(
      optimizer or keras.optimizers.Adam(1e-4), strategy), jit_compile=xla)
  if xla:
    train_ds = _checked(train_ds, model)
  # The configured rate, read before a checkpoint restores its own.
  base_lr = recovery_lib.base_learning_rate(model.optimizer)
  _check_learning_rate(base_lr)
  steps_per_epoch = int(train_ds.cardinality())
  _check_data(train_ds, info, model, train_split, steps_per_epoch)
  distribute_lib.check_split(strategy, train_ds, model)
  if sync_batch_norm and strategy is not None:
    distribute_lib.sync_batch_norm(model)
  schedule = schedules.schedule_of(model.optimizer)
  if isinstance(schedule, schedules.WarmupStepDecay) and (
      schedule.steps_per_epoch is None):
    schedule.steps_per_epoch = steps_per_epoch

  if fresh:
    moved = workdir_lib.set_aside(workdir)
    if moved:
      print(f"Starting fresh: moved the earlier run's files to {moved}.")
  for orphan in checkpoints.remove_orphans(workdir):
    logging.warning("Removed %s, left by an interrupted save.", orphan)
  distribute_lib.mirror_chief(strategy, chief_workdir, workdir)
  manager = checkpoints.make_manager(model, workdir)
  restored = checkpoints.restore_latest(manager, model, workdir)
  distribute_lib.check_same_step(
      strategy, int(model.optimizer.iterations.numpy()), chief_workdir)
  checkpoint_lr = recovery_lib.learning_rate(model.optimizer)
  if not restored and getattr(model, "replay_buffer", None) is not None and (
      model.replay_buffer.init == "informative"):
    _fit_informative_init(model, train_ds)
  # Complete: the experiment's settings of the modes that run later
  # (`evaluate.*` for --mode=eval, `export.*`) are never called here, and
  # gin's operative config would drop them.
  gin_utils.write_operative_config(workdir, complete=True)

  # The configured learning rate applies (also on resume), times the cuts
  # that earlier recoveries of this configuration left in force.
  recoveries = recovery_lib.load_recoveries(workdir)
  lr_scale, l2_extra = recovery_lib.inherited(recoveries, base_lr)
  model.l2_weight += l2_extra
  recovery_lib.set_learning_rate(model.optimizer, base_lr, lr_scale)
  applied_lr = recovery_lib.learning_rate(model.optimizer)
  if restored and not np.isclose(applied_lr, checkpoint_lr, rtol=1e-6):
    print(f"Learning rate {applied_lr:.3g} (the config's"
          + (f" × {lr_scale:g} from earlier recoveries" if lr_scale != 1
             else "") + f"); the checkpoint had {checkpoint_lr:.3g}.")
  if recoveries and lr_scale == 1.0 and recoveries[-1].get(
      "base_learning_rate") != base_lr:
    print("The learning rate differs from the one earlier recoveries were "
          "made under: their cuts and L2 increases are not applied.")

  total_steps = epochs * steps_per_epoch
  step = int(model.optimizer.iterations.numpy())
  pending = None
  if restored:
    logging.info("Resuming at step %d of %d.", step, total_steps)
    print(f"Resuming from {restored} at step {step} of {total_steps}.")
    pending = restored
  elif recovery:
    pending = manager.save(checkpoint_number=step)  # A state to roll back to.

  log_dir = workdir_lib.path(workdir, workdir_lib.TENSORBOARD)
  # One writer for the optimizer-step axis: step scalars and sample grids.
  step_writer = tf.summary.create_file_writer(
      workdir_lib.path(log_dir, "train"))
  guard = recovery_lib.DivergenceGuard(loss_bound, energy_bound, gap_bound)
  checkpointer = callbacks_lib.Checkpointer(
      manager, workdir, checkpoint_every_steps, keep_checkpoints,
      guard if recovery else None, pending)
  callbacks = ([guard] if recovery else []) + [
      checkpointer,
      callbacks_lib.SampleGrid(workdir_lib.path(workdir, workdir_lib.SAMPLES),
                               sample_grid_images, writer=step_writer),
      keras.callbacks.TensorBoard(log_dir=log_dir),
  ]
  if log_every_steps:
    callbacks.append(callbacks_lib.StepScalars(step_writer, log_every_steps))
  if verbose == 2:  # One line per epoch, by ebmkit rather than Keras.
    callbacks.append(callbacks_lib.EpochLog(epochs))
  fit = None  # model.fit
  if strategy is not None:
    # Before the callbacks that read the buffer: its replicas' shards.
    callbacks.insert(0, replicas.BufferSync(checkpoint_every_steps))
    print(f"Training on {distribute_lib.describe(strategy)}.")
    if distribute_lib.is_multi_worker(strategy):
      fit = lambda *a, **k: worker_loop.fit(model, strategy, *a, **k)
  this_run = []
  while True:
    guard.reset()
    history = _fit_to(model, train_ds, val_ds, steps_per_epoch, epochs,
                      callbacks, 1 if verbose == 1 else 0, fit)
    if guard.reason is None:
      break
    event = recovery_lib.recover(
        model, manager, guard, workdir, base_lr, lr_scale,
        recovery_lr_factor, recovery_l2_increase,
        previous_target=this_run[-1]["rolled_back_to"] if this_run else None)
    lr_scale = event["lr_scale"]
    checkpointer.pending = None  # The target is verified already.
    this_run.append(event)
    if len(this_run) > max_recoveries:
      raise recovery_lib.gave_up(this_run, max_recoveries,
                                 recovery_lr_factor, recovery_l2_increase,
                                 model.l2_weight, workdir,
                                 event["rolled_back_to"])

  step_writer.close()
  if distribute_lib.is_multi_worker(strategy):
    test_metrics = worker_loop.evaluate(model, strategy, test_ds)
  else:
    test_metrics = _floats(model.evaluate(test_ds, return_dict=True,
                                          verbose=0))
  steps = int(model.optimizer.iterations.numpy())
  path = workdir_lib.path(workdir, workdir_lib.RESULTS)
  results = workdir_lib.read_json(path, {})  # Keeps "evaluation" and runs.
  runs = results.get("runs", []) + [{
      "started_at_step": step, "ended_at_step": steps,
      "resumed_from": restored, "recoveries": len(this_run),
      "wall_time_s": round(time.time() - started, 1)}]
  last_epoch = {k: float(v[-1]) for k, v in history.items()}
  results.update({
      "dataset": dataset,
      "steps": steps,
      "epochs": epochs,
      "epochs_completed": steps // steps_per_epoch,
      "resumed_from": restored,
      "recoveries": recovery_lib.load_recoveries(workdir),
      # A run that trained nothing (already finished) keeps the last ones.
      "train_metrics_last_epoch": last_epoch or results.get(
          "train_metrics_last_epoch", {}),
      "test": test_metrics,
      "learning_rate": recovery_lib.learning_rate(model.optimizer),
      "sample_grid": workdir_lib.path(workdir, workdir_lib.SAMPLES,
                                      workdir_lib.LATEST_GRID),
      "runs": runs,
      "wall_time_s": round(sum(r["wall_time_s"] for r in runs), 1),
      "distribute": distribute_lib.describe(strategy),
  })
  if model.classifies:
    results["test_accuracy"] = test_metrics.get("accuracy")
    print(f"Test accuracy on {dataset}/{test_split}: "
          f"{results['test_accuracy']:.4f}")
  workdir_lib.write_json(path, results)
  return results
