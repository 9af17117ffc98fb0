"""The replay buffer: re-initialisation, write-back, class slices."""

import numpy as np
import pytest
import tensorflow as tf

from ebmkit.models import buffer


def make(size=100, **kwargs):
  b = buffer.ReplayBuffer(size=size, seed=0, **kwargs)
  b.build((2,))
  return b


def test_initialised_uniform_in_data_range():
  b = make(size=5000)
  x = b.samples.numpy()
  assert x.shape == (5000, 2)
  assert x.min() >= -1 and x.max() <= 1
  # U(-1, 1): mean 0, variance 1/3; 5σ tolerances for 10,000 values.
  assert abs(x.mean()) < 5 * np.sqrt(1 / 3 / 10000)
  assert abs(x.var() - 1 / 3) < 0.015


def test_reinitialised_fraction_is_rho():
  rho = 0.3
  b = make(size=1000, reinit_prob=rho)
  b.samples.assign(tf.fill([1000, 2], 5.0))  # Outside U(-1, 1): marks stored.
  fresh = 0
  draws = 40
  for _ in range(draws):
    starts, _ = b.draw(500)
    fresh += int(np.sum(starts.numpy()[:, 0] != 5.0))
  n = draws * 500
  # Binomial(n, ρ): 5 standard deviations.
  assert abs(fresh / n - rho) < 5 * np.sqrt(rho * (1 - rho) / n)


def test_rho_zero_and_one():
  b = make(size=50, reinit_prob=0.0)
  b.samples.assign(tf.fill([50, 2], 5.0))
  assert np.all(b.draw(64)[0].numpy() == 5.0)
  b = make(size=50, reinit_prob=1.0)
  b.samples.assign(tf.fill([50, 2], 5.0))
  starts = b.draw(64)[0].numpy()
  assert np.all(np.abs(starts) <= 1.0)


def test_draw_returns_the_stored_samples_of_its_slots():
  b = make(size=20, reinit_prob=0.0)
  b.samples.assign(np.arange(40, dtype=np.float32).reshape(20, 2))
  starts, slots = b.draw(8)
  np.testing.assert_array_equal(starts.numpy()[:, 0], 2 * slots.numpy())


def test_write_back_lands_in_the_drawn_slots():
  b = make(size=30)
  before = b.samples.numpy().copy()
  slots = tf.constant([3, 7, 29])
  new = tf.constant([[10.0, 11.0], [12.0, 13.0], [14.0, 15.0]])
  b.write(slots, new)
  after = b.samples.numpy()
  np.testing.assert_array_equal(after[[3, 7, 29]], new.numpy())
  untouched = np.setdiff1d(np.arange(30), [3, 7, 29])
  np.testing.assert_array_equal(after[untouched], before[untouched])


def test_class_conditional_draws_from_the_label_slice():
  b = make(size=40, num_classes=4, reinit_prob=0.0)
  assert b.slice_size == 10
  y = tf.constant([0, 1, 2, 3] * 500)
  _, slots = b.draw(2000, y=y)
  slots = slots.numpy()
  np.testing.assert_array_equal(slots // 10, y.numpy())
  # Every slot of each slice is reachable: 500 draws per slice of 10 miss a
  # given slot with probability 0.9^500 ≈ 1e-23.
  assert set(slots) == set(range(40))


def test_class_conditional_needs_divisible_size():
  with pytest.raises(ValueError, match="divisible by num_classes.*size=40"):
    buffer.ReplayBuffer(size=42, num_classes=10)


@pytest.mark.parametrize("kwargs, message", [
    ({"reinit_prob": 1.5}, r"reinit_prob \(ρ\) must be in \[0, 1\]"),
    ({"size": 0}, "size must be >= 1"),
    ({"data_range": (1, -1)}, "data_range"),
])
def test_bad_settings_are_rejected(kwargs, message):
  with pytest.raises(ValueError, match=message):
    buffer.ReplayBuffer(**kwargs)


def test_config_round_trip():
  b = buffer.ReplayBuffer(size=60, reinit_prob=0.1, num_classes=3,
                          data_range=(0, 1), seed=5)
  c = buffer.ReplayBuffer.from_config(b.get_config())
  assert (c.size, c.reinit_prob, c.num_classes, c.data_range, c.seed) == (
      60, 0.1, 3, (0.0, 1.0), 5)
