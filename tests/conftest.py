"""Shared test set-up: quiet TensorFlow, a private TFDS folder, clean gin."""

import os
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
  from ebmkit import checkpoints, data, experiment, gin_utils, train  # pylint: disable=g-import-not-at-top
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
