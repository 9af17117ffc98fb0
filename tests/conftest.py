"""Shared test set-up: quiet TensorFlow, a private TFDS folder, clean gin;
and what several test files use (`from conftest import ...`): the command
line in a fresh process, and the bindings that shrink runs for tests."""

import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests prepare data sets in a folder of their own, never the user's.
# One folder per pytest-xdist worker: two workers preparing the same data set
# at once would write over each other.
os.environ["TFDS_DATA_DIR"] = os.path.join(
    tempfile.gettempdir(),
    "ebmkit_test_tfds_" + os.environ.get("PYTEST_XDIST_WORKER", "main"))

import gin  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top


# The digits JEM config shrunk to 4 steps an epoch, no step checkpoints,
# quiet (tests of training's promises and recovery).
SMALL_DIGITS = ["train.train_split = 'train[:256]'", "BUFFER_SIZE = 200",
                "train.checkpoint_every_steps = 0", "train.verbose = 0"]

# An evaluation of the digits cut to seconds (shorter chains, fewer
# samples); the parts themselves run as in a real one.
TINY_EVAL = [
    "evaluate.sample_steps = 20", "evaluate.num_samples = 64",
    "evaluate.pgd_examples = 32", "evaluate.linf_eps = (0.0, 0.2)",
    "evaluate.l2_eps = (0.0, 1.0)", "evaluate.pgd_steps = 3",
    "evaluate.defense_steps = 2", "evaluate.defense_duplicates = 2",
    "evaluate.distal_per_class = 1", "evaluate.distal_steps = 30",
    "evaluate.judge_epochs = 2", "evaluate.ood_examples = 64"]


def compiled_digits_model(bindings=()):
  """The digits JEM config's model with `bindings`, compiled with Adam and
  its optimizer built: what checkpoints hold, without training."""
  import keras  # pylint: disable=g-import-not-at-top
  from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top
  from ebmkit.training import experiment
  gin.clear_config()
  gin_utils.parse(["jem_digits.gin"], list(bindings))
  model = experiment.configured_model()
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  model.optimizer.build(model.trainable_variables)
  return model


def run_module(argv, cwd, mock_examples=None, check=False):
  """`python -m argv[0] argv[1:]` in a fresh process, its output captured
  (a pipe, not a terminal, as `> log.txt` is not; unbuffered).

  Args:
    argv: the module, then its arguments.
    cwd: the folder it runs in.
    mock_examples: run under `tfds.testing.mock_data` with this many examples
      per split (CIFAR cannot be downloaded here).
    check: fail the test, with the output's end, unless it exits with 0.

  Returns:
    The `subprocess.CompletedProcess` (stdout and stderr as text).
  """
  code = "import runpy, sys; sys.argv = sys.argv[1:]; "
  if mock_examples:
    code += ("import tensorflow_datasets as tfds; "
             f"m = tfds.testing.mock_data(num_examples={mock_examples}); "
             "m.__enter__(); ")
  code += "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
  proc = subprocess.run([sys.executable, "-c", code] + list(argv), cwd=cwd,
                        env=dict(os.environ, PYTHONUNBUFFERED="1"),
                        capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc


def run_ebmkit(args, cwd):
  """`python -m ebmkit.run args` (see `run_module`), which must succeed."""
  return run_module(["ebmkit.run"] + list(args), cwd, check=True)


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  """JEM on the digits for 4 epochs (about 10 s), shared by the tests of
  evaluation and export: (workdir, restored model, 100 test images, labels).
  """
  from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top
  from ebmkit.training import checkpoints
  from ebmkit.data import pipeline as data
  from ebmkit.training import experiment
  from ebmkit.training import train
  workdir = str(tmp_path_factory.mktemp("jem"))
  gin.clear_config()
  gin_utils.parse(["jem_digits.gin"], ["EPOCHS = 4", "BUFFER_SIZE = 500",
                                       "train.checkpoint_every_steps = 0"])
  train.train(workdir=workdir)
  model = experiment.build_model(data.dataset_info())
  checkpoints.restore_model(model, workdir)
  x, y = next(iter(data.load_dataset(split="test", batch_size=360,
                                     training=False)))
  gin.clear_config()
  return workdir, model, x.numpy()[:100], y.numpy()[:100]
