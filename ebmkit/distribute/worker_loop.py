"""ebmkit's own training loop for `MultiWorkerMirroredStrategy`.

Keras 3's `fit` fails under a multi-worker strategy (keras-team/keras#20585:
"Attempt to convert a value (PerReplica:{...})"), so `fit` and `evaluate`
here run the model's own `train_step` and `test_step` under `strategy.run`
on a distributed data set, and call the Keras callbacks as `fit` does
(checkpoints, divergence guard, sample grids, TensorBoard, step scalars,
epoch lines): the same training, step for step. Metrics are read in
cross-replica context, so every worker sees the same, all-reduced values
and takes the same decisions (stop, roll back, save).
"""

import keras
import tensorflow as tf

from ebmkit.distribute import strategy as distribute
from ebmkit.models import replicas

# What a lost or unreachable worker raises in a collective.
_LOST_WORKER_ERRORS = (tf.errors.UnavailableError,
                       tf.errors.DeadlineExceededError,
                       tf.errors.CancelledError, tf.errors.AbortedError,
                       tf.errors.InternalError)


class History:
  """`fit`'s return value: `history` maps each metric to its epoch values,
  as `keras.callbacks.History`."""

  def __init__(self):
    self.history = {}

  def add(self, logs):
    for name, value in logs.items():
      self.history.setdefault(name, []).append(value)


def _sharded_by_data(dataset):
  """`dataset` split between workers batch by batch (its files cannot be)."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return dataset.with_options(options)


def _results(model):
  """The model's metrics, all-reduced over every replica, as floats."""
  return {m.name: float(m.result()) for m in model.metrics}


def _step_function(model, strategy, step_fn):
  """A compiled function running `step_fn` on one distributed batch."""
  inner = step_fn
  if getattr(model, "jit_compile", False):
    inner = tf.function(step_fn, jit_compile=True)

  @tf.function
  def run(data):
    strategy.run(inner, args=(data,))

  return run


def _lost_worker(error):
  return distribute.WorkerFailedError(
      f"A worker of this multi-worker run stopped or cannot be reached "
      f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). "
      f"Training stopped; the chief's checkpoints are intact. Start every "
      f"worker again (same TF_CONFIG) to resume from the newest one.")


def evaluate(model, strategy, dataset):
  """The model's metrics on `dataset`, as `model.evaluate(return_dict=True)`.

  Args:
    model: a compiled `EnergyModel` built under `strategy`.
    strategy: the `tf.distribute.Strategy`.
    dataset: a `tf.data.Dataset` of global batches.

  Returns:
    {metric name: float}.

  Raises:
    distribute.WorkerFailedError: another worker was lost.
  """
  step = _step_function(model, strategy, model.test_step)
  model.reset_metrics()
  try:
    for data in strategy.experimental_distribute_dataset(
        _sharded_by_data(dataset)):
      step(data)
    return _results(model)
  except _LOST_WORKER_ERRORS as e:
    raise _lost_worker(e) from e


def fit(model, strategy, dataset, epochs=1, initial_epoch=0, callbacks=None,
        validation_data=None, **unused):
  """Trains as `model.fit(dataset, epochs, initial_epoch, callbacks,
  validation_data)` does, under `strategy`.

  The replay buffer is sharded between the replicas while it runs
  (`replicas.sharded`); `model.stop_training` (the divergence guard) ends it
  after the current batch. Keras-only `fit` arguments (verbose, shuffle) are
  ignored: ebmkit's callbacks print.

  Returns:
    A `History` (its `history` as `keras.callbacks.History`'s).

  Raises:
    distribute.WorkerFailedError: another worker was lost.
  """
  del unused
  history = History()
  callback_list = keras.callbacks.CallbackList(
      list(callbacks or []), model=model, add_history=False,
      add_progbar=False, epochs=epochs)
  step = _step_function(model, strategy, model.train_step)
  data = strategy.experimental_distribute_dataset(_sharded_by_data(dataset))
  model.stop_training = False
  logs = {}
  try:
    with replicas.sharded(model.replay_buffer, strategy):
      callback_list.on_train_begin()
      for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for batch, element in enumerate(data):
          callback_list.on_train_batch_begin(batch)
          step(element)
          logs = _results(model)
          callback_list.on_train_batch_end(batch, logs)
          if model.stop_training:
            break
        epoch_logs = dict(logs)
        if validation_data is not None and not model.stop_training:
          epoch_logs.update({f"val_{k}": v for k, v in evaluate(
              model, strategy, validation_data).items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        history.add(epoch_logs)
        if model.stop_training:
          break
      callback_list.on_train_end(logs)
  except _LOST_WORKER_ERRORS as e:
    raise _lost_worker(e) from e
  return history
