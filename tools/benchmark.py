"""Benchmarks of a config's training iteration: its parts, `fit` end to end,
and the sampler's loop forms.

  python tools/benchmark.py --gin_file=jem_cifar10.gin \\
      --gin_bindings='DEPTH = 10' --gin_bindings='WIDTH = 2' \\
      --gin_bindings='BATCH_SIZE = 32' --gin_bindings='BUFFER_SIZE = 1000' \\
      [--mode=parts|fit|sampler_forms] \\
      [--jit_compile=auto|true|false] [--mixed_precision=mixed_bfloat16] \\
      [--iterations=20] [--warmup=3] [--json_out=FILE]

--mode=fit times `model.fit` on ebmkit's own input pipeline (`load_dataset`
with the config's augmentation and noise) the way tools/reference/time_jem_reference.py
times the reference: the differences between consecutive batch-end stamps
(the first from the start of training), the median after --warmup, and the
share of the machine's CPU other processes used meanwhile. The data are fake
CIFAR-10 images prepared on disk by TFDS' own CIFAR-10 builder
(`fake_cifar10`), so they are read, decoded, cached, shuffled, augmented and
batched as real ones are. --feed=synthetic feeds `fit` one fixed batch
instead (the input pipeline's share is the difference). Output: a JSON line,
then `ebmkit_s_per_iter=<median> ...` (compare_reference.sh reads it).

--mode=sampler_forms times η SGLD steps of the model's chain on a batch in
each `LangevinSampler.loop` form, with and without XLA, and prints a table
and a JSON line.

--mode=ops profiles one SGLD chain of the configured model (η steps on a
batch of random images, after a compiling call) with TensorFlow's profiler
and prints where an SGLD step's time goes: milliseconds per step by op type
(oneDNN convolutions, activations, their gradients, pads, random numbers),
summed over TensorFlow's executor threads, so the column can exceed the
step's wall time when ops overlap; then the --top slowest ops by name, and a
JSON line.

--mode=parts (the default) feeds the configured model random images of the
configured data set's shape (no input pipeline in the measurement) and
reports, as one JSON line:
  - seconds per training iteration: median, min, max of --iterations after
    --warmup untimed ones (the first compiles);
  - SGLD steps per second of the standalone sampler (a batch of chains);
  - the parts, timed alone the same way: one SGLD step (forward and backward
    to the input for a batch) and one parameter update (the iteration with
    η = 0 SGLD steps: buffer draw and write, forward and backward on data and
    samples, optimizer); efficiency = (η·t_sgld_step + t_update) / t_iteration;
  - peak memory (GPU allocator peak on a GPU; process peak RSS on the CPU);
  - model FLOPs per iteration (TensorFlow's profiler count of one forward
    pass × (2η + 6): an SGLD step is a forward and an input-gradient pass,
    the update a forward and a backward over data and samples, twice the
    batch) and, on a GPU, the achieved fraction of --peak_tflops.
"""

import json
import os
import resource
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

flags.DEFINE_enum("mode", "parts", ["parts", "fit", "sampler_forms", "ops"],
                  "What to time (see the module docstring).")
flags.DEFINE_enum("feed", "pipeline", ["pipeline", "synthetic"],
                  "--mode=fit: ebmkit's input pipeline on fake CIFAR-10 "
                  "files, or one fixed batch.")
flags.DEFINE_string("fake_data_dir", None, "--mode=fit: TFDS folder for the "
                    "fake CIFAR-10 (default: $TMPDIR/ebmkit_bench_tfds).")
flags.DEFINE_integer("fake_examples", 2048, "--mode=fit: fake training "
                     "images (raised to fit --iterations + --warmup + 2 "
                     "batches in one epoch, as the reference harness does).")
flags.DEFINE_multi_string("gin_file", ["jem_digits.gin"], "Config(s).")
flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA for the train step (auto: on a GPU only).")
flags.DEFINE_string("mixed_precision", None, "e.g. mixed_bfloat16.")
flags.DEFINE_integer("iterations", 20, "Timed repetitions of each measure.")
flags.DEFINE_integer("warmup", 3, "Untimed repetitions first (compilation).")
flags.DEFINE_float("peak_tflops", 0.0, "The device's peak dense TFLOP/s in "
                   "the benchmark's precision (for the achieved fraction).")
flags.DEFINE_integer("top", 15, "--mode=ops: ops listed by name.")
flags.DEFINE_string("json_out", None, "Also append the JSON line to a file.")
FLAGS = flags.FLAGS


def _time(fn, iterations, warmup):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(iterations):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def _summary(times):
  return {"median": round(statistics.median(times), 5),
          "min": round(min(times), 5), "max": round(max(times), 5)}


def forward_flops(model, example_shape):
  """FLOPs of one forward pass of the backbone for one example."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import model_analyzer  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import option_builder  # pylint: disable=g-import-not-at-top
  fn = tf.function(lambda x: model.backbone(x, training=False))
  graph = fn.get_concrete_function(
      tf.TensorSpec((1,) + tuple(example_shape), tf.float32)).graph
  options = option_builder.ProfileOptionBuilder(
      option_builder.ProfileOptionBuilder.float_operation()).with_empty_output(
      ).build()
  return model_analyzer.profile(graph, options=options).total_float_ops


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.mode == "fit":
    import fit_benchmark  # pylint: disable=g-import-not-at-top
    return fit_benchmark.run(FLAGS, forward_flops)
  if FLAGS.mode == "sampler_forms":
    import fit_benchmark  # pylint: disable=g-import-not-at-top
    return fit_benchmark.sampler_forms(FLAGS)
  if FLAGS.mode == "ops":
    return ops()
  return parts()


def _configured():
  """Sets --mixed_precision, parses the config and returns (data set info,
  batch size, whether the train step is compiled with XLA)."""
  import fit_benchmark  # pylint: disable=g-import-not-at-top
  from ebmkit.data import pipeline as data  # pylint: disable=g-import-not-at-top
  jit = fit_benchmark.configure(FLAGS)
  return (data.dataset_info(data.configured_name()),
          data.configured("batch_size", 64), jit)


def ops():
  """--mode=ops: an SGLD step's time by op type, from TensorFlow's profiler."""
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit(f"--mode=ops reads the profiler's XPlane files through "
                     f"tensorflow.tsl.profiler.protobuf, which this "
                     f"TensorFlow lacks ({e}).") from e
  import numpy as np  # pylint: disable=g-import-not-at-top
  import fit_benchmark  # pylint: disable=g-import-not-at-top
  info, batch, jit = _configured()
  model = fit_benchmark.compiled_model(info, jit)
  x = tf.constant(np.random.default_rng(0).uniform(
      -1, 1, (batch,) + info.image_shape), tf.float32)
  eta = model.sampler.steps
  chain = tf.function(lambda v: model.sampler(v, energy_fn=model.energy),
                      jit_compile=jit)
  _time(lambda: chain(x).numpy(), 1, FLAGS.warmup)
  n = FLAGS.iterations
  space = xplane_pb2.XSpace()
  with tempfile.TemporaryDirectory(prefix="ebmkit_ops_") as logdir:
    tf.profiler.experimental.start(logdir)
    wall = _time(lambda: chain(x).numpy(), n, 0)
    tf.profiler.experimental.stop()
    with open(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0],
              "rb") as f:
      space.ParseFromString(f.read())
  by_type, by_name = collections.Counter(), collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if not line.name.startswith("tf_Compute"):
        continue  # Executor threads run the ops; other lines are wrappers.
      for event in line.events:
        name = names.get(event.metadata_id, "")
        if ":" not in name or "::" in name:
          continue  # Not an op ("name:Type"), e.g. ExecutorState::Process.
        ms = event.duration_ps / 1e9 / (n * eta)
        by_type[name.rsplit(":", 1)[1]] += ms
        by_name[name.split("/while/")[-1]] += ms
  by_type = [(op, ms) for op, ms in by_type.most_common() if ms >= 0.01]
  step_ms = 1e3 * statistics.median(wall) / eta
  print(f"one SGLD step: {step_ms:.2f} ms wall (median of {n} chains of "
        f"{eta} steps, under the profiler); ms per step by op type, summed "
        f"over executor threads:")
  for op, ms in by_type:
    print(f"  {ms:8.3f}  {op}")
  print(f"the {FLAGS.top} slowest ops by name:")
  for op, ms in by_name.most_common(FLAGS.top):
    print(f"  {ms:8.3f}  {op}")
  result = {"mode": "ops", "config": FLAGS.gin_file,
            "bindings": FLAGS.gin_bindings,
            "mixed_precision": FLAGS.mixed_precision, "jit_compile": jit,
            "s_per_sgld_step": round(step_ms / 1e3, 5),
            "ms_per_step_by_op_type": {op: round(ms, 3)
                                       for op, ms in by_type}}
  print(json.dumps(result))
  if FLAGS.json_out:
    with open(FLAGS.json_out, "a") as f:
      f.write(json.dumps(result) + "\n")


def parts():
  """--mode=parts: the iteration and its parts on a synthetic feed."""
  import gin  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import fit_benchmark  # pylint: disable=g-import-not-at-top
  from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top
  info, batch, jit = _configured()
  gpu = bool(tf.config.list_physical_devices("GPU"))
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(-1, 1, (batch,) + info.image_shape), tf.float32)
  y = tf.constant(rng.integers(0, info.num_classes, batch), tf.int32)
  n, w = FLAGS.iterations, FLAGS.warmup

  def make_model(steps=None):
    if steps is not None:
      gin.clear_config()
      gin_utils.parse(FLAGS.gin_file, FLAGS.gin_bindings + [
          f"SGLD_STEPS = {steps}", f"ebmkit.LangevinSampler.steps = {steps}"])
    return fit_benchmark.compiled_model(info, jit)

  model = make_model()
  eta = model.sampler.steps
  step = lambda m: float(m.train_on_batch(x, y, return_dict=True)["loss"])
  t_iteration = _time(lambda: step(model), n, w)

  # One SGLD step, alone: the gradient of the energy w.r.t. a batch of inputs.
  @tf.function(jit_compile=jit)
  def sgld_step(v):
    return model.sampler(v, energy_fn=model.energy, steps=1)
  t_sgld = _time(lambda: sgld_step(x).numpy(), n, w)

  # Standalone sampling: η steps for a batch of chains.
  t_sample = _time(lambda: model.sample(batch, steps=eta,
                                        jit_compile=jit).numpy(), n, w)

  # The update alone: the same iteration with η = 0.
  update_model = make_model(steps=0)
  t_update = _time(lambda: step(update_model), n, w)

  median = statistics.median
  flops_fwd = forward_flops(model, info.image_shape)
  flops = flops_fwd * batch * (2 * eta + 6)
  if gpu:
    peak_memory = tf.config.experimental.get_memory_info("GPU:0")["peak"]
  else:
    peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  result = {
      "config": FLAGS.gin_file, "bindings": FLAGS.gin_bindings,
      "jit_compile": jit, "mixed_precision": FLAGS.mixed_precision,
      "batch_size": batch, "sgld_steps": eta,
      "devices": sorted({d.device_type for d in
                         tf.config.list_physical_devices()}),
      "s_per_iteration": _summary(t_iteration),
      "s_per_sgld_step": _summary(t_sgld),
      "s_per_update": _summary(t_update),
      "sampler_sgld_steps_per_s": round(eta / median(t_sample), 2),
      "efficiency": round((eta * median(t_sgld) + median(t_update))
                          / median(t_iteration), 3),
      "peak_memory_mb": round(peak_memory / 2**20, 1),
      "peak_memory_kind": "GPU allocator peak" if gpu else "process peak RSS",
      "model_gflops_per_iteration": round(flops / 1e9, 2),
      "achieved_tflops": round(flops / median(t_iteration) / 1e12, 4),
  }
  if gpu and FLAGS.peak_tflops:
    result["fraction_of_peak"] = round(
        result["achieved_tflops"] / FLAGS.peak_tflops, 4)
  line = json.dumps(result)
  print(line)
  if FLAGS.json_out:
    with open(FLAGS.json_out, "a") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  app.run(main)
