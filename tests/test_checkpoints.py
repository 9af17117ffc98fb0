"""Checkpoint files: variables under names a person can read, stable across
processes, and the older positional layout still read."""

import keras
import numpy as np
import tensorflow as tf

from ebmkit.training import checkpoints

from conftest import compiled_digits_model


def _model():
  return compiled_digits_model(["BUFFER_SIZE = 200"])


def _names(path):
  return {n.split("/.ATTRIBUTES")[0]: tuple(s)
          for n, s in tf.train.list_variables(path)
          if n != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_a_checkpoint_names_the_buffer_weights_rng_and_optimizer(tmp_path):
  model = _model()
  path = checkpoints.make_checkpoint(model).write(str(tmp_path / "c"))
  names = _names(path)
  assert names["model/replay_buffer/samples"] == (200, 8, 8, 1)
  assert names["model/backbone/conv0/kernel"] == (3, 3, 1, 32)
  assert names["model/backbone/logits/bias"] == (10,)
  for rng in ("model/sampler/seed_generator",
              "model/replay_buffer/seed_generator", "model/seed_generator"):
    assert names[rng] == (2,), rng
  assert names["optimizer/iteration"] == ()
  assert names["optimizer/backbone/conv0/kernel/momentum"] == (
      3, 3, 1, 32)
  assert not [n for n in names if "/v0" in n]
  # Every variable once: as many names as the model and optimizer have.
  assert len(names) == len(model.variables) + len(model.optimizer.variables)
  by_name = checkpoints.variables_by_name(model)
  assert set(by_name) == set(names)
  assert by_name["model/replay_buffer/samples"] is (
      model.replay_buffer.samples)


def test_names_do_not_depend_on_the_process_or_where_a_layer_was_built(
    tmp_path):
  model = _model()
  first = _names(checkpoints.make_checkpoint(model).write(
      str(tmp_path / "a")))
  for _ in range(2):  # Keras counts automatic names per process.
    later = _model()
  assert later.name != model.name  # e.g. energy_model_2 against _1
  second = _names(checkpoints.make_checkpoint(later).write(
      str(tmp_path / "b")))
  assert first == second
  # A backbone built (called) before the model wraps it has Keras paths
  # without the model's scope; the names are the same.
  import ebmkit  # pylint: disable=g-import-not-at-top
  from ebmkit.networks import backbones  # pylint: disable=g-import-not-at-top
  backbone = backbones.small_convnet(num_classes=10)
  backbone(np.zeros((1, 8, 8, 1), np.float32))
  prebuilt = ebmkit.EnergyModel(backbone,
                                replay_buffer=ebmkit.ReplayBuffer(size=200))
  prebuilt(np.zeros((1, 8, 8, 1), np.float32))
  prebuilt.compile(optimizer=keras.optimizers.Adam(1e-3))
  prebuilt.optimizer.build(prebuilt.trainable_variables)
  assert backbone.variables[0].path.startswith("small_convnet")
  third = _names(checkpoints.make_checkpoint(prebuilt).write(
      str(tmp_path / "c")))
  assert {n for n in third if "backbone" in n} == {
      n for n in first if "backbone" in n}


def test_a_checkpoint_of_the_older_positional_layout_is_restored(tmp_path):
  old = _model()
  for i, v in enumerate(old.variables):
    v.assign(tf.fill(v.shape, tf.cast(i + 1, v.dtype)))
  manager = tf.train.CheckpointManager(
      checkpoints.make_checkpoint(old, layout="positional"),
      str(tmp_path / "run" / "checkpoints"), max_to_keep=None)
  path = manager.save(checkpoint_number=5)
  assert "model/v0000" in {n.split("/.ATTRIBUTES")[0]
                           for n, _ in tf.train.list_variables(path)}
  new = _model()
  assert checkpoints.restore_model(new, str(tmp_path / "run")) == path
  for a, b in zip(old.variables, new.variables):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), a.path)
  # Training resumes from it too (weights and optimizer).
  again = _model()
  resumed = checkpoints.make_manager(again, str(tmp_path / "run"))
  assert checkpoints.restore_latest(resumed, again) == path
  np.testing.assert_array_equal(np.asarray(again.replay_buffer.samples),
                                np.asarray(old.replay_buffer.samples))

