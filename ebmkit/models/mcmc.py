"""Exact (Metropolis-adjusted) samplers from tensorflow-probability as
drop-in alternatives to `LangevinSampler`: MALA, and HMC with step-size
adaptation. Wherever a chain runs (JEM's p(x) chains, the evaluation's fresh
samples, DDLS's latent chains) `MCMCSampler` takes the same call,
`sampler(x, energy_fn=..., steps=...)`, and targets p(x) ∝ exp(−E(x)).

tfp's MALA proposes x' = x + (ε/2)·∇log p(x) + √ε·ξ (ε = `step_size`) and
accepts it with the Metropolis-Hastings probability, so its chains have
p(x) as their stationary law for any ε; the unadjusted (SGLD) step of
`LangevinSampler` with α = ε/2 and σ = √ε is the same proposal, always
accepted. JEM's α = 1, σ = 0.01 is no such pair: a calibrated step with
α = 1 has σ = √2 ≈ 1.41, 141 times the noise.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from ebmkit.models import replicas

KERNELS = ("mala", "hmc")
ADAPTATION_RATE = 0.05  # of log ε per transition, see `MCMCSampler.call`


@keras.saving.register_keras_serializable(package="ebmkit")
class MCMCSampler(keras.layers.Layer):
  """MALA or HMC chains on an energy, from `tfp.mcmc`.

  Args:
    kernel: "mala" (`tfp.mcmc.MetropolisAdjustedLangevinAlgorithm`) or
      "hmc" (`tfp.mcmc.HamiltonianMonteCarlo`).
    steps: transitions per call (each chain's η).
    step_size: ε, MALA's Euler step (drift ε/2·∇log p, noise √ε) or HMC's
      leapfrog step.
    leapfrog_steps: HMC's leapfrog steps per transition.
    adapt_step_size: adapt ε towards `target_accept` during the first 80%
      of each call's steps (see `call`); the adapted ε carries over to the
      next call.
    target_accept: the acceptance rate adaptation aims at (default 0.574
      for MALA, 0.65 for HMC: the optimal-scaling results).
    seed: seed of the chains' random numbers.

  After each call, `acceptance_rate` holds the mean acceptance over its
  transitions and chains, and `current_step_size` the (adapted) ε.
  """

  reports_acceptance = True

  def __init__(self, kernel="mala", steps=20, step_size=0.01,
               leapfrog_steps=5, adapt_step_size=False, target_accept=None,
               seed=None, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    if kernel not in KERNELS:
      raise ValueError(f"MCMCSampler.kernel must be one of {KERNELS}, got "
                       f"{kernel!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
      raise ValueError(f"MCMCSampler.steps must be a whole number >= 0, got "
                       f"{steps!r}.")
    if not step_size > 0:
      raise ValueError(f"MCMCSampler.step_size (ε) must be > 0, got "
                       f"{step_size!r}.")
    if int(leapfrog_steps) < 1:
      raise ValueError(f"MCMCSampler.leapfrog_steps must be >= 1, got "
                       f"{leapfrog_steps!r}.")
    if target_accept is not None and not 0 < target_accept < 1:
      raise ValueError(f"MCMCSampler.target_accept must be in (0, 1), got "
                       f"{target_accept!r}.")
    self.kernel = kernel
    self.steps = steps
    self.step_size = float(step_size)
    self.leapfrog_steps = int(leapfrog_steps)
    self.adapt_step_size = bool(adapt_step_size)
    self.target_accept = (target_accept if target_accept is not None
                          else 0.574 if kernel == "mala" else 0.65)
    self.seed = seed
    self.seed_generator = replicas.SeedGenerator(seed)
    self.current_step_size = self.add_weight(
        shape=(), initializer=keras.initializers.Constant(self.step_size),
        trainable=False, name="step_size")
    self.acceptance_rate = self.add_weight(
        shape=(), initializer="zeros", trainable=False,
        name="acceptance_rate")

  @property
  def noise(self):
    """MALA's proposal noise √ε (HMC: none in the proposal's sense)."""
    return self.step_size ** 0.5 if self.kernel == "mala" else 0.0

  def _kernel(self, energy_fn, eps):
    log_prob = lambda x: -energy_fn(x)
    if self.kernel == "mala":
      return tfp.mcmc.MetropolisAdjustedLangevinAlgorithm(log_prob, eps)
    return tfp.mcmc.HamiltonianMonteCarlo(log_prob, eps, self.leapfrog_steps)

  def call(self, x, energy_fn=None, steps=None):
    """Runs the chains from `x`; returns their final points (no gradient to
    the energy's parameters).

    With `adapt_step_size`, after each of the first 80% of the transitions
    log ε moves by `ADAPTATION_RATE` · (batch acceptance − target_accept),
    one ε for all chains (Robbins-Monro, as tfp's SimpleStepSizeAdaptation
    does multiplicatively); the last ε is kept for the next call.
    """
    if energy_fn is None:
      raise ValueError("MCMCSampler needs `energy_fn=`: a callable that "
                       "maps a batch of points to one energy per point.")
    steps = self.steps if steps is None else steps
    x = tf.convert_to_tensor(x, tf.float32)
    seed = tf.cast(self.seed_generator.next(), tf.int32)
    adapt_until = tf.cast(tf.cast(steps, tf.float32) * 0.8, tf.int32)
    eps0 = tf.cast(self.current_step_size, tf.float32)

    def body(i, state, results, log_eps, total):
      kernel = self._kernel(energy_fn, tf.exp(log_eps))
      step_seed = tf.random.experimental.stateless_fold_in(seed, i)
      state, results = kernel.one_step(state, results, seed=step_seed)
      rate = tf.reduce_mean(tf.cast(results.is_accepted, tf.float32))
      if self.adapt_step_size:
        log_eps = tf.where(i < adapt_until, log_eps + ADAPTATION_RATE * (
            rate - self.target_accept), log_eps)
      return i + 1, state, results, log_eps, total + rate

    first = self._kernel(energy_fn, eps0)
    _, x, _, log_eps, total = tf.while_loop(
        lambda i, *_: i < steps, body,
        (tf.constant(0), x, first.bootstrap_results(x), tf.math.log(eps0),
         tf.constant(0.0)))
    self.acceptance_rate.assign(total / tf.cast(tf.maximum(steps, 1),
                                                tf.float32))
    if self.adapt_step_size:
      self.current_step_size.assign(tf.exp(log_eps))
    return tf.stop_gradient(x)

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)

  def compute_output_spec(self, x, energy_fn=None, steps=None):
    return keras.KerasTensor(x.shape, x.dtype)

  def get_config(self):
    return {**super().get_config(), "kernel": self.kernel,
            "steps": self.steps, "step_size": self.step_size,
            "leapfrog_steps": self.leapfrog_steps,
            "adapt_step_size": self.adapt_step_size,
            "target_accept": self.target_accept, "seed": self.seed}
