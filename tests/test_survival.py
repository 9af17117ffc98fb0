"""Training that survives: divergence recovery, preemption, bad configs and
bad data fail early and clearly."""

import json
import os
import signal
import subprocess
import sys
import time

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from ebmkit import gin_utils
from ebmkit.data import pipeline as data
from ebmkit.training import checkpoints
from ebmkit.training import experiment
from ebmkit.training import recovery
from ebmkit.training import train as train_lib

from conftest import SMALL_DIGITS as SMALL


def test_an_absurd_learning_rate_recovers_and_finishes(tmp_path):
  workdir = str(tmp_path / "run")
  gin_utils.parse(["jem_digits.gin"], SMALL + [
      "EPOCHS = 2", "LEARNING_RATE = 100.0",
      "RecoveryPolicy.lr_factor = 0.0001"])
  results = train_lib.train(workdir=workdir)
  assert len(results["recoveries"]) >= 1
  first = results["recoveries"][0]
  assert first["rolled_back_to"].endswith("ckpt-0")
  assert first["learning_rate"] == pytest.approx(0.01, rel=1e-5)
  assert "exceeds" in first["reason"] or "nan" in first["reason"].lower()
  assert results["steps"] == 8  # Both epochs ran after the recovery.
  model = experiment.load_model(workdir)
  for v in model.trainable_variables:
    assert np.all(np.isfinite(v.numpy()))
  with open(os.path.join(workdir, "recoveries.json")) as f:
    assert json.load(f) == results["recoveries"]


def test_nan_in_the_buffer_is_detected_and_repaired(tmp_path):
  workdir = str(tmp_path / "run")
  gin_utils.parse(["jem_digits.gin"], SMALL + ["EPOCHS = 1"])
  train_lib.train(workdir=workdir)
  # Poison the saved buffer, as a diverged chain would.
  gin.clear_config()
  model = experiment.load_model(workdir)
  samples = model.replay_buffer.samples.numpy()
  samples[:50] = np.nan
  model.replay_buffer.samples.assign(samples)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  checkpoints.make_manager(model, workdir).save(checkpoint_number=4)
  # Only the poisoned checkpoint is left, and nothing is known to be good:
  # the rollback can only go back to it, and must repair its buffer.
  ckpt_dir = os.path.join(workdir, "checkpoints")
  for f in os.listdir(ckpt_dir):
    if f.startswith("ckpt-0.") or f == "verified.json":
      os.remove(os.path.join(ckpt_dir, f))
  gin.clear_config()
  gin_utils.parse(["jem_digits.gin"], SMALL + ["EPOCHS = 2"])
  results = train_lib.train(workdir=workdir)
  events = results["recoveries"]
  assert events and events[0]["buffer_reset"]
  assert events[0]["rolled_back_to"].endswith("ckpt-4")
  assert results["steps"] == 8
  final = experiment.load_model(workdir)
  assert np.all(np.isfinite(final.replay_buffer.samples.numpy()))


def test_gives_up_with_a_clear_message(tmp_path):
  workdir = str(tmp_path / "run")
  gin_utils.parse(["jem_digits.gin"], SMALL + [
      "EPOCHS = 1", "LEARNING_RATE = 1e6", "RecoveryPolicy.lr_factor = 1.0",
      "RecoveryPolicy.max_recoveries = 1"])
  with pytest.raises(recovery.TrainingDivergedError,
                     match="gave up after 1 recoveries.*now ckpt-0, the state the last "
                     "rollback went to.*diverged from it again 1 time.*check its accuracy"):
    train_lib.train(workdir=workdir)
  # Nothing diverged was saved: the only checkpoint is the initial one.
  assert tf.train.latest_checkpoint(
      os.path.join(workdir, "checkpoints")).endswith("ckpt-0")


def test_with_recovery_off_a_diverging_run_is_left_alone(tmp_path):
  """train.recovery = False: no guard, no rollback, every step taken (the
  loss is then NaN or huge: that is what the user asked for)."""
  workdir = str(tmp_path / "run")
  gin_utils.parse(["jem_digits.gin"], SMALL + [
      "EPOCHS = 1", "LEARNING_RATE = 1e6", "train.recovery = False"])
  results = train_lib.train(workdir=workdir)
  assert results["steps"] == 4 and results["recoveries"] == []
  assert not os.path.exists(os.path.join(workdir, "recoveries.json"))
  loss = results["train_metrics_last_epoch"]["loss"]
  assert not np.isfinite(loss) or abs(loss) > 1e4, loss


@pytest.mark.slow
def test_sigkill_mid_run_then_the_same_command_resumes(tmp_path):
  workdir = str(tmp_path / "run")
  command = [sys.executable, "-m", "ebmkit.run", f"--workdir={workdir}",
             "--gin_bindings=EPOCHS = 6", "--gin_bindings=BUFFER_SIZE = 200",
             "--gin_bindings=train.train_split = 'train[:512]'",
             "--gin_bindings=train.checkpoint_every_steps = 4",
             "--gin_bindings=train.verbose = 0"]
  proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, cwd=str(tmp_path))
  ckpt_dir = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline:
    latest = tf.train.latest_checkpoint(ckpt_dir)
    if latest and int(latest.rsplit("-", 1)[1]) >= 12:
      break
    time.sleep(0.2)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  latest = tf.train.latest_checkpoint(ckpt_dir)
  saved_step = int(latest.rsplit("-", 1)[1])
  assert 12 <= saved_step < 48
  reader = tf.train.load_checkpoint(latest)
  saved = {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(latest)
           if n.startswith(("model/", "optimizer/"))}

  # The restored state is the checkpoint's, bit for bit.
  gin_utils.parse([os.path.join(workdir, "operative_config.gin")])
  model = experiment.build_model(data.dataset_info())
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  manager = checkpoints.make_manager(model, workdir)
  assert checkpoints.restore_latest(manager, model) == latest
  assert int(model.optimizer.iterations.numpy()) == saved_step
  by_name = checkpoints.variables_by_name(model)
  assert {k.split("/.ATTRIBUTES")[0] for k in saved} == set(by_name)
  for key, value in saved.items():
    np.testing.assert_array_equal(
        by_name[key.split("/.ATTRIBUTES")[0]].numpy(), value, err_msg=key)

  # The same command again: resumes at the saved step and finishes.
  out = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path),
                       timeout=600)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  assert f"at step {saved_step} of 48" in out.stdout
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["steps"] == 48


@pytest.mark.parametrize("binding, message", [
    ("ebmkit.LangevinSampler.stpes = 3", "did you mean 'steps'"),
    ("ebmkit.ReplayBuffer.reinit_probability = 0.1", "reinit_prob"),
    ("trian.epochs = 3", "No configurable matching 'trian'"),
    ("train.epoch = 3", "doesn't have a parameter named 'epoch'"),
])
def test_misspelt_bindings_fail_before_training(binding, message):
  with pytest.raises(ValueError, match=message):
    gin_utils.parse(["jem_digits.gin"], [binding])


@pytest.mark.parametrize("bindings, message", [
    (["SGLD_STEP_SIZE = -1.0"], r"step_size \(α\) must be >= 0"),
    (["SGLD_NOISE = -0.1"], r"noise \(σ\) must be >= 0"),
    (["REINIT_PROB = 1.5"], r"reinit_prob \(ρ\) must be in \[0, 1\]"),
    (["BUFFER_SIZE = 205"], "divisible by num_classes"),
    (["BUFFER_SIZE = 32"], r"batch \(64\) is larger than the replay buffer"),
])
def test_invalid_values_fail_before_anything_is_written(bindings, message,
                                                        tmp_path):
  workdir = str(tmp_path / "run")
  gin_utils.parse(["jem_factored_digits.gin"] if "205" in bindings[0]
                  else ["jem_digits.gin"], SMALL + bindings)
  with pytest.raises(ValueError, match=message):
    train_lib.train(workdir=workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


@pytest.mark.parametrize("images, labels, message", [
    (np.full((8, 8, 8, 1), 255.0), np.zeros(8), "above the data range"),
    (np.zeros((8, 8, 8, 1)), np.full(8, 10), "labels must be < 10"),
    (np.full((8, 8, 8, 1), np.nan), np.zeros(8), "NaN or Inf"),
])
def test_bad_data_from_a_users_pipeline_is_named(trained, images, labels,
                                                 message):
  model = trained[1]
  model.compile(optimizer=keras.optimizers.SGD(0.0),
                jit_compile=False)
  ds = tf.data.Dataset.from_tensor_slices(
      (images.astype(np.float32), labels.astype(np.int32))).batch(8)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    model.fit(ds, epochs=1, verbose=0)


def test_wrong_image_shape_is_named(trained):
  model = trained[1]
  model.compile(optimizer=keras.optimizers.SGD(0.0),
                jit_compile=False)
  with pytest.raises(ValueError, match=r"shape \(9, 9, 1\).*built for \(8, 8, 1\)"):
    model.train_on_batch(np.zeros((4, 9, 9, 1), np.float32), np.zeros(4))


def test_empty_split_is_named(tmp_path):
  gin_utils.parse(["jem_digits.gin"], SMALL + [
      "train.train_split = 'train[:10]'"])
  with pytest.raises(ValueError, match="gives no batch"):
    train_lib.train(workdir=str(tmp_path / "run"))


@pytest.mark.slow
def test_a_killed_and_resumed_run_ends_where_an_uninterrupted_one_does(
    tmp_path):
  # Deterministic when the data side is: no shuffling, no σ_data noise. The
  # model's own randomness (buffer draws, re-initialisation, SGLD noise) comes
  # from seed generators whose states are checkpointed.
  bindings = ["EPOCHS = 3", "BUFFER_SIZE = 200", "DATA_NOISE = 0.0",
              "load_dataset.shuffle_buffer = 1",
              "train.train_split = 'train[:256]'",
              "train.checkpoint_every_steps = 1", "train.verbose = 0"]
  straight = str(tmp_path / "straight")
  gin_utils.parse(["jem_digits.gin"], bindings)
  train_lib.train(workdir=straight)
  gin.clear_config()

  killed = str(tmp_path / "killed")
  command = [sys.executable, "-m", "ebmkit.run", f"--workdir={killed}"] + [
      f"--gin_bindings={b}" for b in bindings]
  proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, cwd=str(tmp_path))
  deadline = time.time() + 240
  while time.time() < deadline:
    latest = tf.train.latest_checkpoint(os.path.join(killed, "checkpoints"))
    if latest and int(latest.rsplit("-", 1)[1]) >= 5:
      break
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert int(tf.train.latest_checkpoint(os.path.join(
      killed, "checkpoints")).rsplit("-", 1)[1]) < 12
  out = subprocess.run(command, capture_output=True, text=True,
                       cwd=str(tmp_path), timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]

  final = {}
  for name, workdir in (("straight", straight), ("killed", killed)):
    path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
    assert path.endswith("ckpt-12")
    reader = tf.train.load_checkpoint(path)
    final[name] = {n: reader.get_tensor(n) for n, _ in
                   tf.train.list_variables(path) if n.startswith("model/")}
  assert final["straight"].keys() == final["killed"].keys()
  for key, value in final["straight"].items():
    np.testing.assert_allclose(final["killed"][key], value, rtol=1e-4,
                               atol=1e-5, err_msg=key)
