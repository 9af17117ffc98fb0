"""Langevin dynamics (SGLD) on any energy function."""

import keras
import tensorflow as tf

from ebmkit.models import replicas


@keras.saving.register_keras_serializable(package="ebmkit")
class LangevinSampler(keras.layers.Layer):
  """Stochastic gradient Langevin dynamics: x_{t+1} = x_t - α ∂E/∂x + σ ε.

  The energy is any callable mapping a batch of points to one energy per
  point, so the same sampler runs in pixel space or in a GAN's latent space.
  The chain runs in one of three forms (`loop`), all with the same
  arithmetic and the same noise draws, so they give the same chain:
  "while", a `tf.while_loop` over the steps; "unrolled", every step written
  out in the graph; "partial", a `tf.while_loop` over blocks of `unroll`
  steps written out (then the remaining steps % unroll). Under XLA on the
  CPU the while loop is several times slower than the same steps written
  out (BENCHMARKS.md, "Sampler forms"); "auto" picks the fastest form
  measured for the device and for whether the chain is compiled with XLA
  (`FASTEST_LOOP`).

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
    loop: the chain's form: "auto", "while", "unrolled" or "partial" (see
      above). "unrolled" needs a step count known when the graph is built (a
      Python int, as in the train step); for a count given as a run-time
      tensor (the standalone `compiled_sampler`) it runs as "partial".
    unroll: steps written out per block of the "partial" form (and of
      "unrolled" with a run-time step count).
  """

  def __init__(self, steps=20, step_size=1.0, noise=0.01, grad_clip=None,
               clip_range=None, seed=None, loop="auto", unroll=5, **kwargs):
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
    if loop not in LOOPS:
      raise ValueError(f"LangevinSampler.loop must be one of {LOOPS}, got "
                       f"{loop!r}.")
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
      raise ValueError(
          f"LangevinSampler.unroll must be a whole number >= 1, got {unroll!r}.")
    self.loop = loop
    self.unroll = unroll
    self.steps = int(steps)
    self.step_size = float(step_size)
    self.noise = float(noise)
    self.grad_clip = None if grad_clip is None else float(grad_clip)
    self.clip_range = clip_range
    self.seed = seed
    # Under tf.distribute each replica draws its own noise.
    self.seed_generator = replicas.SeedGenerator(seed)

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
    step = lambda v: self._step(v, energy_fn)
    known = tf.get_static_value(steps)  # None for a run-time count.
    loop = resolve_loop(self.loop)
    if loop == "unrolled" and known is not None:
      x = _unrolled(step, x, int(known))
    elif loop == "while":
      x = _while(step, x, steps)
    else:  # "partial", or "unrolled" with a run-time count.
      k = self.unroll
      x = _while(lambda v: _unrolled(step, v, k), x,
                 steps // k if known is None else int(known) // k)
      if known is None:
        x = _while(step, x, steps % k)
      else:
        x = _unrolled(step, x, int(known) % k)
    return tf.stop_gradient(x)

  def _step(self, x, energy_fn):
    """One Langevin step from `x`: the same ops in every loop form."""
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
    return x

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
        "loop": self.loop,
        "unroll": self.unroll,
    }


def _unrolled(step, x, n):
  """`n` (a Python int) steps written out one after the other."""
  for _ in range(n):
    x = step(x)
  return x


def _while(step, x, n):
  """`n` steps (an int or a scalar tensor) as a `tf.while_loop`."""
  if isinstance(n, int) and n == 0:
    return x
  n = tf.cast(n, tf.int32)
  return tf.while_loop(lambda i, _: i < n, lambda i, v: (i + 1, step(v)),
                       (tf.constant(0, tf.int32), x))[1]


LOOPS = ("auto", "while", "unrolled", "partial")

# The fastest chain form by (device, compiled with XLA), from
# `python tools/benchmark.py --mode=sampler_forms` (BENCHMARKS.md, "Sampler
# forms"). CPU rows: measured on WRN-10-2. XLA:CPU runs the convolutions
# inside any while-loop body several times slower (blocks of steps as slow
# as single steps), hence "unrolled" there. Accelerator rows: not measured
# yet (`tools/gpu_check.sh` measures them); "while" because a GPU runs the
# same cuDNN kernels inside a loop body, an iteration costs a predicate read
# (microseconds against milliseconds per step), and unrolling multiplies
# the XLA compile time by η.
FASTEST_LOOP = {
    ("CPU", False): "while",
    ("CPU", True): "unrolled",
    ("accelerator", False): "while",
    ("accelerator", True): "while",
}


def _in_xla_context():
  """Whether the graph being built is compiled with XLA (a
  `tf.function(jit_compile=True)`, e.g. Keras' train step, or inside one)."""
  if tf.executing_eagerly():
    return False
  # pylint: disable=g-import-not-at-top
  from tensorflow.python.ops import control_flow_util
  return control_flow_util.GraphOrParentsInXlaContext(
      tf.compat.v1.get_default_graph())


def resolve_loop(loop="auto", jit_compile=None):
  """The chain form a `LangevinSampler(loop=...)` runs.

  Args:
    loop: "while", "unrolled" or "partial" (returned as given), or "auto".
    jit_compile: whether the chain is compiled with XLA; None: whether the
      graph being built is.

  Returns:
    For "auto", `FASTEST_LOOP` for this machine's device (a GPU/TPU, else the
    CPU) and XLA setting.
  """
  if loop != "auto":
    return loop
  if jit_compile is None:
    jit_compile = _in_xla_context()
  device = ("accelerator" if any(d.device_type != "CPU" for d in
                                 tf.config.list_physical_devices()) else "CPU")
  return FASTEST_LOOP[(device, bool(jit_compile))]


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
    A function `run(x0, steps, *args)` returning the chain's final points.
    `steps` (an int or a scalar tensor) always reaches the compiled chain as
    a run-time tensor, so the chain traces once per input signature
    (`reduce_retracing`), whatever the count, and an "unrolled" sampler runs
    as "partial" instead of writing out, say, 1,500 steps.
  """

  @tf.function(jit_compile=jit_compile, reduce_retracing=True)
  def chain(x0, steps, *args):
    return sampler(x0, energy_fn=lambda v: energy_fn(v, *args), steps=steps)

  def run(x0, steps, *args):
    return chain(x0, tf.convert_to_tensor(steps, tf.int32), *args)

  return run
