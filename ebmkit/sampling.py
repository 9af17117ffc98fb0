"""Langevin dynamics (SGLD) on any energy function."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ebmkit")
class LangevinSampler(keras.layers.Layer):
  """Stochastic gradient Langevin dynamics: x_{t+1} = x_t - α ∂E/∂x + σ ε.

  The energy is any callable mapping a batch of points to one energy per
  point, so the same sampler runs in pixel space or in a GAN's latent space.
  The chain is a `tf.while_loop`, so it compiles with XLA inside a train step
  and as a standalone sampler.

  Args:
    steps: number of Langevin steps η per call.
    step_size: α, the step along -∂E/∂x.
    noise: σ, the standard deviation of the Gaussian noise per step (0 gives
      noise-free gradient descent on the energy).
    grad_clip: if set, each gradient element is clipped to [-grad_clip,
      grad_clip] before the step (IGEBM clips at 0.01).
    clip_range: if set, a pair (low, high): x is clamped to it after each step
      (the data range, e.g. (-1, 1)).
    seed: int seed for the noise's `keras.random.SeedGenerator`.
  """

  def __init__(self, steps=20, step_size=1.0, noise=0.01, grad_clip=None,
               clip_range=None, seed=None, **kwargs):
    # Chains and stored samples stay float32 under a mixed-precision policy.
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    if steps < 0:
      raise ValueError(f"LangevinSampler.steps must be >= 0, got {steps}.")
    if step_size < 0:
      raise ValueError(
          f"LangevinSampler.step_size (α) must be >= 0, got {step_size}.")
    if noise < 0:
      raise ValueError(f"LangevinSampler.noise (σ) must be >= 0, got {noise}.")
    if grad_clip is not None and grad_clip <= 0:
      raise ValueError(
          f"LangevinSampler.grad_clip must be positive or None, got {grad_clip}.")
    if clip_range is not None:
      clip_range = tuple(float(v) for v in clip_range)
      if len(clip_range) != 2 or clip_range[0] >= clip_range[1]:
        raise ValueError("LangevinSampler.clip_range must be (low, high) with "
                         f"low < high, got {clip_range}.")
    self.steps = int(steps)
    self.step_size = float(step_size)
    self.noise = float(noise)
    self.grad_clip = None if grad_clip is None else float(grad_clip)
    self.clip_range = clip_range
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, x, energy_fn=None, steps=None):
    """Runs the chain from `x`.

    Args:
      x: starting points, a float tensor [batch, ...].
      energy_fn: callable, points -> energies [batch]; required.
      steps: number of steps for this call (a Python int or a scalar tensor);
        defaults to `self.steps`.

    Returns:
      The chain's final points, shape of `x`, with no gradient to the energy's
      parameters.
    """
    if energy_fn is None:
      raise ValueError("LangevinSampler needs `energy_fn=`: a callable that "
                       "maps a batch of points to one energy per point.")
    steps = self.steps if steps is None else steps
    x = tf.convert_to_tensor(x)

    def body(i, x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        total_energy = tf.reduce_sum(energy_fn(x))
      grad = tape.gradient(total_energy, x)
      if self.grad_clip is not None:
        grad = tf.clip_by_value(grad, -self.grad_clip, self.grad_clip)
      x = x - self.step_size * grad
      if self.noise > 0:
        x = x + self.noise * keras.random.normal(
            tf.shape(x), dtype=x.dtype, seed=self.seed_generator)
      if self.clip_range is not None:
        x = tf.clip_by_value(x, *self.clip_range)
      return i + 1, x

    _, x = tf.while_loop(lambda i, _: i < steps, body,
                         (tf.constant(0, tf.int32), x))
    return tf.stop_gradient(x)

  def compute_output_shape(self, input_shape):
    """The chains' final points have the starts' shape."""
    return tuple(input_shape)

  def compute_output_spec(self, x, energy_fn=None, steps=None):
    return keras.KerasTensor(x.shape, x.dtype)

  def get_config(self):
    return {
        **super().get_config(),
        "steps": self.steps,
        "step_size": self.step_size,
        "noise": self.noise,
        "grad_clip": self.grad_clip,
        "clip_range": self.clip_range,
        "seed": self.seed,
    }


def resolve_jit_compile(jit_compile):
  """True/False as given; "auto" means XLA on a GPU/TPU only.

  On the CPU, XLA's convolutions (and their input gradients, which SGLD takes
  η times per iteration) are several times slower than TensorFlow's own
  kernels (BENCHMARKS.md), as Keras' own "auto" also assumes.
  """
  if jit_compile != "auto":
    return bool(jit_compile)
  return any(d.device_type != "CPU" for d in tf.config.list_physical_devices())


def chain_energy(model, y=None):
  """The energy a chain on `model` descends: E(x), or E(x, y) for int labels
  `y` [batch] (class-conditional chains; a label < 0 descends E(x)). The one
  place chains pick their energy, for training, sampling after training,
  serving and evaluation."""
  if y is None:
    return lambda v: model.energy(v)
  return lambda v: model.class_energy(v, y)


def run_chain(model, starts, y=None, steps=None, sampler=None):
  """Runs Langevin chains on `model` from `starts`.

  Args:
    model: an `EnergyModel` (anything with `energy`, `class_energy` and a
      `sampler`).
    starts: chain starts [batch, ...].
    y: optional int labels [batch]: sample x ~ p(x|y) from E(x, y).
    steps: steps for this call (default: the sampler's η).
    sampler: a `LangevinSampler` other than the model's own (e.g. the
      evaluation's SGLD defence).

  Returns:
    The chains' final points.
  """
  sampler = model.sampler if sampler is None else sampler
  return sampler(starts, energy_fn=chain_energy(model, y), steps=steps)


def compiled_sampler(sampler, energy_fn, jit_compile=True):
  """A standalone compiled sampling function, for use after training.

  Args:
    sampler: a `LangevinSampler`.
    energy_fn: callable, (points, *args) -> energies [batch]; `args` are
      tensors passed through `run` (e.g. the labels of conditional chains).
    jit_compile: compile the chain with XLA.

  Returns:
    A `tf.function` `run(x0, steps, *args)` returning the chain's final
    points. It traces once per input signature (`reduce_retracing`).
  """

  @tf.function(jit_compile=jit_compile, reduce_retracing=True)
  def run(x0, steps, *args):
    return sampler(x0, energy_fn=lambda v: energy_fn(v, *args), steps=steps)

  return run
