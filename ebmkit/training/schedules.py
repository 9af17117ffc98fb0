"""Learning-rate schedules of the papers ebmkit reproduces."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ebmkit")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up, then the rate times `decay_rate` at each decay epoch.

  The JEM reference: Adam 1e-4, 1,000 warm-up iterations, × 0.3 at epochs 160
  and 180. Step s (0-based) gets
    learning_rate · min(1, (s + 1) / warmup_steps)
                  · decay_rate ^ #{e in decay_epochs : s >= e · steps_per_epoch}.

  Args:
    learning_rate: the rate after warm-up.
    warmup_steps: iterations of linear warm-up (0: none).
    decay_epochs: epochs at whose start the rate is multiplied by decay_rate.
    decay_rate: the factor.
    steps_per_epoch: iterations per epoch; `ebmkit.train` fills it in from the
      data when left None.
  """

  def __init__(self, learning_rate=1e-4, warmup_steps=1000,
               decay_epochs=(160, 180), decay_rate=0.3, steps_per_epoch=None):
    if learning_rate <= 0:
      raise ValueError(f"WarmupStepDecay.learning_rate must be > 0, got "
                       f"{learning_rate}.")
    self.learning_rate = float(learning_rate)
    self.warmup_steps = int(warmup_steps)
    self.decay_epochs = tuple(int(e) for e in decay_epochs)
    self.decay_rate = float(decay_rate)
    self.steps_per_epoch = steps_per_epoch

  def __call__(self, step):
    if self.steps_per_epoch is None and self.decay_epochs:
      raise ValueError("WarmupStepDecay.steps_per_epoch is not set: pass it, "
                       "or train with ebmkit.train, which sets it.")
    step = ops.cast(step, "float32")
    rate = ops.convert_to_tensor(self.learning_rate, "float32")
    if self.warmup_steps:
      rate *= ops.minimum(1.0, (step + 1.0) / self.warmup_steps)
    for epoch in self.decay_epochs:
      boundary = float(epoch * self.steps_per_epoch)
      rate *= ops.where(step >= boundary, self.decay_rate, 1.0)
    return rate

  def get_config(self):
    return {"learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "decay_epochs": self.decay_epochs, "decay_rate": self.decay_rate,
            "steps_per_epoch": self.steps_per_epoch}


def schedule_of(optimizer):
  """The optimizer's learning-rate schedule, or None for a constant rate.

  The one place ebmkit reads a Keras optimizer's private `_learning_rate`:
  Keras 3 exposes the schedule object only there.
  """
  # A wrapper (SAM, Keras' LossScaleOptimizer) steps with its inner one.
  optimizer = getattr(optimizer, "inner_optimizer", optimizer)
  rate = getattr(optimizer, "_learning_rate", None)
  if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
    return rate
  return None


def current_learning_rate(optimizer):
  """The learning rate in force now, a float (a schedule at the current
  step, or the constant rate)."""
  return float(keras.ops.convert_to_numpy(optimizer.learning_rate))

