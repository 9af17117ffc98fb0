"""Shared test set-up: quiet TensorFlow, a private TFDS folder, clean gin."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests prepare data sets in a folder of their own, never the user's.
os.environ["TFDS_DATA_DIR"] = os.path.join(tempfile.gettempdir(),
                                           "ebmkit_test_tfds")

import gin  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()
