"""tools/benchmark.py's --mode=fit and --mode=sampler_forms (see its docstring).

Kept apart from benchmark.py so that each file stays one job: benchmark.py
parses the flags and times the parts on a synthetic feed; this module times
`fit` end to end, the way tools/reference/time_jem_reference.py times the reference, and
the sampler's loop forms.
"""

import json
import os
import statistics
import tempfile
import time

import numpy as np

# An iteration is "clean" when other processes used less than this share of
# the machine's CPU during it (run_ref_jem.py's CLEAN_OTHER_FRAC).
CLEAN_OTHER_FRAC = 0.05
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog",
                 "frog", "horse", "ship", "truck")


def machine_busy_s():
  """Machine-wide non-idle CPU seconds since boot, from /proc/stat."""
  try:
    with open("/proc/stat") as f:
      v = [int(t) for t in f.readline().split()[1:]]
  except OSError:
    return float("nan")
  # user nice system idle iowait irq softirq steal ...
  busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
  return busy / os.sysconf("SC_CLK_TCK")


def fake_cifar10(data_dir, train_examples, test_examples=256, seed=0):
  """Prepares fake CIFAR-10 in `data_dir` with TFDS' own CIFAR-10 builder.

  Random uint8 images and labels are written in CIFAR-10's binary format
  (a label byte, then 3,072 pixel bytes per image) and the builder's
  download step is pointed at them, so the prepared files (PNG-encoded
  TFRecords) are read and decoded as a real download's are. Reuses an
  earlier preparation of the same size.

  Returns:
    `data_dir`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder("cifar10", data_dir=data_dir)
  if builder.is_prepared():
    sizes = builder.info.splits
    if (sizes["train"].num_examples == train_examples
        and sizes["test"].num_examples == test_examples):
      return data_dir
    raise ValueError(f"{data_dir} holds a fake CIFAR-10 of another size; "
                     f"remove it or pass another --fake_data_dir.")
  rng = np.random.default_rng(seed)
  src = tempfile.mkdtemp(prefix="fake_cifar10_src_")
  folder = os.path.join(src, "cifar-10-batches-bin")
  os.makedirs(folder)
  with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
    f.write("\n".join(CIFAR10_NAMES) + "\n")

  def write(name, n):
    records = np.empty((n, 1 + 32 * 32 * 3), np.uint8)
    records[:, 0] = rng.integers(0, 10, n)
    records[:, 1:] = rng.integers(0, 256, (n, 32 * 32 * 3))
    records.tofile(os.path.join(folder, name))

  per_file = np.array_split(np.arange(train_examples), 5)
  for i, part in enumerate(per_file, 1):
    write(f"data_batch_{i}.bin", len(part))
  write("test_batch.bin", test_examples)
  original = tfds.download.DownloadManager.download_and_extract
  tfds.download.DownloadManager.download_and_extract = lambda self, url: src
  try:
    builder.download_and_prepare()
  finally:
    tfds.download.DownloadManager.download_and_extract = original
  return data_dir


class BatchEndStamps:
  """Wall, own-CPU and machine-busy stamps at the start of training and at
  each batch end; stops `fit` after `iterations` batches."""

  def __init__(self, iterations):
    import keras  # pylint: disable=g-import-not-at-top
    stamps = self

    class Callback(keras.callbacks.Callback):

      def on_train_begin(self, logs=None):
        stamps.stamp()

      def on_train_batch_end(self, batch, logs=None):
        # Reading the loss waits for the step, should it run asynchronously.
        float((logs or {}).get("loss", 0.0))
        stamps.stamp()
        if len(stamps.wall) - 1 >= iterations:
          self.model.stop_training = True

    self.callback = Callback()
    self.wall, self.cpu, self.busy = [], [], []

  def stamp(self):
    self.wall.append(time.perf_counter())
    self.cpu.append(time.process_time())
    self.busy.append(machine_busy_s())

  def summary(self, warmup):
    """run_ref_jem.py's statistics over the iterations after `warmup`."""
    wall, cpu, busy = (np.diff(v) for v in (self.wall, self.cpu, self.busy))
    ncpu = os.cpu_count() or 1
    other = np.maximum(0.0, busy - cpu) / (wall * ncpu)
    timed, other_t = wall[warmup:], other[warmup:]
    clean = timed[other_t < CLEAN_OTHER_FRAC]
    w0, w1 = self.wall[warmup], self.wall[-1]
    other_frac = max(0.0, (self.busy[-1] - self.busy[warmup])
                     - (self.cpu[-1] - self.cpu[warmup])) / ((w1 - w0) * ncpu)
    return {
        "iters_timed": len(timed),
        "s_per_iter_median": round(float(np.median(timed)), 5),
        "s_per_iter_min": round(float(timed.min()), 5),
        "s_per_iter_max": round(float(timed.max()), 5),
        "first_iter_s": round(float(wall[0]), 3),
        "own_cpu_s_per_iter_median": round(float(np.median(cpu[warmup:])), 5),
        "other_cpu_frac": round(other_frac, 3),
        "iters_clean": len(clean),
        "s_per_iter_median_clean": (round(float(np.median(clean)), 5)
                                    if len(clean) else None),
        "contended": other_frac > 0.10,
    }


def _input_cpu_s_per_batch(ds, batches):
  """CPU seconds the input pipeline takes per batch, run alone."""
  it = iter(ds)
  next(it)  # Builds the iterator, fills the shuffle buffer.
  start_cpu, start = time.process_time(), time.perf_counter()
  for _ in range(batches):
    next(it)
  return ((time.process_time() - start_cpu) / batches,
          (time.perf_counter() - start) / batches)


def matmul_gflops(dtype, n=2048, repeats=5):
  """This CPU's practical peak: GFLOP/s of a large matmul in `dtype`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a = tf.random.normal([n, n], dtype=tf.float32)
  a = tf.cast(a, dtype)
  f = tf.function(lambda m: tf.matmul(m, m))
  f(a).numpy()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    f(a).numpy()
    times.append(time.perf_counter() - start)
  return 2 * n**3 / min(times) / 1e9


def configure(flags):
  """Sets --mixed_precision and parses the config; returns whether the train
  step is compiled with XLA (--jit_compile, "auto" as ebmkit resolves it)."""
  import keras  # pylint: disable=g-import-not-at-top
  from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top
  from ebmkit.models import sampling  # pylint: disable=g-import-not-at-top
  if flags.mixed_precision:
    keras.mixed_precision.set_global_policy(flags.mixed_precision)
  gin_utils.parse(flags.gin_file, flags.gin_bindings)
  return {"auto": sampling.resolve_jit_compile("auto"), "true": True,
          "false": False}[flags.jit_compile]


def compiled_model(info, jit):
  """The configured model, compiled with Adam 1e-4 and its optimizer built."""
  import keras  # pylint: disable=g-import-not-at-top
  from ebmkit.training import experiment  # pylint: disable=g-import-not-at-top
  model = experiment.build_model(info)
  model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=jit)
  model.optimizer.build(model.trainable_variables)
  return model


def run(flags, forward_flops):
  """--mode=fit: `model.fit` end to end; prints a JSON line and a summary."""
  import gin  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ebmkit.data import pipeline as data
  from ebmkit.models import sampling
  jit = configure(flags)
  keras.utils.set_random_seed(0)
  batch = data.configured("batch_size", 64)
  iterations = flags.iterations + flags.warmup
  if data.configured_name() != "cifar10":
    raise SystemExit("--mode=fit fakes CIFAR-10: use a CIFAR-10 config "
                     "(e.g. --gin_file=jem_cifar10.gin).")
  data_dir = flags.fake_data_dir or os.path.join(tempfile.gettempdir(),
                                                 "ebmkit_bench_tfds")
  examples = max(flags.fake_examples, batch * (iterations + 2))
  fake_cifar10(data_dir, examples)
  with gin.unlock_config():
    gin.bind_parameter("load_dataset.data_dir", data_dir)
    gin.bind_parameter("load_dataset.download", False)
  ds, info = data.load_dataset(split="train", training=True, with_info=True)
  input_cpu, input_wall = _input_cpu_s_per_batch(ds, 20)
  if flags.feed == "synthetic":
    x, y = next(iter(ds))
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(iterations + 1)
  model = compiled_model(info, jit)
  stamps = BatchEndStamps(iterations)
  model.fit(ds, epochs=1, callbacks=[stamps.callback], verbose=0)
  if len(stamps.wall) - 1 < iterations:
    raise SystemExit(f"fit stopped after {len(stamps.wall) - 1} iterations "
                     f"of {iterations}.")
  result = stamps.summary(flags.warmup)
  eta = model.sampler.steps
  flops = forward_flops(model, info.image_shape) * batch * (2 * eta + 6)
  precision = flags.mixed_precision or "float32"
  compute = tf.bfloat16 if "bfloat16" in precision else tf.float32
  peak = matmul_gflops(compute)
  result.update({
      "mode": "fit", "feed": flags.feed, "precision": precision,
      "config": flags.gin_file, "bindings": flags.gin_bindings,
      "jit_compile": jit,
      "sampler_loop": sampling.resolve_loop(model.sampler.loop, jit),
      "batch_size": batch, "sgld_steps": eta,
      "buffer_size": model.replay_buffer.size,
      "fake_train_examples": examples,
      "input_cpu_s_per_batch_alone": round(input_cpu, 5),
      "input_wall_s_per_batch_alone": round(input_wall, 5),
      "model_gflops_per_iteration": round(flops / 1e9, 2),
      "achieved_gflops": round(flops / result["s_per_iter_median"] / 1e9, 1),
      "matmul_peak_gflops": round(peak, 1),
      "cpu_count": os.cpu_count(),
  })
  result["fraction_of_matmul_peak"] = round(result["achieved_gflops"] / peak,
                                            3)
  _emit(flags, result)
  if result["contended"]:
    print(f"# WARNING: other processes used "
          f"{100 * result['other_cpu_frac']:.0f}% of the machine's CPU during "
          f"the timed window; the wall-time figures are not clean")
  print(f"ebmkit_s_per_iter={result['s_per_iter_median']:.6f} "
        f"precision={precision} feed={flags.feed} "
        f"other_cpu_frac={result['other_cpu_frac']:.3f}", flush=True)


def sampler_forms(flags):
  """--mode=sampler_forms: η steps of the model's chain in each loop form."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ebmkit.data import pipeline as data
  from ebmkit.training import experiment
  from ebmkit.models import sampling
  configure(flags)  # Its XLA choice is not used: both are timed below.
  info = data.dataset_info(data.configured_name())
  batch = data.configured("batch_size", 64)
  model = experiment.build_model(info)
  eta, unroll = model.sampler.steps, model.sampler.unroll
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(-1, 1, (batch,) + info.image_shape), tf.float32)
  jits = {"auto": (False, True), "true": (True,), "false": (False,)}[
      flags.jit_compile]
  rows = []
  for jit in jits:
    for loop in ("while", "partial", "unrolled"):
      # The same sampler settings and seed in every form.
      sampler = sampling.LangevinSampler.from_config(
          {**model.sampler.get_config(), "loop": loop, "name": f"s_{loop}"})
      # The step count as a Python int, as in the train step.
      chain = tf.function(
          lambda v, s=sampler: s(v, energy_fn=sampling.chain_energy(model)),
          jit_compile=jit)
      start = time.perf_counter()
      chain(x).numpy()
      first = time.perf_counter() - start
      times = []
      for _ in range(flags.iterations):
        start = time.perf_counter()
        chain(x).numpy()
        times.append(time.perf_counter() - start)
      median = statistics.median(times)
      rows.append({"xla": jit, "loop": loop, "s_per_chain": round(median, 4),
                   "s_per_step": round(median / max(eta, 1), 5),
                   "min": round(min(times), 4), "max": round(max(times), 4),
                   "first_call_s": round(first, 2)})
  best = {}
  for row in rows:
    if row["xla"] not in best or row["s_per_chain"] < best[row["xla"]][1]:
      best[row["xla"]] = (row["loop"], row["s_per_chain"])
  device = "accelerator" if tf.config.list_physical_devices("GPU") else "CPU"
  print(f"\n{device}, batch {batch}, η = {eta} steps, partial: blocks of "
        f"{unroll}, median of {flags.iterations} chains "
        f"({flags.mixed_precision or 'float32'})")
  print("| XLA | loop | s / chain | s / step | min–max | first call (compile) s |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    mark = "**" if best[r["xla"]][0] == r["loop"] else ""
    print(f"| {'yes' if r['xla'] else 'no'} | {r['loop']} | "
          f"{mark}{r['s_per_chain']}{mark} | {r['s_per_step']} | "
          f"{r['min']}–{r['max']} | {r['first_call_s']} |")
  for jit, (loop, _) in best.items():
    current = sampling.FASTEST_LOOP[(device, jit)]
    print(f"fastest with XLA {'on' if jit else 'off'}: {loop} "
          f"(sampling.FASTEST_LOOP has {current})")
  _emit(flags, {"mode": "sampler_forms", "device": device, "batch_size": batch,
                "sgld_steps": eta, "unroll": unroll,
                "precision": flags.mixed_precision or "float32",
                "config": flags.gin_file, "bindings": flags.gin_bindings,
                "rows": rows,
                "fastest": {("xla" if k else "plain"): v[0]
                            for k, v in best.items()}})


def _emit(flags, result):
  line = json.dumps(result)
  print(line)
  if flags.json_out:
    with open(flags.json_out, "a") as f:
      f.write(line + "\n")
