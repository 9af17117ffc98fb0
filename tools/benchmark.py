"""Seconds per training iteration of a shipped config, on synthetic data.

  python tools/benchmark.py --gin_file=jem_digits.gin [--gin_bindings=...] \\
      [--jit_compile=auto|true|false] [--iterations=20] [--warmup=3]

Builds the configured model for the configured data set's image shape, feeds
it random images in [-1, 1] with random labels (no input pipeline in the
measurement) and reports the median, min and max of `--iterations` timed
training steps after `--warmup` untimed ones (the first compiles).
"""

import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

flags.DEFINE_multi_string("gin_file", ["jem_digits.gin"], "Config(s).")
flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA for the train step (auto: on a GPU only).")
flags.DEFINE_integer("iterations", 20, "Timed training steps.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ebmkit import data, gin_utils, sampling, train  # pylint: disable=g-import-not-at-top
  gin_utils.parse(FLAGS.gin_file, FLAGS.gin_bindings)
  info = data.dataset_info(data.configured_name())
  batch = data.configured("batch_size", 64)
  model = train.build_model(info)
  jit = {"auto": sampling.resolve_jit_compile("auto"), "true": True,
         "false": False}[FLAGS.jit_compile]
  model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=jit)
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(-1, 1, (batch,) + info.image_shape), tf.float32)
  y = tf.constant(rng.integers(0, info.num_classes, batch), tf.int32)
  for _ in range(FLAGS.warmup):
    model.train_on_batch(x, y)
  times = []
  for _ in range(FLAGS.iterations):
    start = time.perf_counter()
    logs = model.train_on_batch(x, y, return_dict=True)
    float(logs["loss"])  # Waits for the step to finish.
    times.append(time.perf_counter() - start)
  print(json.dumps({
      "config": FLAGS.gin_file, "bindings": FLAGS.gin_bindings,
      "jit_compile": jit, "batch_size": batch,
      "sgld_steps": model.sampler.steps,
      "devices": [d.device_type for d in tf.config.list_physical_devices()],
      "s_per_iteration_median": round(statistics.median(times), 4),
      "s_per_iteration_min": round(min(times), 4),
      "s_per_iteration_max": round(max(times), 4),
  }))


if __name__ == "__main__":
  app.run(main)
