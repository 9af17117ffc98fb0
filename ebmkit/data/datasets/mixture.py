"""The 25-Gaussian 2-D mixture, generated and seeded, as a TFDS data set.

The standard toy test of GAN samplers (DRS, Azadi et al. 2019; MH-GAN,
Turner et al. 2019; DOT, Tanaka 2019; DDLS, Che et al. 2020): 25 isotropic
Gaussians with standard deviation 0.05 centred on the 5×5 grid
{−4, −2, 0, 2, 4}², equally weighted. Each example is a point (float32 [2])
and the index of the Gaussian it was drawn from (0..24, row-major over the
grid). Preparing it needs no download: the points come from a NumPy
generator with a fixed seed per split.
"""

import numpy as np
import tensorflow_datasets as tfds

GRID = (-4.0, -2.0, 0.0, 2.0, 4.0)
STD = 0.05
NUM_TRAIN = 20000
NUM_TEST = 5000
SEEDS = {"train": 0, "test": 1}


def means():
  """The 25 mode centres, float32 [25, 2], row-major over the grid."""
  return np.array([(x, y) for x in GRID for y in GRID], np.float32)


def draw(n, seed):
  """(points float32 [n, 2], mode indices int64 [n]) of the mixture."""
  rng = np.random.default_rng(seed)
  modes = rng.integers(0, len(GRID) ** 2, n)
  points = means()[modes] + STD * rng.standard_normal((n, 2))
  return points.astype(np.float32), modes.astype(np.int64)


class GaussianMixture25(tfds.core.GeneratorBasedBuilder):
  """A 5×5 grid of 2-D Gaussians (generated; no download)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "20,000 train (seed 0), 5,000 test (seed 1)."}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "point": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=len(GRID) ** 2),
        }),
        supervised_keys=("point", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples(NUM_TRAIN, SEEDS["train"]),
            "test": self._generate_examples(NUM_TEST, SEEDS["test"])}

  def _generate_examples(self, n, seed):
    points, modes = draw(n, seed)
    for i, (point, mode) in enumerate(zip(points, modes)):
      yield i, {"point": point, "label": mode}
