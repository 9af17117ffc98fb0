"""The replay buffer of persistent SGLD chains (JEM's Algorithm 1)."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ebmkit")
class ReplayBuffer(keras.layers.Layer):
  """A buffer of `size` samples, stored as one non-trainable variable.

  The samples start U(low, high). `draw` takes a batch of chain starts, each
  re-initialised from U(low, high) with probability ρ (`reinit_prob`);
  `write` puts the chains' final samples back into the drawn slots. The buffer
  is model state: it is saved with the model's weights and checkpoints.

  In class-conditional mode (`num_classes` set) the buffer is split into
  `num_classes` equal slices, slice c holding chains for class c.

  Args:
    size: B, the number of stored samples.
    reinit_prob: ρ, probability that a start is drawn fresh from U(low, high).
    num_classes: if set, the buffer is class-conditional with this many slices;
      `size` must be divisible by it.
    data_range: (low, high) of the uniform initialisation.
    seed: int seed for the buffer's `keras.random.SeedGenerator`.
  """

  def __init__(self, size=10000, reinit_prob=0.05, num_classes=None,
               data_range=(-1.0, 1.0), seed=None, **kwargs):
    super().__init__(**kwargs)
    if size < 1:
      raise ValueError(f"ReplayBuffer.size must be >= 1, got {size}.")
    if not 0.0 <= reinit_prob <= 1.0:
      raise ValueError(
          f"ReplayBuffer.reinit_prob (ρ) must be in [0, 1], got {reinit_prob}.")
    if num_classes is not None:
      if num_classes < 1:
        raise ValueError(
            f"ReplayBuffer.num_classes must be >= 1 or None, got {num_classes}.")
      if size % num_classes:
        raise ValueError(
            f"A class-conditional ReplayBuffer needs size divisible by "
            f"num_classes, got size={size} and num_classes={num_classes}; "
            f"use size={size - size % num_classes or num_classes} or "
            f"{size + num_classes - size % num_classes}.")
    low, high = (float(v) for v in data_range)
    if low >= high:
      raise ValueError(f"ReplayBuffer.data_range must be (low, high) with "
                       f"low < high, got {data_range}.")
    self.size = int(size)
    self.reinit_prob = float(reinit_prob)
    self.num_classes = None if num_classes is None else int(num_classes)
    self.data_range = (low, high)
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  @property
  def class_conditional(self):
    return self.num_classes is not None

  @property
  def slice_size(self):
    """Samples per class slice (class-conditional mode), else `size`."""
    return self.size // (self.num_classes or 1)

  def build(self, sample_shape):
    """Creates the buffer for samples of shape `sample_shape` (no batch axis)."""
    sample_shape = tuple(int(d) for d in sample_shape)
    self.samples = self.add_weight(
        shape=(self.size,) + sample_shape,
        initializer=keras.initializers.RandomUniform(
            *self.data_range, seed=self.seed),
        trainable=False,
        autocast=False,
        name="samples",
    )
    self.sample_shape = sample_shape

  def _uniform(self, shape, dtype="float32"):
    return keras.random.uniform(shape, *self.data_range, dtype=dtype,
                                seed=self.seed_generator)

  def draw(self, batch_size, y=None):
    """Draws chain starts.

    Args:
      batch_size: number of starts (a Python int or scalar tensor).
      y: int labels [batch_size]; in class-conditional mode the starts for
        example i come from slice y[i]. Ignored otherwise. Without `y`, a
        class-conditional buffer is drawn from across all slices.

    Returns:
      (starts [batch_size, *sample_shape], slot indices [batch_size] int32).
    """
    if y is not None and self.class_conditional:
      batch_size = tf.shape(y)[0]
      offset = keras.random.randint((batch_size,), 0, self.slice_size,
                                    seed=self.seed_generator)
      indices = tf.cast(y, tf.int32) * self.slice_size + offset
    else:
      indices = keras.random.randint((batch_size,), 0, self.size,
                                     seed=self.seed_generator)
    stored = tf.gather(self.samples.value, indices)
    fresh = self._uniform(tf.shape(stored), stored.dtype)
    reinit = keras.random.uniform((batch_size,), seed=self.seed_generator)
    reinit = tf.reshape(reinit < self.reinit_prob,
                        [-1] + [1] * len(self.sample_shape))
    return tf.where(reinit, fresh, stored), indices

  def write(self, indices, samples):
    """Writes `samples` back into slots `indices` (from `draw`)."""
    samples = tf.cast(samples, self.samples.dtype)
    self.samples.value.scatter_nd_update(
        tf.cast(indices, tf.int32)[:, None], samples)

  def reset(self):
    """Re-initialises every sample from U(low, high)."""
    self.samples.assign(self._uniform(self.samples.shape, self.samples.dtype))

  def call(self, batch_size, y=None):
    return self.draw(batch_size, y=y)

  def get_config(self):
    return {
        **super().get_config(),
        "size": self.size,
        "reinit_prob": self.reinit_prob,
        "num_classes": self.num_classes,
        "data_range": self.data_range,
        "seed": self.seed,
    }
