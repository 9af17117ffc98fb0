"""tools/sampler_bias.py: its distances by hand, and a small run."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "tools"))
import sampler_bias  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.pop(0)


def test_sliced_wasserstein_in_one_dimension_is_the_sorted_difference():
  a = np.array([[0.0], [1.0], [5.0]])
  b = np.array([[2.0], [0.5], [1.0]])
  # Sorted: (0, 1, 5) against (0.5, 1, 2): |−0.5| + 0 + 3 = 3.5, mean 7/6;
  # every direction in 1-D is ±1, which leaves the distance as it is.
  assert sampler_bias.sliced_wasserstein(a, b, directions=8) == (
      pytest.approx(3.5 / 3))
  assert sampler_bias.sliced_wasserstein(a, a) == 0.0


def test_mode_statistics_by_hand():
  means = np.array([[0.0, 0.0], [10.0, 0.0]])
  std = 1.0
  # Three points at the first mode (distances 0, 1, 1), one far from both.
  x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, -1.0], [5.0, 5.0]])
  tv, off, spread = sampler_bias.mode_stats(x, means, std)
  assert tv == pytest.approx(0.5 * (abs(1.0 - 0.5) + abs(0.0 - 0.5)))
  assert off == pytest.approx(0.25)
  assert spread == pytest.approx(np.sqrt((0 + 1 + 1) / 3 / 2))


def test_a_small_run_ranks_the_samplers_on_the_gaussian(monkeypatch):
  """200 chains, 150 steps, on the 256-D Gaussian: calibrated ULA, MALA and
  HMC get within twice the floor; SGLD at JEM's noise ratio stays far away
  (it collapses towards the mode); JEM's own α = 1 diverges."""
  monkeypatch.setattr(sampler_bias, "CHECKPOINTS", (150,))
  rows = sampler_bias.measure(sampler_bias.Target("gauss256"), n=200)
  swd = {r["sampler"].split(" (")[0].split(",")[0]: r["swd"] for r in rows}
  floor = rows[0]["swd"]
  for name in ("ULA", "MALA", "HMC"):
    assert swd[name] < 2 * floor, (name, swd)
  jem_ratio = [r["swd"] for r in rows if "noise ratio" in r["sampler"]][0]
  assert jem_ratio > 5 * floor
  assert [r["swd"] for r in rows if "JEM's settings" in r["sampler"]] == [
      None]
