"""The replay buffer of persistent SGLD chains (JEM's Algorithm 1)."""

import keras
import numpy as np
import tensorflow as tf

from ebmkit.models import replicas


@keras.saving.register_keras_serializable(package="ebmkit")
class ReplayBuffer(keras.layers.Layer):
  """A buffer of `size` samples, stored as one non-trainable variable.

  The samples start U(low, high). `draw` takes a batch of chain starts, each
  re-initialised from U(low, high) with probability ρ (`reinit_prob`);
  `write` puts the chains' final samples back into the drawn slots. The buffer
  is model state: it is saved with the model's weights and checkpoints.

  In class-conditional mode (`num_classes` set) the buffer is split into
  `num_classes` equal slices, slice c holding chains for class c.

  With `init="informative"` (JEM++'s informative initialisation) fresh
  samples come from per-class Gaussians fitted to the training data
  (`fit_informative_init`) instead of U(low, high), clipped to the data range:
  from component c for slice c of a class-conditional buffer, else from a
  uniformly drawn component.

  Args:
    size: B, the number of stored samples.
    reinit_prob: ρ, probability that a start is drawn fresh from U(low, high).
    num_classes: if set, the buffer is class-conditional with this many slices;
      `size` must be divisible by it.
    data_range: (low, high) of the uniform initialisation.
    seed: int seed for the buffer's `keras.random.SeedGenerator`.
    init: "uniform" or "informative".
    init_components: number of Gaussians for the informative initialisation
      (default: `num_classes`; required when the buffer is not
      class-conditional).
    init_covariance: "full" (Cholesky factor per component) or "diagonal".
  """

  def __init__(self, size=10000, reinit_prob=0.05, num_classes=None,
               data_range=(-1.0, 1.0), seed=None, init="uniform",
               init_components=None, init_covariance="full", **kwargs):
    # Chains and stored samples stay float32 under a mixed-precision policy.
    kwargs.setdefault("dtype", "float32")
    # The name `model.summary()` lists its stored samples under.
    kwargs.setdefault("name", "replay_buffer")
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
    if init not in ("uniform", "informative"):
      raise ValueError(f"ReplayBuffer.init must be 'uniform' or "
                       f"'informative', got {init!r}.")
    if init_covariance not in ("full", "diagonal"):
      raise ValueError(f"ReplayBuffer.init_covariance must be 'full' or "
                       f"'diagonal', got {init_covariance!r}.")
    components = init_components or num_classes
    if init == "informative" and not components:
      raise ValueError("An informative ReplayBuffer needs init_components "
                       "(the number of classes) or num_classes.")
    self.init = init
    self.init_components = None if components is None else int(components)
    self.init_covariance = init_covariance
    self.size = int(size)
    self.reinit_prob = float(reinit_prob)
    self.num_classes = None if num_classes is None else int(num_classes)
    self.data_range = (low, high)
    self.seed = seed
    # Under tf.distribute each replica draws its own numbers.
    self.seed_generator = replicas.SeedGenerator(seed)

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
    if self.init == "informative":
      dim, k = int(np.prod(sample_shape)), self.init_components
      scale_shape = (k, dim, dim) if self.init_covariance == "full" else (
          k, dim)
      self.init_mean = self.add_weight(
          shape=(k, dim), initializer="zeros", trainable=False,
          autocast=False, name="init_mean")
      self.init_scale = self.add_weight(
          shape=scale_shape, initializer="zeros", trainable=False,
          autocast=False, name="init_scale")

  def compute_output_shape(self, sample_shape):
    """Shape of `draw`'s chain starts (what `model.summary()` shows)."""
    return (None,) + tuple(sample_shape)

  def _uniform(self, shape, dtype="float32"):
    return keras.random.uniform(shape, *self.data_range, dtype=dtype,
                                seed=self.seed_generator)

  def fresh(self, n, y=None):
    """n new chain starts: U(low, high), or the informative Gaussians.

    Args:
      n: number of starts.
      y: optional int components/classes [n] for the informative init.
    """
    if self.init == "uniform":
      return self._uniform((n,) + self.sample_shape)
    if y is None:
      y = keras.random.randint((n,), 0, self.init_components,
                               seed=self.seed_generator)
    dim = int(np.prod(self.sample_shape))
    z = keras.random.normal((n, dim), seed=self.seed_generator)
    scale = self.init_scale.value
    if self.init_covariance == "full":
      # Every component's L·z, then each start picks its own: K·n·D values,
      # never K·D·D per start.
      noise = tf.einsum("kij,nj->kni", scale, z)
      noise = tf.gather_nd(noise, tf.stack(
          [tf.cast(y, tf.int32), tf.range(n)], axis=1))
    else:
      noise = tf.gather(scale, y) * z
    x = tf.gather(self.init_mean.value, y) + noise
    x = tf.clip_by_value(x, *self.data_range)
    return tf.reshape(x, (-1,) + self.sample_shape)

  def fit_informative_init(self, images, labels, eps=1e-4):
    """Fits one Gaussian per class to training images, then resets the buffer.

    Args:
      images: array [n, *sample_shape] in the data range.
      labels: int array [n] in [0, init_components).
      eps: added to the covariance's diagonal to keep it positive definite.
    """
    if self.init != "informative":
      raise ValueError("fit_informative_init needs init='informative'.")
    images = np.asarray(images, np.float64).reshape(len(images), -1)
    labels = np.asarray(labels).astype(int)
    k = self.init_components
    means = np.zeros((k, images.shape[1]))
    full = self.init_covariance == "full"
    scales = np.zeros((k,) + ((images.shape[1],) * (2 if full else 1)))
    for c in range(k):
      members = images[labels == c]
      if len(members) < 2:
        raise ValueError(f"Class {c} has {len(members)} training images; the "
                         "informative initialisation needs at least 2.")
      means[c] = members.mean(0)
      if full:
        cov = np.cov(members, rowvar=False) + eps * np.eye(images.shape[1])
        scales[c] = np.linalg.cholesky(cov)
      else:
        scales[c] = np.sqrt(members.var(0) + eps)
    self.init_mean.assign(means.astype(np.float32))
    self.init_scale.assign(scales.astype(np.float32))
    self.reset()

  def draw(self, batch_size, y=None):
    """Draws chain starts.

    Args:
      batch_size: number of starts (a Python int or scalar tensor).
      y: int labels [batch_size]; in class-conditional mode the starts for
        example i come from slice y[i]. Ignored otherwise. Without `y`, a
        class-conditional buffer is drawn from across all slices.

    Returns:
      (starts [batch_size, *sample_shape], slot indices [batch_size] int32).
      In a replica context of `tf.distribute` training the starts come from
      this replica's shard of the buffer (`ebmkit.replicas`), and the slots
      are the shard's.
    """
    store, size, slice_size = replicas.chain_store(self)
    if y is not None and self.class_conditional:
      batch_size = tf.shape(y)[0]
      offset = keras.random.randint((batch_size,), 0, slice_size,
                                    seed=self.seed_generator)
      indices = tf.cast(y, tf.int32) * slice_size + offset
    else:
      indices = keras.random.randint((batch_size,), 0, size,
                                     seed=self.seed_generator)
    stored = tf.gather(store, indices)
    if self.init == "uniform":
      fresh = self._uniform(tf.shape(stored), stored.dtype)
    else:
      fresh = self.fresh(batch_size, y if self.class_conditional else None)
    reinit = keras.random.uniform((batch_size,), seed=self.seed_generator)
    reinit = tf.reshape(reinit < self.reinit_prob,
                        [-1] + [1] * len(self.sample_shape))
    return tf.where(reinit, fresh, stored), indices

  def stored(self, n, y=None):
    """n stored samples read as they are: the evaluation's stand-in for
    chain samples.

    Draws no random numbers, re-initialises nothing and writes nothing back,
    so it leaves the buffer and the random streams as they were.

    Args:
      n: number of samples (a Python int or scalar tensor).
      y: optional int labels [n]; in class-conditional mode sample i comes
        from slice y[i]. Ignored otherwise.

    Returns:
      Samples [n, *sample_shape] from evenly spaced slots (of the whole
      buffer, or of slice y[i]).
    """
    if y is not None and self.class_conditional:
      n = tf.shape(y)[0]
      offset = tf.range(n, dtype=tf.int64) * self.slice_size // tf.cast(
          n, tf.int64)
      indices = tf.cast(y, tf.int64) * self.slice_size + offset
    else:
      n = tf.cast(n, tf.int64)
      indices = tf.range(n) * self.size // n
    return tf.gather(self.samples.value, indices)

  def write(self, indices, samples):
    """Writes `samples` back into slots `indices` (from `draw`)."""
    samples = tf.cast(samples, self.samples.dtype)
    replicas.scatter_update(replicas.chain_store(self)[0],
                            tf.cast(indices, tf.int32)[:, None], samples)

  def reset(self, chunk=1000):
    """Re-initialises every sample (U(low, high) or the informative init)."""
    if self.init == "uniform":
      self.samples.assign(self._uniform(self.samples.shape,
                                        self.samples.dtype))
      return
    for start in range(0, self.size, chunk):
      n = min(chunk, self.size - start)
      y = None
      if self.class_conditional:
        y = tf.range(start, start + n) // self.slice_size
      self.samples[start:start + n].assign(self.fresh(n, y))

  def get_config(self):
    return {
        **super().get_config(),
        "size": self.size,
        "reinit_prob": self.reinit_prob,
        "num_classes": self.num_classes,
        "data_range": self.data_range,
        "seed": self.seed,
        "init": self.init,
        "init_components": self.init_components,
        "init_covariance": self.init_covariance,
    }
