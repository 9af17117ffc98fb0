"""Checks of training under MirroredStrategy on two logical CPU devices.

Run by tests/test_distribute.py in a subprocess of its own: the CPU must be
split into devices before TensorFlow sets them up, which a pytest process
has done long before. Prints one JSON line {check: "ok" or the failure}.
"""

import json
import os
import sys
import tempfile
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # pylint: disable=g-import-not-at-top

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)

import gin  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top,g-multiple-import
from ebmkit.distribute import strategy as distribute
from ebmkit.models import replicas
from ebmkit.networks import backbones
from ebmkit.training import callbacks
from ebmkit.training import checkpoints
from ebmkit.training import experiment

STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
# Chains made deterministic: no noise, no re-initialisation, and every slot
# holds the same start, so that which slots a chain draws does not matter.
DETERMINISTIC = ["SGLD_STEPS = 2", "SGLD_NOISE = 0.0", "REINIT_PROB = 0.0",
                 "BUFFER_SIZE = 40"]


def _model(config, bindings, strategy=None):
  gin.clear_config()
  gin_utils.parse([config], bindings)
  if strategy is None:
    return experiment.configured_model()
  with strategy.scope():
    return experiment.configured_model()


def equivalence(config):
  """One SGD step on 2 replicas × 16 equals one on 1 device × 32."""
  keras.utils.set_random_seed(0)
  one = _model(config, DETERMINISTIC)
  two = _model(config, DETERMINISTIC, STRATEGY)
  start = np.random.default_rng(1).uniform(-1, 1, (8, 8, 1)).astype("f4")
  one.replay_buffer.samples.assign(np.broadcast_to(
      start, one.replay_buffer.samples.shape))
  assert len(one.variables) == len(two.variables)
  for a, b in zip(one.variables, two.variables):
    b.assign(a.numpy())
  initial = [v.numpy() for v in one.trainable_variables]
  x = np.random.default_rng(2).uniform(-1, 1, (32, 8, 8, 1)).astype("f4")
  y = np.arange(32) % 10
  one.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
  with STRATEGY.scope():
    two.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
  h1 = one.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
  h2 = two.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
  moved = max(float(np.abs(v.numpy() - i).max())
              for v, i in zip(one.trainable_variables, initial))
  assert moved > 1e-3, f"the step barely moved the weights ({moved})"
  worst = max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in zip(
      one.trainable_variables, two.trainable_variables))
  # A summed (unscaled) gradient would differ by about `moved`.
  assert worst < 1e-3 * moved + 1e-6, (
      f"weights differ by {worst} (the step moved them by {moved})")
  l1, l2 = h1.history["loss"][0], h2.history["loss"][0]
  assert abs(l1 - l2) < 1e-5 * max(1.0, abs(l1)), (l1, l2)


def _owner(slot, slice_size, replicas_count=2):
  """The replica owning a slot of the whole buffer, by the layout's rule:
  within each class slice, the first half is replica 0's."""
  return (slot % slice_size) // (slice_size // replicas_count)


def ownership():
  """Each replica's chains write only its own shard: slots of the other
  replica keep their samples."""
  model = _model("jem_factored_digits.gin", DETERMINISTIC, STRATEGY)
  buf = model.replay_buffer
  before = buf.samples.numpy().copy()
  labels = tf.constant([0, 3, 3, 9, 5, 5, 7, 1])

  def write():
    r = tf.distribute.get_replica_context().replica_id_in_sync_group
    _, slots = buf.draw(8, y=labels)
    mark = tf.fill((8, 8, 8, 1), 10.0 * tf.cast(r + 1, tf.float32))
    buf.write(slots, mark)

  with replicas.sharded(buf, STRATEGY):
    STRATEGY.run(tf.function(write))
  after = buf.samples.numpy()
  changed = np.nonzero(np.any(after != before, axis=(1, 2, 3)))[0]
  seen = set()
  for slot in changed:
    value = after[slot].flat[0]
    assert value in (10.0, 20.0), value
    replica = int(value / 10) - 1
    assert _owner(slot, buf.slice_size) == replica, (slot, replica)
    assert slot // buf.slice_size in (0, 1, 3, 5, 7, 9), slot  # y's slices
    seen.add(replica)
  assert seen == {0, 1}, seen


def _rows(array):
  """Each row's bytes → how many times it occurs."""
  keys, counts = np.unique(array.reshape(len(array), -1), axis=0,
                           return_counts=True)
  return {k.tobytes(): int(c) for k, c in zip(keys, counts)}


def save_restore():
  """Every replica's buffer, the RNG and the optimizer are saved and
  restored bit for bit; the checkpoint restores into 1 replica with every
  sample once, and a one-device buffer splits into 2 shards likewise."""
  bindings = ["SGLD_STEPS = 1", "BUFFER_SIZE = 40"]
  keras.utils.set_random_seed(0)
  model = _model("jem_factored_digits.gin", bindings, STRATEGY)
  with STRATEGY.scope():
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
  x = np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 1)).astype("f4")
  model.fit(x, np.arange(32) % 10, batch_size=16, epochs=1, verbose=0)
  shards = model.replay_buffer._replica_shards  # pylint: disable=protected-access
  parts = [v.numpy().copy()
           for v in STRATEGY.experimental_local_results(shards.variable)]
  assert not np.array_equal(parts[0], parts[1])
  folder = tempfile.mkdtemp()
  manager = checkpoints.make_manager(model, folder)
  manager.save(checkpoint_number=2)
  state = [v.numpy().copy() for v in model.variables + list(
      model.optimizer.variables)]
  for v in model.variables + list(model.optimizer.variables):
    v.assign(tf.zeros_like(v))
  for v in STRATEGY.experimental_local_results(shards.variable):
    v.assign(tf.zeros_like(v))
  checkpoints.restore_latest(manager, model)
  for before, v in zip(state, model.variables + list(
      model.optimizer.variables)):
    np.testing.assert_array_equal(before, v.numpy())
  with replicas.sharded(model.replay_buffer, STRATEGY):
    for part, v in zip(parts, STRATEGY.experimental_local_results(
        shards.variable)):
      np.testing.assert_array_equal(part, v.numpy())

  # R = 2 -> R' = 1: every sample once, where the layout puts it.
  single = _model("jem_factored_digits.gin", bindings)
  single.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
  checkpoints.restore_latest(checkpoints.make_manager(single, folder), single)
  whole = single.replay_buffer.samples.numpy()
  assert _rows(whole) == _rows(np.concatenate(parts)), "samples lost"
  assert len(_rows(whole)) == 40 and set(_rows(whole).values()) == {1}
  s, half = single.replay_buffer.slice_size, single.replay_buffer.slice_size // 2
  for slot in range(40):
    c, j = divmod(slot, s)
    r, k = divmod(j, half)
    np.testing.assert_array_equal(whole[slot], parts[r][c * half + k])

  # R = 1 -> R' = 2: the shards split the buffer, each sample once.
  again = _model("jem_factored_digits.gin", bindings, STRATEGY)
  again.replay_buffer.samples.assign(whole)
  with replicas.sharded(again.replay_buffer, STRATEGY) as split:
    halves = [v.numpy() for v in STRATEGY.experimental_local_results(
        split.variable)]
  assert _rows(np.concatenate(halves)) == _rows(whole)
  np.testing.assert_array_equal(halves[0], parts[0])
  np.testing.assert_array_equal(halves[1], parts[1])


def refuses_uneven_buffer():
  """A buffer whose class slices do not split in two is refused."""
  model = _model("jem_factored_digits.gin", ["BUFFER_SIZE = 30"], STRATEGY)
  try:
    with replicas.sharded(model.replay_buffer, STRATEGY):
      pass
  except ValueError as e:
    assert "multiple of 20" in str(e), e
    return
  raise AssertionError("no error for 3 samples per class on 2 replicas")


def _bn_moving_stats(sync):
  """One forward pass in training mode of a WRN-10-1 with NORM='batch' on 2
  replicas x 16, and of the same net on 1 device x 32. The replicas' halves
  are shifted apart (+1, -1) so that their batch statistics differ from the
  global batch's.

  Returns:
    Every BN layer's (moving mean, moving variance) on 2 replicas (the first
    replica's copy) and on 1 device, the first BN layer first; its copies on
    each replica [(mean, variance)] * 2; the first BN layer's input [32, ...].
  """
  keras.utils.set_random_seed(0)
  x = np.random.default_rng(3).uniform(-1, 1, (32, 8, 8, 1)).astype("f4")
  x[:16] += 1.0
  x[16:] -= 1.0
  net = lambda: backbones.wide_resnet(depth=10, width=1, norm="batch")
  single = net()
  single.build((None, 8, 8, 1))
  with STRATEGY.scope():
    model = net()
    model.build((None, 8, 8, 1))
  for a, b in zip(single.variables, model.variables):
    b.assign(a.numpy())
  if sync:
    assert distribute.sync_batch_norm(model) == 7  # 3 blocks x 2, + bn1.
  halves = STRATEGY.experimental_distribute_values_from_function(
      lambda ctx: x[16 * ctx.replica_id_in_sync_group:][:16])
  tf.function(lambda v: STRATEGY.run(lambda h: model(h, training=True),
                                     args=(v,)))(halves)
  single(x, training=True)
  # The first block's first BN (it normalises conv1's output) leads.
  layers = lambda m: [m.blocks[0].bn1] + [
      l for l in m._flatten_layers()  # pylint: disable=protected-access
      if isinstance(l, keras.layers.BatchNormalization)]
  stats = lambda m: [(l.moving_mean.numpy(), l.moving_variance.numpy())
                     for l in layers(m)]
  lead = layers(model)[0]
  copies = list(zip(*[[v.numpy() for v in STRATEGY.experimental_local_results(
      w.value)] for w in (lead.moving_mean, lead.moving_variance)]))
  first_input = model.conv1(x).numpy()  # No BN before the first one.
  return stats(model), stats(single), copies, first_input


def sync_batch_norm():
  """With `distribute.sync_batch_norm`, BN's moving statistics after a
  training-mode pass on 2 replicas x 16 are the global batch's (by hand in
  NumPy for the first BN layer, on both replicas' copies; equal to 1 device
  x 32 for all 7 layers). Without it, each replica's copy holds that
  replica's own batch statistics (Keras 3 BN's moving statistics are
  mirrored variables without aggregation), by hand likewise."""
  momentum = 0.1  # backbones._norm_layer's: the kept fraction.
  expected = lambda h: ((1 - momentum) * h.mean(axis=(0, 1, 2)),
                        momentum + (1 - momentum) * h.var(axis=(0, 1, 2)))
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  synced, single, copies, h = _bn_moving_stats(sync=True)
  mean, var = expected(h)
  for copy_mean, copy_var in copies:
    close(copy_mean, mean)
    close(copy_var, var)
  assert len(synced) == 8, len(synced)
  for (m2, v2), (m1, v1) in zip(synced, single):
    np.testing.assert_allclose(m2, m1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v2, v1, rtol=1e-4, atol=1e-5)

  _, _, copies, h = _bn_moving_stats(sync=False)
  for r, (copy_mean, copy_var) in enumerate(copies):
    own_mean, own_var = expected(h[16 * r:16 * (r + 1)])
    # The halves' statistics are far from the global ones (by much more
    # than the tolerances), so the check tells the two apart.
    assert float(np.max(np.abs(own_mean - mean))) > 0.1, (own_mean, mean)
    assert float(np.max(np.abs(own_var - var))) > 0.1, (own_var, var)
    close(copy_mean, own_mean)
    close(copy_var, own_var)


def _state(model):
  """What a resume must bring back.

  Returns:
    Every model and optimizer variable (what a checkpoint holds); each
    replica's buffer shard; the positions of the RNG states in the first.
  """
  names = [v.path for v in model.variables]
  shards = model.replay_buffer._replica_shards  # pylint: disable=protected-access
  with replicas.sharded(model.replay_buffer, STRATEGY):
    parts = [v.numpy() for v in STRATEGY.experimental_local_results(
        shards.variable)]
  return ([v.numpy() for v in model.variables + list(
      model.optimizer.variables)], parts,
          [i for i, n in enumerate(names) if "seed_generator_state" in n])


def exact_resume():
  """2 steps straight on 2 replicas equal 1 step, a checkpoint (saved
  mid-fit by train()'s BufferSync and Checkpointer), a restore into a fresh
  model and 1 step: weights, optimizer, buffer (every replica's shard) and
  RNG states bit for bit. Sampling is seeded, not deterministic (SGLD noise
  and re-initialisation on), so the RNG state must come back too."""
  bindings = ["SGLD_STEPS = 2", "BUFFER_SIZE = 40", "REINIT_PROB = 0.3"]
  x = np.random.default_rng(4).uniform(-1, 1, (64, 8, 8, 1)).astype("f4")
  y = np.arange(64) % 10
  folder = tempfile.mkdtemp()
  keras.utils.set_random_seed(0)
  probe = _model("jem_digits.gin", bindings, STRATEGY)
  initial = [v.numpy() for v in probe.variables]
  keras.utils.set_random_seed(0)
  model = _model("jem_digits.gin", bindings, STRATEGY)
  with STRATEGY.scope():  # As in train(), which runs in the scope.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    manager = checkpoints.make_manager(model, folder)
  model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0,
            callbacks=[replicas.BufferSync(1), callbacks.Checkpointer(
                manager, folder, every_steps=1, keep=5)])
  straight, straight_parts, rng = _state(model)
  assert int(model.optimizer.iterations.numpy()) == 2

  keras.utils.set_random_seed(1)  # Another seed: only the checkpoint counts.
  resumed = _model("jem_digits.gin", bindings, STRATEGY)
  with STRATEGY.scope():
    resumed.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    again = checkpoints.make_manager(resumed, folder)
    first = [p for p in again.checkpoints if p.endswith("ckpt-1")]
    assert first, again.checkpoints
    checkpoints.restore(again, resumed, first[0])
  assert int(resumed.optimizer.iterations.numpy()) == 1
  resumed.fit(x[32:], y[32:], batch_size=32, epochs=1, shuffle=False,
              verbose=0)
  state, parts, rng_again = _state(resumed)

  assert len(rng) == 3 and rng == rng_again, (rng, rng_again)
  # The buffer's and the sampler's RNG advanced (the model's own draws
  # only labels y ~ p(y) for class-conditional sampling, not jem_digits').
  moved = [i for i in rng if not np.array_equal(straight[i], initial[i])]
  assert len(moved) == 2, moved
  assert not np.array_equal(straight_parts[0], straight_parts[1])
  for i, (a, b) in enumerate(zip(straight, state)):
    np.testing.assert_array_equal(a, b, err_msg=f"variable {i}")
  for a, b in zip(straight_parts, parts):
    np.testing.assert_array_equal(a, b)


def recovery_and_outputs():
  """`train` under the strategy: an absurd learning rate diverges, the run
  rolls back to the verified initial checkpoint with the rate cut, and
  finishes; its workdir holds what a one-device run writes."""
  from ebmkit.training import train as train_lib  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  gin_utils.parse(["jem_digits.gin"], [
      "train.train_split = 'train[:256]'", "BUFFER_SIZE = 200",
      "train.checkpoint_every_steps = 0", "train.verbose = 0", "EPOCHS = 2",
      "LEARNING_RATE = 100.0", "RecoveryPolicy.lr_factor = 0.0001"])
  workdir = tempfile.mkdtemp()
  results = train_lib.train(workdir=workdir, distribute=STRATEGY)
  assert results["distribute"].startswith("MirroredStrategy, 2 replicas"), (
      results["distribute"])
  assert len(results["recoveries"]) >= 1, results["recoveries"]
  first = results["recoveries"][0]
  assert first["rolled_back_to"].endswith("ckpt-0"), first
  # 100 × 0.0001: the cut applied under the strategy too.
  np.testing.assert_allclose(first["learning_rate"], 0.01, rtol=1e-5)
  assert results["steps"] == 8, results["steps"]  # 2 epochs of 4 steps.
  with open(os.path.join(workdir, "recoveries.json")) as f:
    assert json.load(f) == results["recoveries"]
  for path in ("samples/buffer_latest.png", "tensorboard",
               "operative_config.gin"):
    assert os.path.exists(os.path.join(workdir, path)), path
  gin.clear_config()
  model = experiment.load_model(workdir)  # One device reads it back.
  for v in model.trainable_variables + [model.replay_buffer.samples]:
    assert np.all(np.isfinite(v.numpy())), v.path


CHECKS = {
    "equivalence_jem": lambda: equivalence("jem_digits.gin"),
    "equivalence_factored": lambda: equivalence("jem_factored_digits.gin"),
    "equivalence_igebm": lambda: equivalence("igebm_digits.gin"),
    "ownership": ownership,
    "save_restore": save_restore,
    "refuses_uneven_buffer": refuses_uneven_buffer,
    "sync_batch_norm": sync_batch_norm,
    "exact_resume": exact_resume,
    "recovery_and_outputs": recovery_and_outputs,
}


def main(names):
  results = {}
  for name in names or CHECKS:
    try:
      CHECKS[name]()
      results[name] = "ok"
    except Exception:  # pylint: disable=broad-except
      results[name] = traceback.format_exc()[-3000:]
  print("RESULTS " + json.dumps(results), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
