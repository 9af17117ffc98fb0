"""Training that keeps its promises: rollback only to checkpoints seen to
train well, learning-rate cuts that compound, resume that never destroys
work, results that tell the whole run, one writer per workdir."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from ebmkit import gin_utils
from ebmkit import workdir as workdir_lib
from ebmkit.training import checkpoints
from ebmkit.training import experiment
from ebmkit.training import recovery
from ebmkit.training import train as train_lib

from conftest import SMALL_DIGITS as SMALL
from conftest import compiled_digits_model


def run(workdir, *bindings, **kwargs):
  gin_utils.parse(["jem_digits.gin"], SMALL + list(bindings))
  try:
    return train_lib.train(workdir=workdir, **kwargs)
  finally:
    import gin  # pylint: disable=g-import-not-at-top
    gin.clear_config()


def ckpt_files(workdir):
  folder = os.path.join(workdir, "checkpoints")
  return {f: os.path.getsize(os.path.join(folder, f))
          for f in os.listdir(folder) if f.startswith("ckpt-")}


def test_rollback_goes_only_to_a_checkpoint_seen_to_train_well(tmp_path):
  # Saving every step: ckpt-1 holds the weights after the first (absurd)
  # update, which only the second step's loss shows to be diverged.
  workdir = str(tmp_path / "run")
  results = run(workdir, "EPOCHS = 2", "LEARNING_RATE = 100.0",
                "train.checkpoint_every_steps = 1",
                "RecoveryPolicy.lr_factor = 0.0001")
  events = results["recoveries"]
  assert events and results["steps"] == 8
  good = checkpoints.verified(workdir)
  for event in events:
    assert os.path.basename(event["rolled_back_to"]) in good
  assert events[0]["rolled_back_to"].endswith("ckpt-0")
  assert "ckpt-1" in events[0]["discarded"]


def test_learning_rate_cuts_compound_and_a_lower_rate_reruns(tmp_path):
  workdir = str(tmp_path / "run")
  with pytest.raises(recovery.TrainingDivergedError, match="gave up after 3"):
    run(workdir, "EPOCHS = 1", "LEARNING_RATE = 1e6",
        "RecoveryPolicy.lr_factor = 0.5", "RecoveryPolicy.max_recoveries = 3")
  events = recovery.load_recoveries(workdir)
  assert len(events) == 4
  for i, event in enumerate(events):
    assert event["lr_scale"] == pytest.approx(0.5 ** (i + 1))
    assert event["learning_rate"] == pytest.approx(1e6 * 0.5 ** (i + 1),
                                                   rel=1e-5)
  # As the error advises: a lower LEARNING_RATE applies, and the earlier
  # run's recoveries do not count against this one.
  results = run(workdir, "EPOCHS = 1", "LEARNING_RATE = 1e-3")
  assert results["learning_rate"] == pytest.approx(1e-3, rel=1e-5)
  assert results["steps"] == 4 and results["runs"][-1]["recoveries"] == 0


def test_the_configured_learning_rate_applies_on_resume(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  run(workdir, "EPOCHS = 1", "LEARNING_RATE = 1e-3")
  results = run(workdir, "EPOCHS = 2", "LEARNING_RATE = 5e-4")
  assert results["learning_rate"] == pytest.approx(5e-4, rel=1e-5)
  assert "the checkpoint had 0.001" in capsys.readouterr().out
  with open(os.path.join(workdir, "operative_config.gin")) as f:
    assert "LEARNING_RATE = 0.0005" in f.read()


def test_a_lost_index_file_resumes_from_the_newest_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  run(workdir, "EPOCHS = 1", "train.checkpoint_every_steps = 2")
  before = ckpt_files(workdir)
  os.remove(os.path.join(workdir, "checkpoints", "checkpoint"))
  results = run(workdir, "EPOCHS = 2", "train.checkpoint_every_steps = 2")
  assert results["resumed_from"].endswith("ckpt-4")
  assert results["steps"] == 8
  assert set(before) <= set(ckpt_files(workdir)) | {
      f for f in before if f.startswith("ckpt-2.")}  # Rotation may go on.


def test_unreadable_checkpoints_stop_training_and_stay(tmp_path):
  workdir = str(tmp_path / "run")
  run(workdir, "EPOCHS = 1")
  folder = os.path.join(workdir, "checkpoints")
  for f in os.listdir(folder):
    if ".data-" in f:
      with open(os.path.join(folder, f), "wb") as out:
        out.write(b"garbage")
  before = ckpt_files(workdir)
  with pytest.raises(checkpoints.UnreadableCheckpointsError,
                     match="(?s)none can be restored.*Nothing was deleted.*--fresh"):
    run(workdir, "EPOCHS = 2")
  assert ckpt_files(workdir) == before


def test_a_changed_buffer_size_stops_training_and_fresh_sets_aside(tmp_path):
  workdir = str(tmp_path / "run")
  run(workdir, "EPOCHS = 1")
  before = ckpt_files(workdir)
  with pytest.raises(checkpoints.UnreadableCheckpointsError,
                     match="BUFFER_SIZE"):
    run(workdir, "EPOCHS = 1", "BUFFER_SIZE = 300")
  assert ckpt_files(workdir) == before
  results = run(workdir, "EPOCHS = 1", "BUFFER_SIZE = 300", fresh=True)
  assert results["resumed_from"] is None and results["steps"] == 4
  previous = os.path.join(workdir, "previous")
  (aside,) = os.listdir(previous)
  moved = os.listdir(os.path.join(previous, aside, "checkpoints"))
  assert {f for f in before} <= set(moved)


def test_results_tell_the_whole_run_across_resumes(tmp_path):
  workdir = str(tmp_path / "run")
  first = run(workdir, "EPOCHS = 1")
  path = os.path.join(workdir, "results.json")
  with open(path) as f:
    saved = json.load(f)
  saved["evaluation"] = {"accuracy": 0.5}  # As --mode=eval adds it.
  with open(path, "w") as f:
    json.dump(saved, f)
  again = run(workdir, "EPOCHS = 1")  # Finished already: trains nothing.
  assert again["train_metrics_last_epoch"] == first["train_metrics_last_epoch"]
  assert again["train_metrics_last_epoch"]
  third = run(workdir, "EPOCHS = 2")
  assert len(third["runs"]) == 3
  assert [r["ended_at_step"] for r in third["runs"]] == [4, 4, 8]
  assert third["wall_time_s"] == pytest.approx(
      sum(r["wall_time_s"] for r in third["runs"]), abs=0.2)
  assert third["wall_time_s"] > first["wall_time_s"]
  assert third["epochs_completed"] == 2
  assert third["evaluation"] == {"accuracy": 0.5}


def test_evaluation_falls_back_past_a_corrupt_newest_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  run(workdir, "EPOCHS = 1", "train.checkpoint_every_steps = 2")
  folder = os.path.join(workdir, "checkpoints")
  for f in os.listdir(folder):
    if f.startswith("ckpt-4.data"):
      with open(os.path.join(folder, f), "wb") as out:
        out.write(b"garbage")
  gin_utils.parse([os.path.join(workdir, "operative_config.gin")])
  model = experiment.configured_model()
  assert experiment.restore(model, workdir).endswith("ckpt-2")


def test_orphans_of_interrupted_saves_are_cleaned_up(tmp_path):
  workdir = str(tmp_path / "run")
  run(workdir, "EPOCHS = 1")
  folder = os.path.join(workdir, "checkpoints")
  os.makedirs(os.path.join(folder, "ckpt-9_temp"))
  with open(os.path.join(folder, "ckpt-9_temp", "part-0"), "w") as f:
    f.write("x")
  with open(os.path.join(folder, "checkpoint.tmp8a7b"), "w") as f:
    f.write("x")
  run(workdir, "EPOCHS = 2")
  left = os.listdir(folder)
  assert "ckpt-9_temp" not in left and "checkpoint.tmp8a7b" not in left
  assert any(f.startswith("ckpt-8.") for f in left)


def test_a_second_writer_fails_at_once_and_a_stale_lock_is_taken_over(
    tmp_path, capsys):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  lock = os.path.join(workdir, ".lock")
  with open(lock, "w") as f:  # A live owner: this very process.
    json.dump({"pid": os.getpid(), "host": socket.gethostname(),
               "purpose": "training", "since": "now"}, f)
  with pytest.raises(workdir_lib.WorkdirLockedError,
                     match=f"pid {os.getpid()}"):
    run(workdir, "EPOCHS = 1")
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  gone = subprocess.Popen(["true"])
  gone.wait()  # Its pid is free now: a crashed owner's lock is stale.
  with open(lock, "w") as f:
    json.dump({"pid": gone.pid, "host": socket.gethostname()}, f)
  results = run(workdir, "EPOCHS = 1")
  assert results["steps"] == 4 and not os.path.exists(lock)
  assert "stale lock" in capsys.readouterr().out


@pytest.mark.parametrize("binding, message", [
    ("EPOCHS = 1.5", "train.epochs must be a whole number"),
    ("LEARNING_RATE = -1e-3", "learning rate must be a finite number > 0"),
    ("train.checkpoint_every_steps = -1",
     "train.checkpoint_every_steps must be a whole number >= 0"),
])
def test_bad_settings_fail_before_anything_is_written(tmp_path, binding,
                                                      message):
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match=message):
    run(workdir, binding)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


@pytest.mark.slow
def test_kills_corruption_lost_index_and_a_second_writer_lose_nothing(
    tmp_path):
  """The CLI under a hostile user: SIGKILL at random moments (some during
  checkpoint writes: a save every step), a second writer, a corrupt
  newest checkpoint, a deleted index file. The run still ends at step 160
  and results.json tells the whole story."""
  workdir = str(tmp_path / "run")
  command = [sys.executable, "-m", "ebmkit.run", f"--workdir={workdir}",
             "--gin_bindings=EPOCHS = 40", "--gin_bindings=BUFFER_SIZE = 200",
             "--gin_bindings=train.train_split = 'train[:256]'",
             "--gin_bindings=train.checkpoint_every_steps = 1",
             "--gin_bindings=train.verbose = 0"]
  rng = random.Random(0)
  folder = os.path.join(workdir, "checkpoints")
  kills = 0
  for attempt in range(2):
    proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=str(tmp_path))
    # Wait until it trains (a checkpoint newer than what we saw), then kill.
    seen = max((checkpoints._step(p) for p in  # pylint: disable=protected-access
                checkpoints.checkpoints_on_disk(workdir)), default=-1)
    deadline = time.time() + 120
    while time.time() < deadline and max(
        (checkpoints._step(p) for p in  # pylint: disable=protected-access
         checkpoints.checkpoints_on_disk(workdir)), default=-1) <= seen:
      time.sleep(0.05)
    if attempt == 0:
      second = subprocess.run(command, capture_output=True, text=True,
                              cwd=str(tmp_path), timeout=120)
      assert proc.poll() is None, "the first writer finished too soon"
      assert second.returncode != 0
      assert "is in use" in second.stderr and "Traceback" not in second.stderr
    time.sleep(rng.uniform(0.0, 0.5))
    if proc.poll() is None:
      os.kill(proc.pid, signal.SIGKILL)
      kills += 1
    proc.wait()
  assert kills >= 1
  on_disk = checkpoints.checkpoints_on_disk(workdir)
  assert on_disk
  newest = on_disk[-1]
  for f in tf.io.gfile.glob(newest + ".data*"):
    with open(f, "wb") as out:
      out.write(b"garbage")
  os.remove(os.path.join(folder, "checkpoint"))
  final = subprocess.run(command, capture_output=True, text=True,
                         cwd=str(tmp_path), timeout=600)
  assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["steps"] == 160 and results["epochs_completed"] == 40
  assert results["runs"][-1]["ended_at_step"] == 160
  assert results["runs"][-1]["started_at_step"] > 0  # It resumed.
  assert not os.path.exists(os.path.join(workdir, ".lock"))


def test_the_input_check_runs_under_xla_too():
  # XLA compiles in-graph assertions away; train() checks in the pipeline.
  gin_utils.parse(["jem_digits.gin"], ["BUFFER_SIZE = 200"])
  model = experiment.configured_model()
  model.compile(optimizer="adam", jit_compile=True)
  x = np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 1)).astype(np.float32)
  ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(32, np.int32))).batch(
      32)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"pixel / 127.5 - 1"):
    model.fit(train_lib._checked(ds, model), epochs=1, verbose=0)  # pylint: disable=protected-access


@pytest.mark.slow
@pytest.mark.parametrize("binding, message", [
    ("EPOCH = 1", "did you mean EPOCHS"),
    ("LEARNING_RATE = 'abc'", "learning_rate"),
    ("train.epochs = = 3", "Unable to parse"),
    ("BUFFER_SIZE = 10", "larger than the replay buffer"),
    ("train.train_split = 'train[:0]'", "holds no examples"),
    ("BATCH_SIZE = 0", "batch_size must be >= 1"),
    # An unwritable workdir (here: a path through a file; root ignores
    # permission bits) is an OSError, reported in one line too.
    ("EPOCHS = 1", "Not a directory"),
])
def test_user_errors_on_the_command_line_are_short(tmp_path, binding,
                                                   message):
  workdir = f"{tmp_path}/run"
  if message == "Not a directory":
    (tmp_path / "file").write_text("x")
    workdir = f"{tmp_path}/file/run"
  proc = subprocess.run(
      [sys.executable, "-m", "ebmkit.run", f"--workdir={workdir}",
       f"--gin_bindings={binding}"], capture_output=True, text=True,
      cwd=str(tmp_path), timeout=300)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith("ebmkit:")]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
  assert not os.path.exists(os.path.join(tmp_path, "run", "checkpoints"))


@pytest.mark.slow
def test_a_train_workdir_binding_is_where_the_cli_writes(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "ebmkit.run", "--gin_bindings=EPOCHS = 1",
       "--gin_bindings=train.train_split = 'train[:128]'",
       "--gin_bindings=BUFFER_SIZE = 200",
       f"--gin_bindings=train.workdir = '{tmp_path}/bound'"],
      capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.isfile(os.path.join(tmp_path, "bound", "results.json"))
  assert not os.path.exists(os.path.join(tmp_path, "ebmkit_runs"))


def test_rollback_target_steps_back_past_a_target_that_diverged_again():
  c0, c5, c10, c15 = "w/ckpt-0", "w/ckpt-5", "w/ckpt-10", "w/ckpt-15"
  paths = [c0, c5, c10, c15]
  target = checkpoints.rollback_target
  assert target(paths, [c0, c10, c15]) == (c15, False)
  # Training diverged again from c15 before a newer one was verified.
  assert target(paths, [c0, c10, c15], previous=c15) == (c10, True)
  # It made verified progress since rolling back to c10: the newest.
  assert target(paths, [c0, c10, c15], previous=c10) == (c15, False)
  # c5 was never verified: skipped; then down to the first, and no further.
  assert target(paths[:3], [c0, c10], previous=c10) == (c0, True)
  assert target(paths[:1], [c0], previous=c0) == (c0, False)
  assert target(paths, [], previous=None) == (c0, False)


def test_a_rollback_target_that_diverges_again_sends_the_next_one_further_back(
    tmp_path):
  # The case: rollbacks kept going to a checkpoint that had passed
  # the guard but was already ruined. Here the checkpoints are written by
  # hand, each with its own first kernel value, so that where each recovery
  # lands can be read back from the weights.
  workdir = str(tmp_path / "run")
  model = compiled_digits_model(SMALL)
  manager = checkpoints.make_manager(model, workdir)
  kernel = model.trainable_variables[0]
  guard = recovery.DivergenceGuard()
  guard.set_model(model)

  def save(step, verify):
    kernel.assign(tf.fill(kernel.shape, float(step)))
    model.optimizer.iterations.assign(step)
    path = manager.save(checkpoint_number=step)
    if verify:
      checkpoints.mark_verified(workdir, path)
    return path

  def diverge(previous):
    guard.reset()
    guard._flag("a test divergence")  # pylint: disable=protected-access
    event = recovery.recover(model, manager, guard, workdir, 1e-3, 1.0,
                             0.5, 0.0, previous_target=previous)
    assert float(kernel.numpy().flat[0]) == float(
        event["rolled_back_to"].rsplit("-", 1)[1])  # Restored it.
    return event

  for step in (0, 10, 20):
    save(step, verify=True)
  save(30, verify=False)
  first = diverge(None)
  assert first["rolled_back_to"].endswith("ckpt-20")
  assert not first["stepped_back"] and first["discarded"] == ["ckpt-30"]
  # Training from ckpt-20 diverges again before anything newer passes.
  save(25, verify=False)
  second = diverge(first["rolled_back_to"])
  assert second["rolled_back_to"].endswith("ckpt-10")
  assert second["stepped_back"]
  assert sorted(second["discarded"]) == ["ckpt-20", "ckpt-25"]
  # ckpt-20 is gone from the verified list too: a new ckpt-20, written
  # after the rollback, counts only once its own next step passes.
  assert checkpoints.verified(workdir) == {"ckpt-0", "ckpt-10"}
  save(20, verify=False)
  third = diverge(second["rolled_back_to"])
  assert third["rolled_back_to"].endswith("ckpt-0") and third["stepped_back"]
  fourth = diverge(third["rolled_back_to"])  # The first: no further back.
  assert fourth["rolled_back_to"].endswith("ckpt-0")
  assert not fourth["stepped_back"]
  events = recovery.load_recoveries(workdir)
  assert [e["rolled_back_to"][-7:] for e in events] == [
      "ckpt-20", "ckpt-10", "/ckpt-0", "/ckpt-0"]
  message = str(recovery.gave_up(events, 3, 0.5, 0.0, 0.0, workdir,
                                 fourth["rolled_back_to"]))
  assert "now ckpt-0, the state the last rollback went to" in message
  assert "diverged from it again 1 time(s)" in message
  assert "a good state" not in message


def test_rotation_keeps_the_two_newest_verified_checkpoints(tmp_path):
  workdir = str(tmp_path / "run")
  model = compiled_digits_model(SMALL)
  manager = checkpoints.make_manager(model, workdir)
  for step in range(6):
    path = manager.save(checkpoint_number=step)
    if step in (0, 1, 2):
      checkpoints.mark_verified(workdir, path)
  deleted = checkpoints.prune(manager, workdir, keep=2, protect_anchor=True)
  names = [os.path.basename(p) for p in manager.checkpoints]
  # Newest 2 (4, 5), the two newest verified (1, 2) and the anchor (0).
  assert names == ["ckpt-0", "ckpt-1", "ckpt-2", "ckpt-4", "ckpt-5"]
  assert [os.path.basename(p) for p in deleted] == ["ckpt-3"]
  assert checkpoints.verified(workdir) == {"ckpt-0", "ckpt-1", "ckpt-2"}
