"""Fast paths give the plain paths' numbers, and nothing retraces."""

import collections
import json
import math
import os
import resource
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from ebmkit.data import pipeline as data
from ebmkit.models import buffer
from ebmkit.models import energy_model as models
from ebmkit.models import sampling
from ebmkit.networks import backbones


def small_jem(seed=0, noise=0.0, reinit_prob=0.0):
  keras.utils.set_random_seed(seed)
  model = models.EnergyModel(
      backbones.small_convnet(10, widths=(8, 16)),
      replay_buffer=buffer.ReplayBuffer(64, reinit_prob=reinit_prob, seed=1),
      sampler=sampling.LangevinSampler(5, 1.0, noise, seed=2))
  model.build((None, 8, 8, 1))
  return model


def count_calls(counts, name, fn):
  """`fn`, counting its Python calls: a step or a sampler inside a
  tf.function runs its Python code only when TensorFlow traces it."""
  def counted(*args, **kwargs):
    counts[name] += 1
    return fn(*args, **kwargs)
  return counted


@pytest.mark.parametrize("jit_compile", [False, True])
def test_train_and_test_steps_trace_once_across_steps_and_epochs(jit_compile):
  model = small_jem(noise=0.01, reinit_prob=0.05)
  traces = collections.Counter()
  model.train_step = count_calls(traces, "train_step", model.train_step)
  model.test_step = count_calls(traces, "test_step", model.test_step)
  model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
  # With its variables made up front (as ebmkit.train does), the optimizer
  # creates none inside the first trace, which would make TensorFlow trace
  # the step a second time.
  model.optimizer.build(model.trainable_variables)
  train = data.load_dataset(split="train[:256]", batch_size=32)
  test = data.load_dataset(split="test", batch_size=120, training=False)
  model.fit(train, epochs=3, validation_data=test, verbose=0)  # 24 steps.
  model.evaluate(test, verbose=0)
  model.fit(train, epochs=1, verbose=0)  # A later fit call reuses it too.
  assert int(model.optimizer.iterations.numpy()) == 32
  assert traces["train_step"] == 1
  assert traces["test_step"] == 1
  model.sampler.call = count_calls(traces, "sample", model.sampler.call)
  for steps in (3, 7, 11):
    model.sample(16, steps=steps)
  assert traces["sample"] == 1


def test_xla_train_step_matches_the_plain_one():
  # Noise-free SGLD and ρ = 0 make the step deterministic, so the XLA and the
  # plain graph must agree to float tolerance (TensorFlow's RNG differs
  # between them, hence no noise here).
  x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32)
  y = np.arange(16) % 10
  results = []
  for jit in (False, True):
    model = small_jem()
    model.replay_buffer.samples.assign(
        np.full(model.replay_buffer.samples.shape, 0.1, np.float32))
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
    logs = model.train_on_batch(x, y, return_dict=True)
    results.append((logs, [w.numpy() for w in model.trainable_weights]))
  (plain_logs, plain_w), (xla_logs, xla_w) = results
  for key in plain_logs:
    np.testing.assert_allclose(xla_logs[key], plain_logs[key], rtol=1e-4,
                               atol=1e-5)
  for a, b in zip(plain_w, xla_w):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bfloat16_energies_are_within_tolerance_of_float32():
  x = np.random.default_rng(1).uniform(-1, 1, (32, 8, 8, 1)).astype(np.float32)
  reference = small_jem()
  try:
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    mixed = small_jem()
    mixed.set_weights(reference.get_weights())
    out, ref = mixed(x), reference(x)
    # Energies and log p(y|x) come out float32.
    assert out["energy"].dtype == tf.float32
    assert mixed.backbone.layers[0].compute_dtype == "bfloat16"
    # bfloat16 keeps 8 bits of mantissa: ~0.4% per operation. Stated
    # tolerance: 2% of the energy's scale.
    scale = np.abs(ref["energy"]).mean()
    np.testing.assert_allclose(out["energy"], ref["energy"], atol=0.02 * scale)
    np.testing.assert_allclose(out["log_pyx"], ref["log_pyx"], atol=0.05)
    mixed.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    logs = mixed.train_on_batch(x, np.arange(32) % 10, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert mixed.trainable_weights[0].dtype == "float32"
  finally:
    keras.mixed_precision.set_global_policy("float32")


def least_total(summary, n):
  """The least total time n timings with this median and minimum can take:
  the ⌈n/2⌉ largest are at least the median, the others at least the min."""
  return math.ceil(n / 2) * summary["median"] + (n // 2) * summary["min"]


@pytest.mark.slow
def test_benchmark_tool_reports_every_figure(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / "bench.jsonl"
  eta, n = 10, 3
  started = time.perf_counter()
  proc = subprocess.run(
      [sys.executable, os.path.join(repo, "tools", "benchmark.py"),
       "--gin_file=jem_digits.gin", "--gin_bindings=BUFFER_SIZE = 100",
       f"--gin_bindings=SGLD_STEPS = {eta}", f"--iterations={n}",
       "--warmup=1", f"--json_out={out}"], capture_output=True, text=True,
      timeout=300)
  wall = time.perf_counter() - started
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text().splitlines()[-1])
  assert result["sgld_steps"] == eta and result["batch_size"] == 64
  assert result["config"] == ["jem_digits.gin"]
  summaries = {key: result[key] for key in
               ("s_per_iteration", "s_per_sgld_step", "s_per_update")}
  for key, summary in summaries.items():
    assert set(summary) == {"min", "median", "max"}, key
    for stat, value in summary.items():
      assert np.isfinite(value) and value > 0, (key, stat)
  for key in ("sampler_sgld_steps_per_s", "efficiency", "peak_memory_mb",
              "model_gflops_per_iteration", "achieved_tflops"):
    assert np.isfinite(result[key]) and result[key] > 0, key
  # Every timed run lies inside the benchmark process's lifetime, so their
  # least total is below the wall time the test measured around it: a figure
  # in the wrong unit (ms for s) or a total reported per run fails this.
  timed = sum(least_total(s, n) for s in summaries.values())
  timed += math.ceil(n / 2) * eta / result["sampler_sgld_steps_per_s"]
  assert timed < wall
  # The iteration does everything the update does (buffer draw and write,
  # forward and backward, optimizer) plus η = 10 SGLD steps: its fastest run
  # is not faster than the update's fastest (the two swapped would fail).
  assert summaries["s_per_iteration"]["min"] > summaries["s_per_update"]["min"]
  # The derived figures follow from the reported ones, as documented
  # (tolerances: the rounding of the reported figures).
  med = {k: s["median"] for k, s in summaries.items()}
  efficiency = (eta * med["s_per_sgld_step"] + med["s_per_update"]) / med[
      "s_per_iteration"]
  assert result["efficiency"] == pytest.approx(efficiency, rel=0.01,
                                               abs=1e-3)
  assert result["achieved_tflops"] == pytest.approx(
      result["model_gflops_per_iteration"] / 1e3 / med["s_per_iteration"],
      rel=0.01, abs=1e-4)
  if result["peak_memory_kind"] == "process peak RSS":
    # Importing TensorFlow alone takes hundreds of MB; the benchmark's peak
    # RSS is at most the largest of this process's finished children's.
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert 100 < result["peak_memory_mb"] <= children_mb + 0.1
  # The FLOP count of the small convnet by hand: conv0 8·8·9·1·32 MACs,
  # conv1 4·4·9·32·64, conv2 2·2·9·64·128, logits 128·10, ×2 FLOPs, plus
  # the profiler's bias adds and pooling: within 5% of the MAC count × 2,
  # × (2η + 6) passes of the batch of 64.
  macs = 8 * 8 * 9 * 32 + 4 * 4 * 9 * 32 * 64 + 2 * 2 * 9 * 64 * 128 + 1280
  expected = 2 * macs * 64 * (2 * eta + 6) / 1e9
  assert abs(result["model_gflops_per_iteration"] - expected) < 0.05 * expected


@pytest.mark.slow
def test_benchmark_ops_mode_accounts_for_the_step_by_op_type(tmp_path):
  """--mode=ops: the SGLD step's convolutions and their input gradients are
  listed by oneDNN/TensorFlow op type, and the per-step times add up: at
  least a third of the step's wall time (the ops are most of a step), at
  most the 2 executor threads' worth of it (plus 10% for the profiler)."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / "ops.jsonl"
  proc = subprocess.run(
      [sys.executable, os.path.join(repo, "tools", "benchmark.py"),
       "--mode=ops", "--gin_file=jem_digits.gin",
       "--gin_bindings=SGLD_STEPS = 5", "--iterations=2", "--warmup=1",
       f"--json_out={out}"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text().splitlines()[-1])
  by_type = result["ms_per_step_by_op_type"]
  assert any("Conv2DBackpropInput" in op for op in by_type), by_type
  assert any("Conv2D" in op and "Backprop" not in op for op in by_type), by_type
  assert not any("::" in op for op in by_type), by_type  # Not wrappers.
  step_ms = 1e3 * result["s_per_sgld_step"]
  threads = max(2, os.cpu_count() or 2)
  assert step_ms / 3 < sum(by_type.values()) < threads * step_ms * 1.1
