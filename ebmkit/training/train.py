"""Training and evaluation entry points (configured with gin)."""

import dataclasses
import os
import sys
import time

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from ebmkit import gin_utils
from ebmkit import preset_format
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
  check = lambda t: validation.check_tensor(t, model.sample_shape,
                                           model.data_range)
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
          recovery=True, fresh=False, distribute=None, sync_batch_norm=False,
          worker_timeout_s=None, init_from=None):
  """Trains an EnergyModel (or a GAN) with `model.fit`, resuming from
  `workdir`.

  Writes to `workdir`: checkpoints/ (weights, optimizer, replay buffer, step),
  operative_config.gin, tensorboard/ (run `train`: Keras' per-epoch
  `epoch_*` scalars on the epoch axis; `step/*` scalars and the
  `samples/buffer` grid on the optimizer-step axis; run `validation`),
  samples/ (a PNG grid of buffer samples per epoch) and results.json (test
  accuracy and the last epoch's metrics).
  Running it again on the same workdir resumes from the newest checkpoint.
  The model comes from `experiment.get_model` (bound by the config), the data
  from `load_dataset` (default: the embedded digits). The steps themselves
  are `Runner`'s.

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
    recovery: what to do on divergence: True (default) follows the
      gin-configured `recovery.RecoveryPolicy()` (roll back to a verified
      checkpoint, lower the learning rate, ... up to `max_recoveries` times),
      False stops at the first divergence, or a `RecoveryPolicy`. Each
      recovery is printed, logged to TensorBoard and listed in results.json
      and recoveries.json.
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
      (`ebmkit.models.replicas`); checkpoints hold all of it. With several
      workers only the chief writes the workdir; the others write to
      `workers/<type>_<index>/` in it, and all of them must be able to read
      the chief's checkpoints (a shared file system) to resume.
    sync_batch_norm: under a strategy, batch normalisation uses the global
      batch's statistics (all-reduced each step) instead of each replica's.
    worker_timeout_s: "multi_worker": seconds a collective may wait for the
      other workers before training fails (None: no limit; TensorFlow's
      health check still notices a lost worker).
    init_from: a preset (a shipped name or a folder, `ebmkit.from_preset`)
      to fine-tune: a run that starts (no checkpoint in the workdir) takes
      its weights, replay buffer and random states instead of initialising
      them, so its first step's loss is the preset's; a resumed run
      continues from its own checkpoint. The configured model must be the
      preset's (its operative_config.gin; `python -m ebmkit.run
      --init_from_preset=NAME` uses it).

  The workdir is locked while training (`workdir.Lock`): a second process
  on it fails at once. The configured learning rate applies on resume too
  (times the cuts earlier recoveries of the same configuration left in
  force). results.json accumulates over resumed runs: "runs" lists each
  process's steps and wall time, "wall_time_s" is their total,
  "epochs_completed" counts finished epochs, and an evaluation in it stays.

  Returns:
    The results dict that is also written to results.json.

  Raises:
    recovery.TrainingDivergedError: training kept diverging after every
      recovery the policy allows; the workdir keeps its last good checkpoint.
  """
  settings = Settings(
      workdir=workdir, train_split=train_split, test_split=test_split,
      validation_split=validation_split, epochs=epochs, optimizer=optimizer,
      jit_compile=jit_compile, mixed_precision=mixed_precision,
      checkpoint_every_steps=checkpoint_every_steps,
      keep_checkpoints=keep_checkpoints,
      sample_grid_images=sample_grid_images, seed=seed,
      verbose=_resolve_verbose(verbose), log_every_steps=log_every_steps,
      recovery=recovery_lib.policy_of(recovery), fresh=fresh,
      sync_batch_norm=sync_batch_norm, init_from=init_from)
  settings.check()
  # A non-chief worker of a multi-worker run locks and writes its scratch.
  with workdir_lib.Lock(distribute_lib.write_dir(workdir, distribute)) as (
      lock), distribute_lib.scope(distribute, worker_timeout_s) as strategy:
    if lock.note:
      print(lock.note)
    return Runner(settings, strategy).run()


@dataclasses.dataclass
class Settings:
  """`train`'s arguments, checked, as the `Runner` reads them."""
  workdir: str
  train_split: str
  test_split: str
  validation_split: object
  epochs: int
  optimizer: object
  jit_compile: object
  mixed_precision: object
  checkpoint_every_steps: int
  keep_checkpoints: int
  sample_grid_images: int
  seed: object
  verbose: int
  log_every_steps: int
  recovery: object  # A recovery.RecoveryPolicy, or None.
  fresh: bool
  sync_batch_norm: bool
  init_from: object = None  # A preset's name or folder.

  def check(self):
    """Fails before anything is written when a setting is invalid."""
    for name, low in (("epochs", 1), ("checkpoint_every_steps", 0),
                      ("log_every_steps", 0), ("keep_checkpoints", 1)):
      gin_utils.check_whole_number(f"train.{name}", getattr(self, name), low)
    if self.init_from is not None:
      if not isinstance(self.init_from, str):
        raise ValueError(f"train.init_from must be a preset's name or folder,"
                         f" got {self.init_from!r}.")
      preset_format.read_metadata(preset_format.resolve(self.init_from))


def _check_learning_rate(base):
  if base is not None and not (np.isfinite(base) and base > 0):
    raise ValueError(f"The learning rate must be a finite number > 0, got "
                     f"{base!r} (LEARNING_RATE in the shipped configs).")


class Runner:
  """One training run on a locked workdir, in named steps: `_set_up` (data,
  model, checks), `_restore` (checkpoint, learning rate, what earlier
  recoveries left in force), `_callbacks`, `_fit_with_recovery` (the
  recovery loop) and `_results`.

  Args:
    settings: the checked `Settings`.
    strategy: the `tf.distribute` strategy whose scope this runs in, or None.
  """

  def __init__(self, settings, strategy=None):
    self.s = settings
    self.strategy = strategy
    # The chief's workdir; a non-chief worker writes to its scratch.
    self.chief_workdir = settings.workdir
    self.workdir = distribute_lib.write_dir(settings.workdir, strategy)
    self.recoveries = []  # This run's.

  def run(self):
    """Trains to the configured epochs; returns the results dict."""
    self.started = time.time()
    self._set_up()
    self._restore()
    self._callbacks()
    history = self._fit_with_recovery()
    return self._results(history)

  def _set_up(self):
    """Seeds, precision, the data, the compiled model and their checks."""
    s = self.s
    if s.seed is not None:
      keras.utils.set_random_seed(s.seed)
    if s.mixed_precision:
      keras.mixed_precision.set_global_policy(s.mixed_precision)
    train_ds, self.info = data.load_dataset(split=s.train_split, training=True,
                                            with_info=True)
    self.test_ds = data.load_dataset(split=s.test_split, training=False)
    self.val_ds = (data.load_dataset(split=s.validation_split, training=False)
                   if s.validation_split else None)
    model = self.model = experiment.build_model(self.info)
    xla = sampling.resolve_jit_compile(s.jit_compile)
    model.compile(optimizer=distribute_lib.optimizer_in_scope(
        s.optimizer or keras.optimizers.Adam(1e-4), self.strategy),
                  jit_compile=xla)
    if xla:
      train_ds = _checked(train_ds, model)
    self.train_ds = train_ds
    # The configured rate, read before a checkpoint restores its own.
    self.base_lr = recovery_lib.base_learning_rate(model.optimizer)
    _check_learning_rate(self.base_lr)
    self.steps_per_epoch = int(train_ds.cardinality())
    _check_data(train_ds, self.info, model, s.train_split,
                self.steps_per_epoch)
    distribute_lib.check_split(self.strategy, train_ds, model)
    if s.sync_batch_norm and self.strategy is not None:
      distribute_lib.sync_batch_norm(model)
    schedule = schedules.schedule_of(model.optimizer)
    if isinstance(schedule, schedules.WarmupStepDecay) and (
        schedule.steps_per_epoch is None):
      schedule.steps_per_epoch = self.steps_per_epoch

  def _restore(self):
    """Resumes from the newest checkpoint (or starts, or starts fresh) and
    sets the learning rate and L2 coefficient earlier recoveries left."""
    model, workdir = self.model, self.workdir
    if self.s.fresh:
      moved = workdir_lib.set_aside(workdir)
      if moved:
        print(f"Starting fresh: moved the earlier run's files to {moved}.")
    for orphan in checkpoints.remove_orphans(workdir):
      logging.warning("Removed %s, left by an interrupted save.", orphan)
    distribute_lib.mirror_chief(self.strategy, self.chief_workdir, workdir)
    self.manager = checkpoints.make_manager(model, workdir)
    self.restored = checkpoints.restore_latest(self.manager, model, workdir)
    distribute_lib.check_same_step(
        self.strategy, int(model.optimizer.iterations.numpy()),
        self.chief_workdir)
    checkpoint_lr = recovery_lib.learning_rate(model.optimizer)
    self.initialised_from = None
    if self.restored and self.s.init_from:
      print(f"train.init_from={self.s.init_from!r} is not applied: this run "
            f"resumes its own checkpoint (a preset only starts a run; "
            f"--fresh starts over from it).")
    elif not self.restored and self.s.init_from:
      self._init_from_preset()
    elif not self.restored and model.needs_informative_init():
      _fit_informative_init(model, self.train_ds)
    # Complete: the experiment's settings of the modes that run later
    # (`evaluate.*` for --mode=eval, `export.*`) are never called here, and
    # gin's operative config would drop them.
    gin_utils.write_operative_config(workdir, complete=True)
    self._apply_earlier_recoveries(checkpoint_lr)
    self.start_step = int(model.optimizer.iterations.numpy())
    self.pending = None
    if self.restored:
      total = self.s.epochs * self.steps_per_epoch
      logging.info("Resuming at step %d of %d.", self.start_step, total)
      print(f"Resuming from {self.restored} at step {self.start_step} of "
            f"{total}.")
      self.pending = self.restored
    elif self.s.recovery:  # A state to roll back to.
      self.pending = self.manager.save(checkpoint_number=self.start_step)

  def _init_from_preset(self):
    """The preset's weights, replay buffer and random states, in place of
    the new model's (a run from step 0 only)."""
    path = preset_format.resolve(self.s.init_from)
    try:
      preset_format.load_weights(self.model, path)
    except preset_format.PresetError as e:
      raise preset_format.PresetError(
          f"train.init_from={self.s.init_from!r}: {e} Fine-tune a preset "
          f"with the config that trained it: `python -m ebmkit.run "
          f"--init_from_preset=...` without --gin_file reads its "
          f"operative_config.gin.") from None
    self.initialised_from = os.path.abspath(path)
    print(f"Starting from the preset {self.initialised_from} (its weights, "
          f"replay buffer and random states).")

  def _apply_earlier_recoveries(self, checkpoint_lr):
    """The configured learning rate applies (also on resume), times the cuts
    that earlier recoveries of this configuration left in force."""
    model, base_lr = self.model, self.base_lr
    earlier = recovery_lib.load_recoveries(self.workdir)
    self.lr_scale, l2_extra = recovery_lib.inherited(earlier, base_lr)
    model.l2_weight += l2_extra
    recovery_lib.set_learning_rate(model.optimizer, base_lr, self.lr_scale)
    applied_lr = recovery_lib.learning_rate(model.optimizer)
    if self.restored and not np.isclose(applied_lr, checkpoint_lr, rtol=1e-6):
      print(f"Learning rate {applied_lr:.3g} (the config's"
            + (f" × {self.lr_scale:g} from earlier recoveries"
               if self.lr_scale != 1 else "")
            + f"); the checkpoint had {checkpoint_lr:.3g}.")
    if earlier and self.lr_scale == 1.0 and earlier[-1].get(
        "base_learning_rate") != base_lr:
      print("The learning rate differs from the one earlier recoveries were "
            "made under: their cuts and L2 increases are not applied.")

  def _callbacks(self):
    """The guard, checkpointer, sample grids, TensorBoard and console lines,
    and the `fit` to run them with."""
    s, workdir = self.s, self.workdir
    log_dir = workdir_lib.path(workdir, workdir_lib.TENSORBOARD)
    # One writer for the optimizer-step axis: step scalars and sample grids.
    self.step_writer = tf.summary.create_file_writer(
        workdir_lib.path(log_dir, "train"))
    # Without recovery there is no guard, and one fit ends
    # `_fit_with_recovery`.
    self.guard = s.recovery.guard() if s.recovery else None
    self.checkpointer = callbacks_lib.Checkpointer(
        self.manager, workdir, s.checkpoint_every_steps, s.keep_checkpoints,
        self.guard, self.pending)
    callbacks = ([self.guard] if self.guard else []) + [
        self.checkpointer,
        callbacks_lib.SampleGrid(workdir_lib.path(workdir, workdir_lib.SAMPLES),
                                 s.sample_grid_images,
                                 writer=self.step_writer),
        keras.callbacks.TensorBoard(log_dir=log_dir)]
    if s.log_every_steps:
      callbacks.append(callbacks_lib.StepScalars(self.step_writer,
                                                 s.log_every_steps))
    if s.verbose == 2:  # One line per epoch, by ebmkit rather than Keras.
      callbacks.append(callbacks_lib.EpochLog(s.epochs))
    self.fit = None  # model.fit
    if self.strategy is not None:
      # Before the callbacks that read the buffer: its replicas' shards.
      callbacks.insert(0, replicas.BufferSync(s.checkpoint_every_steps))
      print(f"Training on {distribute_lib.describe(self.strategy)}.")
      if distribute_lib.is_multi_worker(self.strategy):
        self.fit = lambda *a, **k: worker_loop.fit(self.model, self.strategy,
                                                   *a, **k)
    self.callback_list = callbacks

  def _fit_with_recovery(self):
    """Fits to the last epoch, recovering from each divergence as the policy
    says; returns the last fit's history."""
    policy = self.s.recovery
    while True:
      if self.guard:
        self.guard.reset()
      history = _fit_to(self.model, self.train_ds, self.val_ds,
                        self.steps_per_epoch, self.s.epochs,
                        self.callback_list, 1 if self.s.verbose == 1 else 0,
                        self.fit)
      if self.guard is None or self.guard.reason is None:
        return history
      event = policy.recover(
          self.model, self.manager, self.guard, self.workdir, self.base_lr,
          self.lr_scale, previous_target=(
              self.recoveries[-1]["rolled_back_to"] if self.recoveries
              else None))
      self.lr_scale = event["lr_scale"]
      self.checkpointer.pending = None  # The target is verified already.
      self.recoveries.append(event)
      if len(self.recoveries) > policy.max_recoveries:
        raise policy.gave_up(self.recoveries, self.model.l2_weight,
                             self.workdir, event["rolled_back_to"])

  def _results(self, history):
    """Tests the model, writes results.json and returns it."""
    model, workdir = self.model, self.workdir
    self.step_writer.close()
    if distribute_lib.is_multi_worker(self.strategy):
      test_metrics = worker_loop.evaluate(model, self.strategy, self.test_ds)
    else:
      test_metrics = _floats(model.evaluate(self.test_ds, return_dict=True,
                                            verbose=0))
    steps = int(model.optimizer.iterations.numpy())
    path = workdir_lib.path(workdir, workdir_lib.RESULTS)
    results = workdir_lib.read_json(path, {})  # Keeps "evaluation" and runs.
    runs = results.get("runs", []) + [{
        "started_at_step": self.start_step, "ended_at_step": steps,
        "resumed_from": self.restored, "recoveries": len(self.recoveries),
        "wall_time_s": round(time.time() - self.started, 1)}]
    last_epoch = {k: float(v[-1]) for k, v in history.items()}
    results.update({
        "dataset": self.info.name,
        "steps": steps,
        "epochs": self.s.epochs,
        "epochs_completed": steps // self.steps_per_epoch,
        "resumed_from": self.restored,
        # A fine-tuning's preset, kept when it resumes.
        "initialised_from": self.initialised_from or results.get(
            "initialised_from"),
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
        "distribute": distribute_lib.describe(self.strategy),
    })
    if model.classifies:
      results["test_accuracy"] = test_metrics.get("accuracy")
      print(f"Test accuracy on {self.info.name}/{self.s.test_split}: "
            f"{results['test_accuracy']:.4f}")
    workdir_lib.write_json(path, results)
    return results
