"""Sharpness-aware minimisation (SAM; Foret et al., ICLR 2021) as a Keras
optimizer wrapper, as SADA-JEM (Yang, Ji et al., CVPR 2023) trains JEM.

SAM steps with the gradient taken at the worst nearby weights: with g the
loss's gradient at w,

    ε = ρ · g / ‖g‖₂                 (ASAM, `adaptive`: ε = ρ · w² g / ‖w g‖₂)
    g_SAM = ∇L(w + ε),               then the wrapped optimizer steps with g_SAM.

Each step costs two forward/backward passes. An optimizer only sees
gradients, so the second pass belongs to the train step: any model whose
`train_step` asks `optimizer.sharpness_aware` (every ebmkit `EnergyModel`:
JEM, its variants, the classifier) calls `sharpness_aware_gradients` with a
function recomputing its loss on the same batch and the same SGLD samples.
"""

import keras
import tensorflow as tf


def perturbation(grads, variables, rho, adaptive=False):
  """SAM's ε for each variable (see the module docstring); zero where the
  gradient is None or all-zero."""
  pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
  scaled = [(tf.abs(v) * g if adaptive else g) for g, v in pairs]
  norm = tf.linalg.global_norm(scaled)
  factor = rho / (norm + 1e-12)
  out, it = [], iter(pairs)
  for g in grads:
    if g is None:
      out.append(None)
      continue
    _, v = next(it)
    out.append(factor * (tf.square(v) * g if adaptive else g))
  return out


@keras.saving.register_keras_serializable(package="ebmkit")
class SAM(keras.optimizers.Optimizer):
  """Sharpness-aware minimisation around any Keras optimizer.

  `SAM(keras.optimizers.SGD(0.1, momentum=0.9), rho=0.05)` steps as the SGD
  does, with SAM's gradient. Its learning rate (and schedule) and
  iterations are the wrapped optimizer's, so ebmkit's schedules, recovery
  and checkpoints see the wrapped one.

  Args:
    optimizer: the wrapped optimizer (the "base optimizer").
    rho: ρ, the radius of the neighbourhood, > 0.
    adaptive: ASAM's scale-invariant neighbourhood (Kwon et al. 2021).
  """

  sharpness_aware = True

  def __init__(self, optimizer=None, rho=0.05, adaptive=False, name="sam",
               **kwargs):
    if optimizer is None:
      raise ValueError("SAM needs the optimizer it wraps: "
                       "SAM(optimizer=keras.optimizers.SGD(...), rho=...).")
    if not rho > 0:
      raise ValueError(f"SAM.rho must be > 0, got {rho!r}.")
    super().__init__(learning_rate=0.0, name=name, **kwargs)
    self.inner_optimizer = optimizer
    self.rho = float(rho)
    self.adaptive = bool(adaptive)

  def sharpness_aware_gradients(self, loss_fn, grads, variables):
    """The gradient of `loss_fn()` at w + ε, w restored afterwards.

    Args:
      loss_fn: recomputes the loss (same batch, same samples) with the
        current values of `variables`.
      grads: the loss's gradients at w.
      variables: the trainable variables w.
    """
    eps = perturbation(grads, variables, self.rho, self.adaptive)
    kept = [tf.identity(v) for v in variables]  # Restored exactly, not w+ε−ε.
    for v, e in zip(variables, eps):
      if e is not None:
        v.assign_add(e)
    with tf.GradientTape() as tape:
      loss = loss_fn()
    sharp = tape.gradient(loss, variables)
    for v, value in zip(variables, kept):
      v.assign(value)
    return sharp

  # -- the wrapped optimizer does the stepping --------------------------------

  def build(self, var_list):
    self.inner_optimizer.build(var_list)
    self.built = True

  @property
  def variables(self):
    return self.inner_optimizer.variables

  def apply(self, grads, trainable_variables=None):
    return self.inner_optimizer.apply(grads, trainable_variables)

  def stateless_apply(self, optimizer_variables, grads, trainable_variables):
    return self.inner_optimizer.stateless_apply(optimizer_variables, grads,
                                                trainable_variables)

  @property
  def learning_rate(self):
    return self.inner_optimizer.learning_rate

  @learning_rate.setter
  def learning_rate(self, learning_rate):
    self.inner_optimizer.learning_rate = learning_rate

  @property
  def iterations(self):
    return self.inner_optimizer.iterations

  def finalize_variable_values(self, var_list):
    self.inner_optimizer.finalize_variable_values(var_list)

  def get_config(self):
    config = super().get_config()
    config.pop("learning_rate", None)
    return {**config, "rho": self.rho, "adaptive": self.adaptive,
            "optimizer": keras.optimizers.serialize(self.inner_optimizer)}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    config["optimizer"] = keras.optimizers.deserialize(
        config["optimizer"], custom_objects=custom_objects)
    return cls(**config)
