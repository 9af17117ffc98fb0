"""Divergence: noticing it (`DivergenceGuard`) and recovering from it
(roll back to the last good checkpoint, lower the learning rate, raise the L2
energy penalty, re-initialise a non-finite buffer), in one place.

JEM's known weakness is that training diverges and has to be restarted with
a lower learning rate or more regularisation; `ebmkit.train` does that
itself, as its `RecoveryPolicy` says, and says what it did.
"""

import math
import os

import gin
import keras
import numpy as np
import tensorflow as tf

from ebmkit import gin_utils
from ebmkit import workdir as workdir_lib
from ebmkit.training import checkpoints
from ebmkit.training import schedules


class TrainingDivergedError(RuntimeError):
  """Training kept diverging after every allowed recovery."""


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
    buf = self.model.replay_buffer
    return buf is None or bool(tf.reduce_all(tf.math.is_finite(
        buf.samples.value)))

  def healthy(self):
    if self.reason is None and not self.buffer_finite():
      self._flag("the replay buffer holds NaN or Inf samples")
    return self.reason is None


learning_rate = schedules.current_learning_rate  # Callers read it here.


@gin.configurable
class RecoveryPolicy:
  """What training does when it diverges, configured in one place.

  On divergence (NaN/Inf or an out-of-bound loss, energies or energy gap; a
  non-finite buffer) training rolls back to a verified checkpoint, multiplies
  the learning rate by `lr_factor`, adds `l2_increase` to the L2 energy
  coefficient, re-initialises a non-finite buffer and continues; after
  `max_recoveries` recoveries in one run it gives up with
  `TrainingDivergedError`. Bind e.g. `RecoveryPolicy.max_recoveries = 5`;
  `train.recovery = False` turns recovery off.

  Args:
    max_recoveries: recoveries allowed in one run before giving up.
    lr_factor: learning-rate multiplier per recovery, in (0, 1].
    l2_increase: added to EnergyModel.l2_weight per recovery, >= 0.
    loss_bound, energy_bound, gap_bound: divergence thresholds on |loss|,
      |mean energy| and |mean E(data) - mean E(samples)|, > 0.
  """

  def __init__(self, max_recoveries=3, lr_factor=0.5, l2_increase=0.0,
               loss_bound=1e4, energy_bound=1e4, gap_bound=1e3):
    gin_utils.check_whole_number("RecoveryPolicy.max_recoveries",
                                 max_recoveries, 0)
    if not 0 < lr_factor <= 1:
      raise ValueError(f"RecoveryPolicy.lr_factor must be in (0, 1], got "
                       f"{lr_factor!r}.")
    if not l2_increase >= 0:
      raise ValueError(f"RecoveryPolicy.l2_increase must be >= 0, got "
                       f"{l2_increase!r}.")
    for name, value in (("loss_bound", loss_bound),
                        ("energy_bound", energy_bound),
                        ("gap_bound", gap_bound)):
      if not value > 0:
        raise ValueError(f"RecoveryPolicy.{name} must be > 0, got {value!r}.")
    self.max_recoveries = int(max_recoveries)
    self.lr_factor = lr_factor
    self.l2_increase = l2_increase
    self.loss_bound = loss_bound
    self.energy_bound = energy_bound
    self.gap_bound = gap_bound

  def guard(self):
    """A fresh `DivergenceGuard` with this policy's bounds."""
    return DivergenceGuard(self.loss_bound, self.energy_bound, self.gap_bound)

  def recover(self, model, manager, guard, workdir, base_lr, lr_scale,
              previous_target=None):
    """`recover` with this policy's learning-rate factor and L2 increase."""
    return recover(model, manager, guard, workdir, base_lr, lr_scale,
                   self.lr_factor, self.l2_increase, previous_target)

  def gave_up(self, recoveries, l2_weight, workdir, target):
    """The `TrainingDivergedError` for a run that used up its recoveries."""
    return gave_up(recoveries, self.max_recoveries, self.lr_factor,
                   self.l2_increase, l2_weight, workdir, target)


def policy_of(recovery):
  """`train.recovery` as a policy: True (the gin-configured
  `RecoveryPolicy()`), False/None (no recovery) or a `RecoveryPolicy`."""
  if recovery is True:
    return RecoveryPolicy()
  if recovery is False or recovery is None:
    return None
  if isinstance(recovery, RecoveryPolicy):
    return recovery
  raise ValueError(f"train.recovery must be True, False or a RecoveryPolicy "
                   f"(`train.recovery = @RecoveryPolicy()`), got "
                   f"{recovery!r}.")


def base_learning_rate(optimizer):
  """The configured learning rate: the constant rate, or a schedule's base
  `learning_rate`; None for a schedule without one (it cannot be scaled).
  Read it before restoring a checkpoint, which holds a constant rate too."""
  schedule = schedules.schedule_of(optimizer)
  if schedule is None:
    return learning_rate(optimizer)
  base = getattr(schedule, "learning_rate", None)
  return None if base is None else float(base)


def set_learning_rate(optimizer, base, scale):
  """Sets the learning rate to `base` × `scale` (the constant rate, or a
  schedule's base rate), so that cuts compound from the configured rate
  whatever a restored checkpoint held.

  Raises:
    TrainingDivergedError: `scale` != 1 on a schedule without a base
      `learning_rate` (e.g. PiecewiseConstantDecay).
  """
  schedule = schedules.schedule_of(optimizer)
  if schedule is None:
    optimizer.learning_rate = base * scale
  elif base is not None:
    schedule.learning_rate = base * scale
  elif scale != 1.0:
    raise TrainingDivergedError(
        f"Cannot lower the learning rate of a {type(schedule).__name__} "
        "schedule during recovery; use ebmkit.WarmupStepDecay or a constant "
        "rate.")


def load_recoveries(workdir):
  """The recoveries recorded in `workdir` (a list of dicts)."""
  return workdir_lib.read_json(workdir_lib.path(workdir,
                                                workdir_lib.RECOVERIES), [])


def inherited(recoveries, base):
  """(learning-rate scale, L2 increase) that earlier recoveries leave in
  force for a run whose configured learning rate is `base`.

  Recoveries belong to a configuration: when the configured rate is the one
  they were made under, their cumulative cut and L2 increases carry over (a
  resumed run does not diverge again the same way); a new rate (the user
  followed the advice to lower it) starts afresh.
  """
  if not recoveries:
    return 1.0, 0.0
  same = []
  for r in reversed(recoveries):
    b = r.get("base_learning_rate")
    if b is None or base is None or not math.isclose(b, base, rel_tol=1e-9):
      break
    same.append(r)
  if not same:
    return 1.0, 0.0
  return same[0]["lr_scale"], sum(r.get("l2_increase", 0.0) for r in same)


def recover(model, manager, guard, workdir, base_lr, lr_scale, lr_factor,
            l2_increase, previous_target=None):
  """Rolls back to a verified checkpoint and makes training gentler.

  The target is a checkpoint whose weights were seen to give a finite,
  in-bound step: the newest such one, or, when training diverged again from
  `previous_target` (this run's last rollback target) before a newer one was
  verified, an older one (`checkpoints.rollback_target`). Newer checkpoints,
  whose weights led to the divergence, are deleted. The learning rate
  becomes `base_lr` × `lr_scale` × `lr_factor` (cuts compound).

  Returns:
    The recovery's record (also appended to recoveries.json, printed and
    logged to TensorBoard); its "lr_scale" is the new cumulative scale.
  """
  bad_step = int(model.optimizer.iterations.numpy())
  target, stepped_back = checkpoints.rollback_target(
      manager.checkpoints, checkpoints.verified_on_disk(manager, workdir),
      previous_target)
  discarded = checkpoints.discard_newer_than(manager, target, workdir)
  checkpoints.restore(manager, model, target)
  lr_scale *= lr_factor
  set_learning_rate(model.optimizer, base_lr, lr_scale)
  if l2_increase:
    model.l2_weight += l2_increase
  reset_buffer = not guard.buffer_finite()
  if reset_buffer:
    model.replay_buffer.reset()
  model.train_function = None  # Retrace: the step reads these as constants.
  model.stop_training = False
  event = {"step": bad_step, "reason": guard.reason,
           "rolled_back_to": target, "stepped_back": stepped_back,
           "discarded": [os.path.basename(p) for p in discarded],
           "base_learning_rate": base_lr, "lr_scale": lr_scale,
           "learning_rate": learning_rate(model.optimizer),
           "l2_weight": model.l2_weight, "buffer_reset": reset_buffer,
           "l2_increase": l2_increase}
  workdir_lib.write_json(workdir_lib.path(workdir, workdir_lib.RECOVERIES),
                         load_recoveries(workdir) + [event])
  message = (f"Divergence at step {bad_step}: {guard.reason}. Rolled back to "
             f"{os.path.basename(target)}"
             + (f" (further back: training diverged again from "
                f"{os.path.basename(previous_target)}, the last rollback's "
                f"target)" if stepped_back else "")
             + (f" (deleted the diverged {', '.join(event['discarded'])})"
                if discarded else "")
             + f"; learning rate now {event['learning_rate']:.3g} "
             f"({lr_scale:g}× the configured), L2 energy coefficient "
             f"{model.l2_weight:g}"
             + ("; replay buffer re-initialised" if reset_buffer else "")
             + ".")
  print(message)  # Console (stdout); TensorBoard and the files below too.
  writer = tf.summary.create_file_writer(
      workdir_lib.path(workdir, workdir_lib.TENSORBOARD, "train"))
  with writer.as_default():
    tf.summary.scalar("recovery/learning_rate", event["learning_rate"],
                      step=bad_step)
    tf.summary.text("recovery/event", message, step=bad_step)
  writer.close()
  return event


def describe_target(recoveries, target):
  """What the checkpoint training gave up on is, honestly: a state whose
  next step passed the guard, and how often training diverged from it."""
  name = os.path.basename(target)
  again = sum(1 for r in recoveries[:-1] if r["rolled_back_to"] == target)
  if again:
    return (f"{name}, the state the last rollback went to. Its next step "
            f"passed the divergence checks, but training diverged from it "
            f"again {again} time(s) with a lower learning rate, so it may "
            f"already be poor: check its accuracy (--mode=eval) against "
            f"earlier epochs' before using it")
  return (f"{name}, the state the last rollback went to. Its next step "
          f"passed the divergence checks; that does not show it trains "
          f"well, so check its accuracy (--mode=eval) before using it")


def gave_up(recoveries, max_recoveries, lr_factor, l2_increase, l2_weight,
            workdir, target):
  """The error raised when training diverged after every recovery."""
  last = recoveries[-1]
  return TrainingDivergedError(
      f"Training diverged {len(recoveries)} times in this run; ebmkit gave "
      f"up after {max_recoveries} recoveries. Last: {last['reason']} at step "
      f"{last['step']}. Tried: rolling back to a checkpoint whose next step "
      f"passed the divergence checks (further back when training diverged "
      f"again from the same one) and multiplying the learning rate by "
      f"{lr_factor} each time (now {last['lr_scale']:g}× the configured), "
      f"adding {l2_increase} to the L2 energy coefficient each time (now "
      f"{l2_weight:g}), re-initialising non-finite buffers. The newest "
      f"checkpoint in {workdir} is now {describe_target(recoveries, target)}."
      f" Rerun with a lower LEARNING_RATE (it applies on resume), a "
      f"larger L2 (samplers/l2_energy.gin) or a smaller SGLD_STEP_SIZE; "
      f"recoveries.json lists every recovery.")
