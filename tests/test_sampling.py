"""The Langevin sampler against analytic energies."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ebmkit.models import sampling

MEAN = np.array([1.0, -2.0], np.float32)
COV = np.array([[1.0, 0.6], [0.6, 0.5]], np.float32)
PRECISION = np.linalg.inv(COV).astype(np.float32)


def gaussian_energy(x):
  """E(x) = ½ (x − μ)ᵀ Σ⁻¹ (x − μ), so exp(−E) ∝ N(μ, Σ)."""
  d = x - MEAN
  return 0.5 * tf.reduce_sum((d @ PRECISION) * d, axis=-1)


def test_samples_a_2d_gaussian():
  # Unadjusted Langevin with σ² = 2α targets exp(−E). For a Gaussian its
  # stationary covariance is known exactly: Σ_α = 2α (I − (I − αP)²)⁻¹
  # (P the precision), within 0.3% of Σ at α = 0.005.
  step = 0.005
  sampler = sampling.LangevinSampler(steps=1500, step_size=step,
                                     noise=np.sqrt(2 * step), seed=1)
  run = sampling.compiled_sampler(sampler, gaussian_energy)
  chains = 4000
  x = run(tf.zeros([chains, 2]), 1500).numpy()
  a = np.eye(2) - step * PRECISION
  cov_alpha = 2 * step * np.linalg.inv(np.eye(2) - a @ a)
  # Tolerances: ~5 standard errors of 4,000 independent chains.
  np.testing.assert_allclose(x.mean(0), MEAN, atol=0.08)
  np.testing.assert_allclose(np.cov(x.T), cov_alpha, atol=0.08)
  np.testing.assert_allclose(cov_alpha, COV, atol=0.01)


def test_noise_free_sgld_is_gradient_descent():
  # E(x) = ½‖x‖², step α: x_{t+1} = (1 − α) x_t.
  sampler = sampling.LangevinSampler(steps=3, step_size=0.1, noise=0.0)
  x = sampler(tf.constant([[2.0, -4.0]]),
              energy_fn=lambda v: 0.5 * tf.reduce_sum(v * v, -1))
  np.testing.assert_allclose(x, [[2.0 * 0.9**3, -4.0 * 0.9**3]], rtol=1e-6)


def test_gradient_clip_and_clip_range():
  # E(x) = −100·x: gradient −100 per step, clipped to −0.5; then clamped to 1.
  sampler = sampling.LangevinSampler(steps=3, step_size=1.0, noise=0.0,
                                     grad_clip=0.5, clip_range=(-1.0, 1.0))
  energy_fn = lambda v: -100.0 * tf.reduce_sum(v, -1)
  x = sampler(tf.constant([[-1.0], [0.2]]), energy_fn=energy_fn)
  np.testing.assert_allclose(x, [[0.5], [1.0]])
  one = sampler(tf.constant([[-1.0]]), energy_fn=energy_fn, steps=1)
  np.testing.assert_allclose(one, [[-0.5]])


def test_xla_matches_eager():
  # Noise-free, so both paths must do the same arithmetic (TensorFlow's
  # stateless RNG picks different algorithms under XLA and on the CPU, so noisy
  # chains are compared in distribution, in test_samples_a_2d_gaussian).
  energy_fn = lambda v: tf.reduce_sum(tf.sin(3 * v) * v, -1)
  x0 = tf.random.stateless_uniform([8, 3], seed=[1, 2], minval=-1, maxval=1)
  sampler = sampling.LangevinSampler(steps=10, step_size=0.1, noise=0.0,
                                     grad_clip=2.0, clip_range=(-1, 1))
  eager = sampler(x0, energy_fn=energy_fn)
  xla = sampling.compiled_sampler(sampler, energy_fn)(x0, 10)
  assert not np.allclose(eager, x0, atol=1e-2)  # The chain moved.
  np.testing.assert_allclose(eager, xla, atol=1e-5)


def test_no_gradient_flows_to_the_energy_parameters():
  w = tf.Variable(2.0)
  sampler = sampling.LangevinSampler(steps=2, step_size=0.1, noise=0.0)
  with tf.GradientTape() as tape:
    x = sampler(tf.ones([2, 1]), energy_fn=lambda v: w * tf.reduce_sum(v, -1))
    total = tf.reduce_sum(x)
  assert tape.gradient(total, w) is None


@pytest.mark.parametrize("kwargs, message", [
    ({"step_size": -1.0}, "step_size"),
    ({"noise": -0.1}, "noise"),
    ({"steps": -2}, "steps"),
    ({"grad_clip": 0.0}, "grad_clip"),
    ({"clip_range": (1.0, -1.0)}, "clip_range"),
    ({"loop": "for"}, "loop"),
    ({"unroll": 0}, "unroll"),
])
def test_bad_settings_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    sampling.LangevinSampler(**kwargs)


def test_missing_energy_fn_is_explained():
  with pytest.raises(ValueError, match="energy_fn"):
    sampling.LangevinSampler()(tf.zeros([1, 2]))


def test_config_round_trip():
  s = sampling.LangevinSampler(steps=7, step_size=0.5, noise=0.0,
                               grad_clip=0.01, clip_range=(-1, 1), seed=4,
                               loop="partial", unroll=3)
  t = sampling.LangevinSampler.from_config(s.get_config())
  assert (t.steps, t.step_size, t.noise, t.grad_clip, t.clip_range, t.seed,
          t.loop, t.unroll) == (7, 0.5, 0.0, 0.01, (-1.0, 1.0), 4, "partial",
                                3)


# A quadratic energy E(x) = ½ Σ_j a_j x_j²: ∂E/∂x = a ⊙ x, so one SGLD step
# is x_{t+1} = (1 − α a) ⊙ x_t + σ ε_t, computed by hand below.
CURVATURE = np.array([0.5, 1.0, 2.0], np.float32)


def quadratic_energy(x):
  return 0.5 * tf.reduce_sum(CURVATURE * x * x, -1)


def hand_chain(x0, steps, alpha, sigma, seed, jit):
  """The SGLD recurrence by hand, with the noise a fresh
  SeedGenerator(seed) gives in the same order (drawn under XLA when the
  chain is: TensorFlow's RNG differs between XLA and the plain CPU)."""
  generator = keras.random.SeedGenerator(seed)

  @tf.function(jit_compile=jit)
  def draws():
    return tf.stack([keras.random.normal(x0.shape, seed=generator)
                     for _ in range(steps)])

  noise = draws().numpy() if steps else []
  x = x0.numpy()
  for eps in noise:
    x = (1 - alpha * CURVATURE) * x + sigma * eps
  return x


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("loop", ["while", "unrolled", "partial"])
def test_every_loop_form_gives_the_hand_computed_chain(loop, jit):
  # Blocks of 3: 7 steps are 2 blocks and 1 more, 2 steps no full block.
  x0 = tf.constant(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3))
  for steps in (0, 2, 7):
    want = hand_chain(x0, steps, 0.3, 0.1, seed=5, jit=jit)
    # The step count as a Python int (the train step) and as a run-time
    # tensor (the standalone sampler); a fresh sampler each time, so its
    # noise starts from the seed.
    new = lambda: sampling.LangevinSampler(steps, 0.3, 0.1, seed=5, loop=loop,
                                           unroll=3)
    s = new()
    fixed = tf.function(lambda v: s(v, energy_fn=quadratic_energy),
                        jit_compile=jit)(x0)
    at_run_time = sampling.compiled_sampler(new(), quadratic_energy, jit)(
        x0, tf.constant(steps))
    np.testing.assert_allclose(fixed, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(at_run_time, want, rtol=1e-6, atol=1e-6)


def _while_loops(loop, steps):
  """The number of while loops in the graph of a chain of the form `loop`."""
  s = sampling.LangevinSampler(7, 0.3, 0.0, loop=loop, unroll=3)
  fn = tf.function(lambda v, n: s(v, energy_fn=quadratic_energy, steps=n))
  graph = fn.get_concrete_function(tf.TensorSpec([4, 3]), steps).graph
  return sum(op.type in ("While", "StatelessWhile")
             for op in graph.get_operations())


def test_each_form_builds_the_graph_it_names():
  run_time = tf.TensorSpec([], tf.int32)
  assert _while_loops("while", 7) == 1
  assert _while_loops("unrolled", 7) == 0
  assert _while_loops("partial", 7) == 1  # 2 blocks in a loop, 1 written out.
  assert _while_loops("partial", run_time) == 2  # The blocks, the remainder.
  assert _while_loops("unrolled", run_time) == 2  # As "partial".


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")),
                    reason="checks FASTEST_LOOP's CPU rows")
def test_auto_picks_the_measured_form_for_the_device_and_xla():
  assert sampling.resolve_loop("partial") == "partial"
  for jit in (False, True):
    assert sampling.resolve_loop("auto", jit) == sampling.FASTEST_LOOP[
        ("CPU", jit)]
  # Without jit_compile it asks whether the graph being built is compiled.
  inside = {}
  for jit in (False, True):
    tf.function(lambda: inside.setdefault(jit, sampling._in_xla_context()),  # pylint: disable=protected-access
                jit_compile=jit).get_concrete_function()
  assert inside == {False: False, True: True}
