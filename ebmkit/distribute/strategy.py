"""Training on several devices and machines with `tf.distribute`: picking
the strategy (`train.distribute`), the checks that the global batch and the
replay buffer split into the replicas, synchronised batch norm, and who
writes what when several workers train (only the chief writes the workdir).

The per-replica state itself (buffer shards, per-replica random streams, the
loss scale) is in `ebmkit.replicas`; the loop that runs the train step under
`MultiWorkerMirroredStrategy` is in `ebmkit.worker_loop`.
"""

import contextlib
import json
import os
import shutil

import keras
import tensorflow as tf

from ebmkit import compat
from ebmkit import workdir as workdir_lib
from ebmkit.models import energy_model as models

STRATEGIES = ("mirrored", "multi_worker", "tpu")


class WorkerFailedError(RuntimeError):
  """Another worker of a multi-worker run stopped or cannot be reached."""


# "mirrored" on a host without GPUs: the CPU split into this many logical
# devices (a simulation of several devices, for tests and trials).
CPU_REPLICAS = 2


def split_cpu(devices):
  """Splits the CPU into `devices` logical devices, if TensorFlow has not
  set up its devices yet (else leaves them as they are). Returns how many
  logical CPU devices there are."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
  except RuntimeError:  # Devices are set up already.
    pass
  return len(tf.config.list_logical_devices("CPU"))


def strategy_for(distribute, worker_timeout_s=None):
  """The `tf.distribute.Strategy` that `train.distribute` names.

  Args:
    distribute: None (no strategy: one device), "mirrored" (every local
      GPU; without one, the CPU split into `CPU_REPLICAS` logical devices), "multi_worker" (one process per
      host, the cluster in $TF_CONFIG), "tpu" (TPUStrategy on the TPU named
      by $TPU_NAME, or a local one), or a `tf.distribute.Strategy`.
    worker_timeout_s: "multi_worker": seconds a collective may wait for the
      other workers before the run fails (None: TensorFlow's default, no
      limit; its health check still notices a lost worker).

  Returns:
    The strategy, or None for None.

  Raises:
    ValueError: an unknown name, or "multi_worker" without $TF_CONFIG.
  """
  if distribute is None or isinstance(distribute, tf.distribute.Strategy):
    return distribute
  if distribute not in _MADE:
    _MADE[distribute] = _make(distribute, worker_timeout_s)
  return _MADE[distribute]


# One strategy per name and process: TensorFlow sets up its devices and
# collectives once.
_MADE = {}


def prepare(distribute, worker_timeout_s=None):
  """Makes the strategy `distribute` names now, before anything starts
  TensorFlow: a multi-worker strategy and the CPU's logical devices can only
  be set up first, and gin makes `train`'s optimizer (which starts
  TensorFlow) before `train` runs. The command line calls it; from Python,
  call it (or pass a strategy object) before building anything.

  Returns:
    The strategy (`strategy_for`).
  """
  return strategy_for(distribute, worker_timeout_s)


def _make(distribute, worker_timeout_s):
  """A new strategy for a name of `strategy_for`."""
  if distribute == "mirrored":
    if not tf.config.list_physical_devices("GPU"):
      split_cpu(CPU_REPLICAS)
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices(
        "CPU"))]
    return tf.distribute.MirroredStrategy(devices)
  if distribute == "multi_worker":
    if not os.environ.get("TF_CONFIG"):
      raise ValueError(
          "train.distribute='multi_worker' reads the cluster from $TF_CONFIG, "
          "which is not set: on each host set TF_CONFIG='{\"cluster\": "
          "{\"worker\": [\"host1:port\", \"host2:port\"]}, \"task\": "
          "{\"type\": \"worker\", \"index\": <this host's index>}}' (README, "
          "\"Many devices and machines\").")
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=worker_timeout_s)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=options)
  if distribute == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=os.environ.get("TPU_NAME", "local"))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"train.distribute must be None, a tf.distribute.Strategy "
                   f"or one of {', '.join(repr(s) for s in STRATEGIES)}, got "
                   f"{distribute!r}.")


def is_multi_worker(strategy):
  """Whether `strategy` spans several worker processes."""
  return bool(strategy is not None and getattr(
      strategy.extended, "_in_multi_worker_mode", lambda: False)())


def task():
  """(task type, index) of this process in $TF_CONFIG; ("worker", 0)
  without one."""
  config = json.loads(os.environ.get("TF_CONFIG") or "{}")
  info = config.get("task", {})
  return info.get("type", "worker"), int(info.get("index", 0))


def is_chief(strategy):
  """Whether this process writes the workdir: the only process, or the
  chief of a multi-worker run (task "chief", or worker 0 without one).

  Args:
    strategy: a strategy, None, or a `strategy_for` name.
  """
  if not (strategy == "multi_worker" if isinstance(strategy, str)
          else is_multi_worker(strategy)):
    return True
  task_type, index = task()
  config = json.loads(os.environ.get("TF_CONFIG") or "{}")
  has_chief = "chief" in config.get("cluster", {})
  return task_type == "chief" or (not has_chief and task_type == "worker"
                                  and index == 0)


def write_dir(workdir, strategy):
  """Where this process writes: the workdir (the chief), else the worker's
  scratch folder `<workdir>/workers/<type>_<index>` (its checkpoints, logs
  and grids, which tf.distribute has every worker write)."""
  if is_chief(strategy):
    return workdir
  task_type, index = task()
  return workdir_lib.path(workdir, workdir_lib.WORKERS,
                          f"{task_type}_{index}")


def barrier(strategy):
  """Waits until every worker gets here (a collective all-reduce)."""
  if is_multi_worker(strategy):
    ones = strategy.run(lambda: tf.constant(1.0))
    strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)


@contextlib.contextmanager
def scope(distribute, worker_timeout_s=None):
  """Makes the strategy `distribute` names (`strategy_for`) and enters its
  scope; yields the strategy (None: no strategy, no scope)."""
  strategy = strategy_for(distribute, worker_timeout_s)
  if strategy is None:
    yield None
    return
  with strategy.scope():
    yield strategy


def check_split(strategy, train_ds, model):
  """Fails before training when the global batch or the replay buffer does
  not divide into the replicas.

  Args:
    strategy: the strategy, or None.
    train_ds: the training data set (global batches).
    model: the `EnergyModel`.

  Raises:
    ValueError: with what to change.
  """
  replicas = 1 if strategy is None else strategy.num_replicas_in_sync
  if replicas == 1:
    return
  if not model.trains_distributed:
    # A GAN: its train step does not scale its losses for summed replica
    # gradients, and nothing tests it under a strategy.
    raise ValueError(
        f"train.distribute trains EnergyModels (JEM, the factored model, "
        f"IGEBM); a {type(model).__name__} trains on one device: remove the "
        f"train.distribute binding.")
  batch_size = models.split_images(train_ds.element_spec[0])[0].shape[0]
  if batch_size is not None and batch_size % replicas:
    raise ValueError(
        f"The global batch ({batch_size}, BATCH_SIZE) is split into "
        f"{replicas} equal per-replica batches, but {replicas} does not "
        f"divide it: make BATCH_SIZE a multiple of {replicas}.")
  buf = model.replay_buffer
  if model.draws_samples and buf.slice_size % replicas:
    classes = buf.num_classes or 1
    raise ValueError(
        f"The replay buffer ({buf.size} samples"
        + (f", {buf.slice_size} per class" if buf.class_conditional else "")
        + f") is split into {replicas} equal per-replica buffers, but "
        f"{replicas} does not divide it: make BUFFER_SIZE a multiple of "
        f"{replicas * classes}.")


def mirror_chief(strategy, chief_workdir, workdir):
  """At the start of a multi-worker run, copies the chief's checkpoints and
  recoveries into a worker's scratch `workdir`, so that every worker
  restores the same state and rolls back alike. Every worker calls it
  (after the chief has set aside or cleaned its checkpoints, before it
  writes new ones): it waits for all of them before and after the copy."""
  if not is_multi_worker(strategy):
    return
  barrier(strategy)
  if workdir != chief_workdir:
    mine = workdir_lib.checkpoints_dir(workdir)
    shutil.rmtree(mine, ignore_errors=True)
    theirs = workdir_lib.checkpoints_dir(chief_workdir)
    if os.path.isdir(theirs):
      shutil.copytree(theirs, mine)
    for name in (workdir_lib.RECOVERIES,):
      source = workdir_lib.path(chief_workdir, name)
      if os.path.isfile(source):
        shutil.copyfile(source, workdir_lib.path(workdir, name))
      elif os.path.isfile(workdir_lib.path(workdir, name)):
        os.remove(workdir_lib.path(workdir, name))
  barrier(strategy)


def check_same_step(strategy, step, workdir):
  """Fails when the workers restored different steps (a worker that cannot
  read the chief's workdir)."""
  if not is_multi_worker(strategy):
    return
  # Unequal steps make the mean differ from the lowest and the highest.
  value = tf.constant(float(step), tf.float64)
  mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(
      lambda: tf.identity(value)), axis=None)
  if float(mean) != float(step):
    raise ValueError(
        f"The workers resumed from different steps (this one from step "
        f"{step}): every worker must read the chief's checkpoints in "
        f"{workdir}; put the workdir on a file system all hosts share "
        f"(or gs://).")


def optimizer_in_scope(optimizer, strategy):
  """`optimizer`, remade from its config in `strategy`'s scope when it was
  made outside (a gin binding is evaluated before training enters the
  scope): a Keras optimizer belongs to the strategy it was made under."""
  if strategy is None or getattr(optimizer, "_distribution_strategy",
                                 strategy) is strategy:
    return optimizer
  with strategy.scope():
    return keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))


def sync_batch_norm(model):
  """Makes every BatchNormalization layer of `model` normalise with the
  global batch's statistics (all-reduced across replicas) instead of each
  replica's own. Returns how many layers it changed."""
  layers = [l for l in compat.flatten_layers(model)
            if isinstance(l, keras.layers.BatchNormalization)]
  for layer in layers:
    layer.synchronized = True
  return len(layers)


def describe(strategy):
  """One line on the strategy, for the console."""
  if strategy is None:
    return "one device"
  kind = type(strategy).__name__
  line = f"{kind}, {strategy.num_replicas_in_sync} replicas"
  if is_multi_worker(strategy):
    task_type, index = task()
    line += f" (this process: {task_type} {index}" + (
        ", chief)" if is_chief(strategy) else ")")
  return line
