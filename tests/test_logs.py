"""What a run says and records: console lines in log files, the evaluation's
progress, TensorBoard (per-step scalars, the evaluation), where --mode=compare
writes, and the data-preparation advice."""

import contextlib
import glob
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ebmkit import gin_utils, progress
from ebmkit.data import pipeline as data
from ebmkit.evaluation import evaluate
from ebmkit.training import callbacks
from ebmkit.training import train as train_lib

from conftest import TINY_EVAL, run_ebmkit

SMALL = "train[:256]"  # 4 steps per epoch at batch 64.
CONTROL = ("\r", "\x1b", "\x08")  # Carriage return, escape, backspace.


run_cli = run_ebmkit  # Its stdout is a pipe, not a terminal, as a log's.


def read_events(folder):
  """{tag: {step: value}} of every event file in `folder` (scalars as
  floats, images as their PNG-decoded shapes, text as str)."""
  found = {}
  for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tensor = tf.make_ndarray(value.tensor)
        plugin = value.metadata.plugin_data.plugin_name
        if plugin == "images":  # [width, height, png...]
          tensor = tuple(tf.io.decode_png(tensor[2]).shape)
        elif plugin == "text":
          tensor = tensor.item().decode()
        elif plugin == "scalars":
          tensor = float(tensor)
        found.setdefault(value.tag, {})[event.step] = tensor
  return found


# -- 1. log files: one plain line per epoch ------------------------------------


class FakeStdout(io.StringIO):

  def __init__(self, tty):
    super().__init__()
    self.tty = tty

  def isatty(self):
    return self.tty


@pytest.mark.parametrize("tty, expected", [(True, 1), (False, 2)])
def test_auto_verbose_is_the_bar_on_a_terminal_else_lines(monkeypatch, tty,
                                                           expected):
  resolve = train_lib._resolve_verbose  # pylint: disable=protected-access
  monkeypatch.setattr(sys, "stdout", FakeStdout(tty))
  assert resolve("auto") == expected
  assert resolve(0) == 0
  with pytest.raises(ValueError, match="train.verbose"):
    resolve(3)


@pytest.mark.slow
def test_training_log_in_a_file_has_one_plain_line_per_epoch(tmp_path):
  proc = run_cli([f"--workdir={tmp_path / 'run'}",
                  "--gin_bindings=EPOCHS = 2",
                  f"--gin_bindings=train.train_split = '{SMALL}'",
                  "--gin_bindings=BUFFER_SIZE = 200"], cwd=str(tmp_path))
  for stream in (proc.stdout, proc.stderr):
    assert not [c for c in CONTROL if c in stream], stream[:2000]
  lines = proc.stdout.splitlines()
  epochs = [l for l in lines if "loss" in l]
  assert len(epochs) == 2, proc.stdout
  assert epochs[0].startswith("Epoch 1/2 (step 4, ")
  assert epochs[1].startswith("Epoch 2/2 (step 8, ")
  assert any(l.startswith("Test accuracy on sklearn_digits/") for l in lines)


# -- 2. the evaluation's progress ----------------------------------------------


def wait_for(stream, text, timeout_s=30):
  """A part that lasts until `text` is in the StringIO `stream` (until its
  progress shows, whatever the machine's speed); returns `text`."""
  deadline = time.time() + timeout_s
  while text not in stream.getvalue():
    assert time.time() < deadline, stream.getvalue()
    time.sleep(0.01)
  return text


def test_part_progress_in_a_log_file_says_start_alive_and_end():
  out = io.StringIO()
  parts = progress.PartProgress(2, title="Job", stream=out, every_s=0.05)
  threads = threading.active_count()
  assert parts("first", wait_for)(out, "running for") == "running for"
  with pytest.raises(KeyError):
    parts("second", {}.__getitem__)("missing")
  lines = out.getvalue().splitlines()
  assert lines[0] == "Job [1/2] first: started"
  assert lines[1].startswith("Job [1/2] first: running for ")
  assert lines[-3].startswith("Job [1/2] first: done in ")
  assert lines[-2] == "Job [2/2] second: started"
  assert lines[-1].startswith("Job [2/2] second: failed after ")
  assert not [c for c in CONTROL if c in out.getvalue()]
  assert threading.active_count() == threads  # No ticker left running.


def test_part_progress_on_a_terminal_draws_a_bar_in_place():
  out = io.StringIO()
  parts = progress.PartProgress(4, title="Job", stream=out, tty=True,
                                 every_s=0.05)
  parts("one", lambda: None)()
  parts("two", wait_for)(out, "2/4 two")
  text = out.getvalue()
  # After one of four parts, a bar of 20 cells has 5 filled.
  assert "\rJob " + "█" * 5 + "░" * 15 + " 2/4 two " in text
  # The end line clears the bar's line first.
  assert text.rsplit("\r\x1b[K", 1)[1].startswith("Job [2/4] two: done in ")


# -- 3. TensorBoard ------------------------------------------------------------


class FakeOptimizer:

  def __init__(self):
    self.iterations = tf.Variable(0, dtype=tf.int64)
    self.learning_rate = tf.Variable(0.5)


class FakeModel:

  def __init__(self):
    self.optimizer = FakeOptimizer()


def test_step_scalars_are_each_steps_own_value(tmp_path):
  """Keras passes running means; the logged values are the steps' own."""
  writer = tf.summary.create_file_writer(str(tmp_path))
  scalars = callbacks.StepScalars(writer, every_steps=2)
  scalars.set_model(FakeModel())
  # Two epochs of 3 steps; the steps' own losses are 1..6.
  losses = iter(range(1, 7))
  for _ in range(2):
    scalars.on_epoch_begin(0)
    seen = []
    for batch in range(3):
      seen.append(next(losses))
      scalars.model.optimizer.iterations.assign_add(1)
      scalars.on_train_batch_end(batch, {"loss": np.mean(seen)})
    scalars.on_epoch_end(0)
  writer.close()
  events = read_events(str(tmp_path))
  assert events["step/loss"] == {2: 2.0, 4: 4.0, 6: 6.0}
  assert events["step/learning_rate"] == {2: 0.5, 4: 0.5, 6: 0.5}


def test_training_logs_step_scalars_and_grids_on_the_step_axis(tmp_path):
  gin_utils.parse(["jem_digits.gin"], ["LEARNING_RATE = 2e-3"])
  workdir = str(tmp_path / "run")
  train_lib.train(workdir=workdir, train_split=SMALL, epochs=2,
                  jit_compile=False, log_every_steps=1, verbose=0)
  events = read_events(os.path.join(workdir, "tensorboard", "train"))
  for name in ("loss", "clf_loss", "px_loss", "accuracy", "energy_data",
               "energy_samples", "learning_rate"):
    assert sorted(events[f"step/{name}"]) == list(range(1, 9)), name
  rates = list(events["step/learning_rate"].values())
  assert rates == [pytest.approx(2e-3)] * 8
  # The epoch's mean of the steps' own values is Keras' epoch value.
  for epoch, steps in ((0, range(1, 5)), (1, range(5, 9))):
    for name in ("loss", "energy_data", "accuracy"):
      assert np.mean([events[f"step/{name}"][s] for s in steps]) == (
          pytest.approx(events[f"epoch_{name}"][epoch], rel=1e-4, abs=1e-5))
  # The buffer grid sits on the same (optimizer-step) axis.
  assert sorted(events["samples/buffer"]) == [4, 8]

  gin.clear_config()
  gin_utils.parse(["jem_digits.gin"])
  off = str(tmp_path / "off")
  train_lib.train(workdir=off, train_split=SMALL, epochs=1,
                  jit_compile=False, log_every_steps=0, verbose=0)
  events = read_events(os.path.join(off, "tensorboard", "train"))
  assert "epoch_loss" in events and not [t for t in events
                                         if t.startswith("step/")]


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
  """The shared trained workdir, evaluated (small settings): (workdir, the
  evaluation dict, what evaluate() printed)."""
  workdir = str(tmp_path_factory.mktemp("evaluated") / "jem")
  shutil.copytree(trained[0], workdir)
  gin.clear_config()
  gin_utils.parse([os.path.join(workdir, "operative_config.gin")], TINY_EVAL)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    result = evaluate.evaluate(workdir=workdir)
  gin.clear_config()
  return workdir, result, printed.getvalue()


def test_evaluation_says_each_part_as_it_starts_and_ends(evaluated):
  lines = [l for l in evaluated[2].splitlines() if ": running for" not in l]
  names = ["independent classifier", "accuracy and calibration",
           "detection threshold", "OOD detection", "robustness (PGD)",
           "distal adversarials", "samples (IS, FID)",
           "results.json and report.md"]
  expected = []
  for i, name in enumerate(names):
    label = f"Evaluation of {evaluated[0]} [{i + 1}/8] {name}: "
    expected += [label + "started", label + "done in"]
  assert [l[:len(e)] for l, e in zip(lines, expected)] == expected, lines
  assert len(lines) == len(expected)


def test_evaluation_reaches_tensorboard_at_the_checkpoints_step(evaluated):
  workdir, result, _ = evaluated
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  step = saved["steps"]  # As training recorded it: 4 epochs of 22 steps.
  assert step == 88
  events = read_events(os.path.join(workdir, "tensorboard", "eval"))
  assert {s for steps in events.values() for s in steps} == {step}
  e = saved["evaluation"]
  expected = {
      "accuracy": e["accuracy"],
      "calibration/ece": e["calibration"]["ece"],
      "judge_test_accuracy": e["judge_test_accuracy"],
      "ood_auroc/log_px/uniform": e["ood"]["auroc"]["log_px"]["uniform"],
      "samples/fresh/fid": e["samples"]["fresh"]["fid"],
      "samples/buffer/inception_score":
          e["samples"]["buffer"]["inception_score"],
      "robustness/linf/undefended/eps_0.2":
          e["robustness"]["linf"]["undefended"]["accuracy"][1],
      "robustness/l2/SGLD_defence/eps_1":
          e["robustness"]["l2"]["SGLD defence"]["accuracy"][1],
      "distal/judge_agrees": e["distal"]["judge_agrees"]}
  for tag, value in expected.items():
    assert events[tag][step] == pytest.approx(value, rel=1e-6), tag
  figures = sorted(os.listdir(os.path.join(workdir, "figures")))
  assert figures and {f"figures/{os.path.splitext(f)[0]}" for f in figures} <= (
      set(events))
  assert events["figures/reliability"][step][-1] in (3, 4)  # RGB(A) image.
  with open(os.path.join(workdir, "report.md")) as f:
    assert events["report"][step] == f.read()
  assert result["checkpoint"].endswith(f"ckpt-{step}")


# -- 4. --mode=compare writes where it is told, and says so -------------------


@pytest.mark.slow
def test_compare_writes_to_output_or_only_prints(evaluated, tmp_path):
  dirs = []
  for name in ("jem", "other"):
    dirs.append(str(tmp_path / name))
    shutil.copytree(evaluated[0], dirs[-1])
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  target = tmp_path / "out" / "table.md"
  proc = run_cli(["--mode=compare", f"--workdirs={','.join(dirs)}",
                  f"--output={target}"], cwd=str(cwd))
  assert "| jem |" in proc.stdout and "| other |" in proc.stdout
  assert target.read_text() == proc.stdout
  assert f"Wrote {target}." in proc.stderr

  folder = tmp_path / "folder"
  proc = run_cli(["--mode=compare", f"--workdirs={','.join(dirs)}",
                  f"--output={folder}"], cwd=str(cwd))
  assert (folder / "comparison.md").read_text() == proc.stdout

  proc = run_cli(["--mode=compare", f"--workdirs={','.join(dirs)}"],
                 cwd=str(cwd))
  assert "| jem |" in proc.stdout
  assert "Not written to a file" in proc.stderr
  assert not os.listdir(cwd)  # Nothing lands in the current folder.


# -- 5. advice that prepares a data set ----------------------------------------


def command_of(message):
  """The indented command line of a "not prepared" message, as argv."""
  lines = [l.strip() for l in message.splitlines() if l.startswith("    ")]
  assert len(lines) == 1, message
  return shlex.split(lines[0])


how_to_prepare = data._how_to_prepare  # pylint: disable=protected-access


class Reached(Exception):
  """The download step was reached."""


def test_advice_for_a_missing_data_set_reaches_the_download(tmp_path,
                                                            monkeypatch):
  with pytest.raises(data.DatasetUnavailableError) as e:
    data.tfds_load("cifar10", "train", data_dir=str(tmp_path), download=False)
  message = str(e.value)
  assert "tfds build" not in message  # It needs apache_beam, not installed.
  argv = command_of(message)
  assert argv[:2] == ["python", "-c"] and len(argv) == 3
  code = compile(argv[2], "<advice>", "exec")  # Valid Python.

  def reached(self, *args, **kwargs):
    raise Reached(args)

  # No internet here: stop at the download that would fetch CIFAR-10.
  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                      reached)
  monkeypatch.setattr(tfds.download.DownloadManager, "download", reached)
  with pytest.raises(Reached, match="cifar-10"):
    exec(code, {})  # pylint: disable=exec-used


def test_advice_quotes_odd_folders_for_the_shell():
  folder = "/tmp/it's a \"folder\""
  argv = command_of(how_to_prepare("cifar10", folder))
  assert f"data_dir={json.dumps(folder)}" in argv[2]
  compile(argv[2], "<advice>", "exec")


@pytest.mark.slow
def test_advice_for_an_embedded_data_set_prepares_it(tmp_path):
  folder = str(tmp_path / "tfds")
  argv = command_of(how_to_prepare("sklearn_digits", folder))
  assert "import ebmkit.data.datasets" in argv[2]
  subprocess.run([sys.executable] + argv[1:], cwd=str(tmp_path), check=True,
                 capture_output=True, timeout=300)
  ds, info = data.tfds_load("sklearn_digits", "train", data_dir=folder,
                            download=False)
  assert info.splits["train"].num_examples == 1437
  assert len(list(ds)) == 1437
