"""Per-replica training state under `tf.distribute`: replay-buffer shards,
per-replica random streams and the loss scale for summed gradients.

Under a strategy with R replicas, each replica's SGLD chains draw from and
write to their own shard of the replay buffer, a `tf.Variable` with
`synchronization=ON_READ` on that replica's device: sampling needs no
communication. The buffer's own `samples` variable (what checkpoints, sample
grids, the divergence guard and evaluation read) stays the whole buffer in a
fixed layout that does not depend on R; `gather` writes every replica's shard
into it, `scatter` hands its parts back to the replicas. So a checkpoint holds
every replica's chains, and one written with R replicas restores into R'.

Layout: the buffer is C class slices of S samples (C = 1 unless the buffer is
class-conditional). Replica r's shard holds, for every class c, the S/R
samples `samples[c·S + r·S/R : c·S + (r+1)·S/R]`, class-major, so that a
class-conditional shard is itself class-conditional.
"""

import contextlib

import keras
import tensorflow as tf


def replica_count():
  """Replicas that train in sync here: 1 outside any strategy."""
  context = tf.distribute.get_replica_context()
  if context is not None:
    return context.num_replicas_in_sync
  return tf.distribute.get_strategy().num_replicas_in_sync


def scale_loss(loss):
  """The per-replica loss to differentiate: `loss` / replicas.

  Keras 3's optimizer sums the replicas' gradients (`optimizer.apply` in a
  custom `train_step` under `MirroredStrategy` gave R times the one-device
  update), so each replica's mean loss is divided by R: the summed gradient
  is then the gradient of the global batch's mean loss.
  """
  replicas = replica_count()
  return loss if replicas == 1 else loss / replicas


def _replica_id():
  """This replica's id in its sync group, or None outside replica context
  of a strategy."""
  if not tf.distribute.has_strategy() or (
      tf.distribute.in_cross_replica_context()):
    return None
  return tf.distribute.get_replica_context().replica_id_in_sync_group


@keras.saving.register_keras_serializable(package="ebmkit")
class SeedGenerator(keras.random.SeedGenerator):
  """`keras.random.SeedGenerator` whose draws differ between replicas.

  The state is one variable, mirrored on every replica and advanced alike;
  in a replica context of a strategy each draw's seed is folded with the
  replica id, so the replicas' chains get their own noise, slots and
  re-initialisations. Outside a strategy it draws exactly what Keras' own
  generator draws.
  """

  def next(self, ordered=True):
    seed = super().next(ordered)
    replica = _replica_id()
    if replica is None:
      return seed
    return tf.random.experimental.stateless_fold_in(
        tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32),
        tf.cast(replica, tf.int32))


class BufferShards:
  """One shard of a `ReplayBuffer` per replica of `strategy` (see the module
  docstring for the layout).

  Args:
    buffer: a built `ReplayBuffer`.
    strategy: the `tf.distribute.Strategy` that training runs under.

  Raises:
    ValueError: a class slice (the whole buffer if not class-conditional)
      does not divide into the replicas.
  """

  def __init__(self, buffer, strategy):
    replicas = strategy.num_replicas_in_sync
    classes = buffer.num_classes or 1
    if buffer.slice_size % replicas:
      what = ("each class slice of the class-conditional buffer holds "
              f"{buffer.slice_size} samples" if buffer.class_conditional
              else f"the replay buffer holds {buffer.size} samples")
      raise ValueError(
          f"Training on {replicas} replicas splits the replay buffer into "
          f"one part per replica, but {what}, which {replicas} does not "
          f"divide: make BUFFER_SIZE a multiple of {replicas * classes}.")
    self.buffer = buffer
    self.strategy = strategy
    self.replicas = replicas
    self.classes = classes
    self.slice_size = buffer.slice_size // replicas
    self.size = self.slice_size * classes
    self.active = False
    # Traced once: called at every fit and sync point.
    self._scatter_fn = tf.function(self._put, autograph=False)
    self._gather_fn = tf.function(self._collect, autograph=False)
    with strategy.scope():
      self.variable = tf.Variable(
          tf.zeros((self.size,) + buffer.sample_shape, tf.float32),
          trainable=False, name="replay_buffer_shard",
          synchronization=tf.VariableSynchronization.ON_READ,
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

  def part(self, samples, replica):
    """Replica `replica`'s shard of a whole buffer `samples` [size, ...]."""
    shape = tf.shape(samples)[1:]
    split = tf.reshape(samples, tf.concat(
        [[self.classes, self.replicas, self.slice_size], shape], 0))
    return tf.reshape(tf.gather(split, replica, axis=1),
                      tf.concat([[self.size], shape], 0))

  def whole(self, stacked):
    """The whole buffer [size, ...] from the shards in replica order,
    concatenated [replicas · shard size, ...]."""
    shape = tf.shape(stacked)[1:]
    split = tf.reshape(stacked, tf.concat(
        [[self.replicas, self.classes, self.slice_size], shape], 0))
    rank = len(self.buffer.sample_shape)
    split = tf.transpose(split, [1, 0, 2] + list(range(3, 3 + rank)))
    return tf.reshape(split, tf.concat([[self.buffer.size], shape], 0))

  def _put(self):
    samples = self.buffer.samples.value

    def put():
      context = tf.distribute.get_replica_context()
      self.variable.assign(self.part(tf.identity(samples),
                                     context.replica_id_in_sync_group))

    self.strategy.run(put)

  def _collect(self):
    local = self.strategy.run(lambda: tf.identity(self.variable))
    self.buffer.samples.assign(self.whole(self.strategy.gather(local,
                                                               axis=0)))

  def scatter(self):
    """Hands each replica its part of the buffer's `samples`."""
    self._scatter_fn()

  def gather(self):
    """Writes every replica's shard into the buffer's `samples`.

    Under a multi-worker strategy this is a collective: every worker must
    call it at the same point.
    """
    self._gather_fn()


def distributes(strategy):
  """Whether `strategy` is a real one (not TensorFlow's default, no-op one)."""
  with strategy.scope():
    return tf.distribute.has_strategy()


def shards_of(buffer):
  """The buffer's shards while chains use them (inside `sharded`), else
  None."""
  shards = getattr(buffer, "_replica_shards", None)
  return shards if shards is not None and shards.active else None


def chain_store(buffer):
  """(variable, size, class-slice size) that the buffer's chains draw from
  and write to here: this replica's shard in a replica context of a strategy
  that shards the buffer, else the whole buffer."""
  shards = shards_of(buffer)
  if shards is None or _replica_id() is None:
    return buffer.samples.value, buffer.size, buffer.slice_size
  return shards.variable, shards.size, shards.slice_size


def scatter_update(variable, indices, updates):
  """`variable[indices] = updates` for the whole buffer or a replica's shard.

  A shard (an ON_READ variable) has no scatter in replica context; it is
  assigned whole (a copy of the shard, small beside the chains' cost).
  """
  if isinstance(variable, tf.distribute.DistributedValues):
    variable.assign(tf.tensor_scatter_nd_update(variable, indices, updates))
  else:
    variable.scatter_nd_update(indices, updates)


@contextlib.contextmanager
def sharded(buffer, strategy):
  """Within it, chains under `strategy` use per-replica shards of `buffer`.

  Enter: the shards get their parts of `buffer.samples`; leave (without an
  exception): `buffer.samples` gets every shard back. Outside a strategy, or
  for a buffer not built, it does nothing. The shards are made once per
  buffer and strategy (a compiled train step keeps using the same ones).
  """
  if strategy is None or not buffer.built or not distributes(strategy):
    yield None
    return
  shards = getattr(buffer, "_replica_shards", None)
  if shards is None or shards.strategy is not strategy:
    shards = BufferShards(buffer, strategy)
    object.__setattr__(buffer, "_replica_shards", shards)  # Not model state.
  shards.scatter()
  shards.active = True
  try:
    yield shards
    shards.gather()
  finally:
    shards.active = False


def gather(buffer):
  """Refreshes `buffer.samples` from the replicas' shards while they are in
  use (a no-op otherwise). Collective under a multi-worker strategy."""
  shards = None if buffer is None else shards_of(buffer)
  if shards is not None:
    shards.gather()


class BufferSync(keras.callbacks.Callback):
  """Refreshes the replay buffer's `samples` from the replicas' shards
  (`gather`) every `every_steps` optimizer steps and at each epoch's end,
  before the callbacks after it read it (checkpoints, sample grids, the
  divergence guard). Put it first. Nothing to do on one device.

  Args:
    every_steps: gather at the optimizer steps divisible by this (0: only at
      epoch ends).
  """

  def __init__(self, every_steps=0):
    super().__init__()
    self.every_steps = int(every_steps)

  def on_train_batch_end(self, batch, logs=None):
    if self.every_steps and int(
        self.model.optimizer.iterations.numpy()) % self.every_steps == 0:
      gather(self.model.replay_buffer)

  def on_epoch_end(self, epoch, logs=None):
    gather(self.model.replay_buffer)
