"""The 8×8 handwritten digits that ship inside scikit-learn, as a TFDS data set.

1,797 grey-scale images of the digits 0-9 (UCI "Optical Recognition of
Handwritten Digits", 4×4-block counts 0..16). Preparing it needs no download.
The train/test split is fixed: a permutation with seed 0, the last 360 images
(20%) for test.
"""

import numpy as np
import tensorflow_datasets as tfds

NUM_TEST = 360
SPLIT_SEED = 0


def _images_and_labels():
  from sklearn import datasets  # imported lazily: only preparing needs it.
  digits = datasets.load_digits()
  # Counts 0..16 to 0..255.
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  order = np.random.RandomState(SPLIT_SEED).permutation(len(images))
  return images[order, :, :, None], digits.target[order].astype(np.int64)


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8×8 handwritten digits (embedded; no download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Fixed split: 1,437 train, 360 test."}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    images, labels = _images_and_labels()
    cut = len(images) - NUM_TEST
    return {
        "train": self._generate_examples(images[:cut], labels[:cut], 0),
        "test": self._generate_examples(images[cut:], labels[cut:], cut),
    }

  def _generate_examples(self, images, labels, offset):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield offset + i, {"image": image, "label": label}
