"""train(): checkpoints, resume, outputs; evaluate() from a workdir."""

import json
import os

import gin
import keras
import numpy as np
import tensorflow as tf

import pytest

from ebmkit import gin_utils
from ebmkit.training import checkpoints
from ebmkit.training import experiment
from ebmkit.training import train as train_lib

SMALL = "train[:256]"  # 4 steps per epoch at batch 64.


@pytest.fixture(autouse=True)
def jem_digits():
  """The model of jem_digits.gin (the arguments of train() below win over
  the config's)."""
  gin_utils.parse(["jem_digits.gin"])


def test_checkpoint_restores_weights_buffer_and_step_bit_for_bit(tmp_path):
  model = experiment.configured_model()
  model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
  model.fit(np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 1)),
            np.arange(8) % 10, batch_size=4, epochs=1, verbose=0)
  manager = checkpoints.make_manager(model, str(tmp_path))
  manager.save(checkpoint_number=2)
  saved = [v.numpy().copy() for v in model.variables]
  saved_opt = [v.numpy().copy() for v in model.optimizer.variables]
  for v in model.variables:
    v.assign(tf.zeros_like(v))
  for v in model.optimizer.variables:
    v.assign(tf.zeros_like(v))
  assert checkpoints.restore_latest(manager, model).endswith("ckpt-2")
  for before, v in zip(saved, model.variables):
    np.testing.assert_array_equal(before, v.numpy())
  for before, v in zip(saved_opt, model.optimizer.variables):
    np.testing.assert_array_equal(before, v.numpy())
  assert int(model.optimizer.iterations.numpy()) == 2
  assert any(v is model.replay_buffer.samples for v in model.variables)


def test_train_writes_outputs_and_resumes(tmp_path):
  workdir = str(tmp_path / "run")
  first = train_lib.train(workdir=workdir, train_split=SMALL, epochs=1,
                          jit_compile=False)
  assert first["steps"] == 4 and first["resumed_from"] is None
  for name in ("operative_config.gin", "results.json",
               "samples/buffer_epoch_0001.png", "samples/buffer_latest.png"):
    assert os.path.isfile(os.path.join(workdir, name)), name
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["test_accuracy"] == first["test_accuracy"]

  second = train_lib.train(workdir=workdir, train_split=SMALL, epochs=2,
                           jit_compile=False)
  assert second["resumed_from"].endswith("ckpt-4")
  assert second["steps"] == 8  # Continued from step 4; did not start over.
  assert os.path.isfile(os.path.join(workdir, "samples/buffer_epoch_0002.png"))


def test_mid_epoch_resume_and_fallback_past_a_corrupt_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  train_lib.train(workdir=workdir, train_split=SMALL, epochs=1,
                  checkpoint_every_steps=2, jit_compile=False)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert tf.train.latest_checkpoint(ckpt_dir).endswith("ckpt-4")
  # Corrupt the newest checkpoint: training falls back to ckpt-2 (mid-epoch)
  # and runs only the 2 steps the epoch still owes.
  data_file = [f for f in os.listdir(ckpt_dir) if f.startswith("ckpt-4.data")]
  with open(os.path.join(ckpt_dir, data_file[0]), "wb") as f:
    f.write(b"not a checkpoint")
  results = train_lib.train(workdir=workdir, train_split=SMALL, epochs=1,
                            checkpoint_every_steps=2, jit_compile=False)
  assert results["resumed_from"].endswith("ckpt-2")
  assert results["steps"] == 4
  # The owed steps did run, in this run (train_metrics_last_epoch would be
  # carried over from the first run's results.json if none had).
  assert results["runs"][-1]["started_at_step"] == 2
  assert results["runs"][-1]["ended_at_step"] == 4


def test_training_continues_from_a_model_only_checkpoint(tmp_path):
  # E.g. a converted reference checkpoint: weights and buffer, no optimizer.
  workdir = str(tmp_path / "run")
  model = experiment.configured_model()
  model.replay_buffer.samples.assign(tf.fill(model.replay_buffer.samples.shape,
                                             0.25))
  checkpoints.save_model_only(model, workdir, step=0)
  results = train_lib.train(workdir=workdir, train_split=SMALL, epochs=1,
                            jit_compile=False, sample_grid_images=4)
  assert results["resumed_from"].endswith("ckpt-0")
  assert results["steps"] == 4
  # The buffer came from the checkpoint: slots no chain visited still hold 0.25.
  reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
  buffer = reader.get_tensor(
      "model/replay_buffer/samples/.ATTRIBUTES/VARIABLE_VALUE")
  assert buffer.shape == (2000, 8, 8, 1)
  untouched = np.all(buffer == 0.25, axis=(1, 2, 3))
  # 4 steps of 64 chains write at most 256 of the 2,000 slots; every other
  # slot still holds the checkpoint's 0.25, and the chains did write some.
  assert untouched.sum() >= 2000 - 4 * 64
  assert not untouched.all()


def test_the_workdir_config_keeps_the_settings_of_later_modes(tmp_path):
  """`evaluate.*` is never called while training; --mode=eval without
  --gin_file must still find the experiment's evaluation settings."""
  with gin.unlock_config():
    gin.bind_parameter("evaluate.judge_epochs", 3)
    gin.bind_parameter("evaluate.ood_examples", 77)
  train_lib.train(workdir=str(tmp_path), epochs=1, train_split=SMALL,
                  checkpoint_every_steps=0)
  experiment.parse_workdir_config(str(tmp_path))
  assert gin.query_parameter("evaluate.judge_epochs") == 3
  assert gin.query_parameter("evaluate.ood_examples") == 77
  assert gin.query_parameter("load_dataset.name") == "sklearn_digits"
