"""Out-of-distribution sets and the JEM paper's three OOD scores."""

import numpy as np
import tensorflow as tf

from ebmkit.data import pipeline as data

# OOD sets made from the in-distribution test images or from nothing.
SYNTHETIC = ("interp", "uniform", "constant", "photos", "digits28", "vflip",
             "inverted")
DEFAULT_SETS = {
    "sklearn_digits": ("interp", "uniform", "constant", "photos"),
    # The literature's suite for Fashion-MNIST: MNIST (where TFDS can get
    # it; else skipped with the reason), MNIST-like strokes that are always
    # here, transformed test images and noise.
    "fashion_mnist": ("mnist", "digits28", "vflip", "inverted", "uniform",
                      "constant", "interp"),
    "cifar10": ("svhn_cropped", "cifar100", "celeb_a", "interp"),
    "cifar100": ("svhn_cropped", "cifar10", "celeb_a", "interp"),
    "svhn_cropped": ("cifar10", "cifar100", "celeb_a", "interp"),
}
SCORES = ("log_px", "max_prob", "neg_grad_norm")


def _to_shape(images, image_shape):
  """uint8/float images [n, h, w, c] in [0, 255] to image_shape in [-1, 1]."""
  images = tf.convert_to_tensor(images, tf.float32)
  height, width, channels = image_shape
  images = tf.image.resize(images, (height, width), method="area")
  if images.shape[-1] == 3 and channels == 1:
    images = tf.image.rgb_to_grayscale(images)
  elif images.shape[-1] == 1 and channels == 3:
    images = tf.image.grayscale_to_rgb(images)
  return (images / 127.5 - 1.0).numpy()


def synthetic_set(name, test_images, n, seed=0):
  """An OOD set made here.

  interp: the pixel average of two random in-distribution test images;
  uniform: U(−1, 1) noise; constant: images of one random value each;
  photos: random patches of scikit-learn's two sample photographs, resized
  to the input size (grey-scale for 1-channel data);
  digits28: scikit-learn's embedded 8×8 handwritten digits drawn as MNIST
  draws its digits (scaled to a 20×20 box, centred with a 4-pixel border in
  28×28; bright strokes on black), at the input's size and channels;
  vflip: in-distribution test images upside down;
  inverted: in-distribution test images with brightness inverted
  (255 − pixel, i.e. −x in [−1, 1]).
  """
  rng = np.random.default_rng(seed)
  test_images = np.asarray(test_images, np.float32)
  shape = test_images.shape[1:]
  if name == "interp":
    i, j = rng.integers(0, len(test_images), (2, n))
    return 0.5 * (test_images[i] + test_images[j])
  if name == "uniform":
    return rng.uniform(-1, 1, (n,) + shape).astype(np.float32)
  if name == "constant":
    return np.broadcast_to(rng.uniform(-1, 1, (n, 1, 1, 1)),
                           (n,) + shape).astype(np.float32).copy()
  if name == "photos":
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    photos = datasets.load_sample_images().images
    patches = []
    for _ in range(n):
      photo = photos[rng.integers(len(photos))]
      size = int(rng.integers(16, 65))
      top = rng.integers(0, photo.shape[0] - size)
      left = rng.integers(0, photo.shape[1] - size)
      patch = tf.image.resize(photo[top:top + size, left:left + size],
                              shape[:2], method="area")
      patches.append(patch.numpy())
    return _to_shape(np.stack(patches), shape)
  if name == "digits28":
    return _to_shape(_mnist_like_digits(rng.integers(0, 1797, n)), shape)
  if name == "vflip":
    return test_images[rng.integers(0, len(test_images), n), ::-1].copy()
  if name == "inverted":
    return -test_images[rng.integers(0, len(test_images), n)]
  raise ValueError(f"Unknown synthetic OOD set {name!r}; known: {SYNTHETIC}.")


def _mnist_like_digits(indices):
  """scikit-learn's digits `indices` as uint8-range [k, 28, 28, 1] images
  laid out as MNIST's: the 8×8 image scaled to 20×20, a 4-pixel border."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits().images[indices] * (255.0 / 16.0)
  boxes = tf.image.resize(digits[..., None].astype(np.float32), (20, 20),
                          method="bilinear").numpy()
  return np.clip(np.pad(boxes, ((0, 0), (4, 4), (4, 4), (0, 0))), 0, 255)


def tfds_set(name, image_shape, n, split="test", offset=0):
  """Images offset … offset + n of a TFDS split, resized to `image_shape`.

  A second draw (offset > 0) that the split cannot hold beside the first
  (e.g. 10,000 held-out images after 10,000 of MNIST's test split) comes
  from the start of the train split instead, which is disjoint from it.
  """
  _, info = data.tfds_load(name, split, supervised=False)
  if offset and offset + n > info.splits[split].num_examples:
    split, offset = "train", 0
  ds, _ = data.tfds_load(name, f"{split}[{offset}:{offset + n}]",
                         supervised=False)
  images = [example["image"].numpy() for example in ds.take(n)]
  if len({im.shape for im in images}) == 1:  # One resize for the batch.
    return _to_shape(np.stack(images), image_shape)
  return np.concatenate([_to_shape(im[None], image_shape) for im in images])


def ood_set(name, images, n, seed=0, offset=0):
  """n images of the OOD set `name`.

  Args:
    name: a SYNTHETIC name or a TFDS data set name.
    images: in-distribution images (interp averages them; their shape is
      the output's).
    n: images wanted.
    seed: seed of the synthetic sets.
    offset: first image taken from a TFDS set's test split (a second,
      disjoint draw starts after the first).

  Returns:
    float32 [n, H, W, C] in [−1, 1].
  """
  if name in SYNTHETIC:
    return synthetic_set(name, images, n, seed)
  return tfds_set(name, np.asarray(images).shape[1:], n, offset=offset)


def energy_score_name(temperature):
  """The OOD score's name for the energy score at `temperature`."""
  return f"neg_energy_T{float(temperature):g}"


def neg_free_energy(logits, temperature=1.0):
  """T·LogSumExp(f(x)/T): minus the free energy E(x; f, T) = −T·LSE(f(x)/T)
  of Liu et al. ("Energy-based Out-of-distribution Detection", NeurIPS
  2020), higher = more in-distribution. With T = 1 it is JEM's log p(x)
  up to log Z."""
  t = float(temperature)
  if not t > 0:
    raise ValueError(f"The energy score's temperature must be > 0, got "
                     f"{temperature!r}.")
  return t * tf.reduce_logsumexp(tf.cast(logits, tf.float32) / t, axis=-1)


def energy_score(classifier, x, temperature=1.0, batch_size=256):
  """Liu et al.'s energy OOD score of any Keras classifier, as NumPy.

  Args:
    classifier: a Keras model whose output is the logits f(x) [n, K] (or a
      dict holding "logits", as an `ebmkit.EnergyModel`'s does).
    x: inputs, as the classifier takes them.
    temperature: T > 0 (Liu et al. use T = 1).
    batch_size: inputs per forward pass.

  Returns:
    float32 [n]: T·LogSumExp(f(x)/T), higher = more in-distribution (minus
    their energy E(x; f, T)).
  """
  out = []
  for i in range(0, len(x), batch_size):
    logits = classifier(tf.convert_to_tensor(x[i:i + batch_size]),
                        training=False)
    if isinstance(logits, dict):
      logits = logits["logits"]
    out.append(neg_free_energy(logits, temperature).numpy())
  return np.concatenate(out) if out else np.zeros([0], np.float32)


def score_batch(model, x, energy_temperatures=()):
  """The three OOD scores (higher = more in-distribution) of a batch, as
  tensors: log_px = −E(x); max_prob = max_y p(y|x) (classifiers only);
  neg_grad_norm = −‖∂ log p(x)/∂x‖₂; and for each T in
  `energy_temperatures` (classifiers only) Liu et al.'s energy score
  T·LSE(f(x)/T), named `energy_score_name(T)`. Shared by the evaluation and
  the exported `ood_score` signature."""
  x = tf.convert_to_tensor(x, tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(x)
    out = model(x, training=False)
    total = tf.reduce_sum(out["log_px"])
  grad = tape.gradient(total, x)
  norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]))
  result = {"log_px": out["log_px"], "neg_grad_norm": -norm}
  if "log_pyx" in out:
    result["max_prob"] = tf.reduce_max(tf.exp(out["log_pyx"]), axis=-1)
    for t in energy_temperatures:
      result[energy_score_name(t)] = neg_free_energy(out["logits"], t)
  return result


def scores(model, x, batch_size=256, energy_temperatures=()):
  """`score_batch` over an array, in batches; NumPy arrays per score."""
  temperatures = tuple(float(t) for t in energy_temperatures)
  batch_scores = tf.function(
      lambda xb: score_batch(model, xb, temperatures), reduce_retracing=True)
  parts = [batch_scores(tf.constant(x[i:i + batch_size], tf.float32))
           for i in range(0, len(x), batch_size)]
  return {k: np.concatenate([p[k].numpy() for p in parts]) for k in parts[0]}
