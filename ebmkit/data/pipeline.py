"""Data: every data set comes through tensorflow-datasets (`tfds.load`)."""

import dataclasses
import json
import os
import shlex
import socket

import gin
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ebmkit import gin_utils
from ebmkit.data import datasets as embedded_datasets
from ebmkit.data.datasets import idx
from ebmkit.models import energy_model as models

DEFAULT_DATASET = "sklearn_digits"


class DatasetUnavailableError(RuntimeError):
  """A data set is not prepared locally and cannot be downloaded now."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model needs to know about a data set."""
  name: str
  image_shape: tuple
  num_classes: int
  split_sizes: dict


def _data_dir(data_dir):
  return os.path.expanduser(data_dir or os.environ.get(
      "TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets")))


def _network_available(host="storage.googleapis.com", port=443, timeout=3.0):
  """Whether a TFDS download host answers; a quick check before a download.

  Without it an offline download retries for minutes before failing.
  """
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


def prepare_command(name, data_dir):
  """A shell command that downloads and prepares a TFDS data set.

  TFDS' Python API rather than `tfds build`: in TFDS 4.9 that command
  imports apache_beam, which ebmkit does not install, and it does not know
  ebmkit's embedded data sets.

  Args:
    name: TFDS name, e.g. "cifar10".
    data_dir: the folder it is prepared in.

  Returns:
    `python -c '...'`, quoted for a POSIX shell.
  """
  imports = ("import ebmkit.data.datasets, tensorflow_datasets as tfds"
             if name in embedded_datasets.EMBEDDED
             else "import tensorflow_datasets as tfds")
  # JSON strings are Python string literals too (quotes, backslashes).
  code = (f"{imports}; tfds.builder({json.dumps(name)}, data_dir="
          f"{json.dumps(data_dir)}).download_and_prepare()")
  return f"python -c {shlex.quote(code)}"


def _how_to_prepare(name, data_dir):
  return (
      f"To prepare it, on a machine with internet access run\n"
      f"    {prepare_command(name, data_dir)}\n"
      f"and copy {os.path.join(data_dir, name)} to this machine (or point "
      f"--gin_bindings=\"load_dataset.data_dir='...'\" / $TFDS_DATA_DIR at a "
      f"folder that holds it). Data sets that need a manual download say "
      f"which files; pass their folder as download_and_prepare(download_"
      f"config=tfds.download.DownloadConfig(manual_dir='...')).")


def _how_to_prepare_from_idx(name):
  source = idx.SOURCES[name]
  package = (f" (Debian: `apt-get install {source.debian_package}` puts "
             f"them in {source.default_dirs[0]}, found without "
             f"configuration)" if source.debian_package else "")
  return (f"Or, offline: name a folder holding the four standard IDX files "
          f"({', '.join(idx.FILES.values())}, each optionally .gz) with "
          f"--gin_bindings=\"load_dataset.idx_dir='...'\" or "
          f"${source.env_var}{package}; ebmkit then prepares TFDS's own "
          f"{name!r} from them.")


def _prepare_from_idx(name, data_dir, idx_dir):
  """Prepares an IDX-backed data set from local files if they are found.

  Returns:
    Whether it was prepared.

  Raises:
    DatasetUnavailableError: a named folder lacks the files, or a file is
      damaged (nothing is written then).
  """
  try:
    folder = idx.locate(name, idx_dir)
    if folder is None:
      return False
    print(f"Preparing TFDS data set {name!r} in {data_dir} from the IDX "
          f"files in {folder} (once; about 15 s).", flush=True)
    idx.prepare(name, folder, data_dir)
  except (FileNotFoundError, idx.IdxFormatError) as e:
    raise DatasetUnavailableError(f"{e} Nothing was prepared.") from None
  return True


def tfds_load(name, split, data_dir=None, download=True, supervised=True,
              idx_dir=None):
  """`tfds.load` with a clear error when the data cannot be had.

  TFDS's MNIST-family data sets (`idx.SOURCES`: fashion_mnist, mnist) are
  prepared from their four IDX files when these are on this machine (the
  folder `idx_dir`, else the data set's environment variable, else where
  Debian's package puts them), with TFDS's own builder: the same data set a
  download gives, without the network. Otherwise they download as usual.

  Args:
    name: TFDS name, e.g. "sklearn_digits" or "cifar10".
    split: TFDS split string, e.g. "train" or "train[:90%]".
    data_dir: where TFDS keeps prepared data (default: $TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    download: whether to download and prepare a missing data set. Embedded
      data sets (shipped inside an installed package) are always prepared.
    supervised: yield (image, label) pairs; else TFDS's feature dicts (for
      data sets without supervised keys, e.g. CelebA as an OOD set).
    idx_dir: a folder with the four IDX files of an MNIST-family data set.

  Returns:
    (tf.data.Dataset, tfds.core.DatasetInfo).

  Raises:
    DatasetUnavailableError: the data set is not prepared in `data_dir` and
      cannot be downloaded (download disabled or no network), or its named
      IDX files are missing or damaged.
  """
  data_dir = _data_dir(data_dir)
  embedded = name in embedded_datasets.EMBEDDED
  try:
    return tfds.load(name, split=split, data_dir=data_dir, download=False,
                     as_supervised=supervised, with_info=True)
  except AssertionError:  # TFDS: "could not find data in ...".
    pass
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetUnavailableError(
        f"TFDS has no data set named {name!r}. Embedded data sets: "
        f"{', '.join(embedded_datasets.EMBEDDED)}; see `tfds.list_builders()` "
        f"for the others.") from e
  except ValueError as e:
    if "corresponds to no data" in str(e):
      raise ValueError(
          f"The split {split!r} of {name!r} holds no examples: check the "
          f"slice (e.g. 'train[:90%]', 'train[5000:]').") from None
    if "Unknown split" in str(e) or "split" in str(e).lower():
      raise ValueError(f"Bad split {split!r} for {name!r}: "
                       f"{str(e).splitlines()[0]}") from None
    raise
  if name in idx.SOURCES and _prepare_from_idx(name, data_dir, idx_dir):
    return tfds.load(name, split=split, data_dir=data_dir, download=False,
                     as_supervised=supervised, with_info=True)
  if not embedded:
    where = f"Data set {name!r} is not prepared in {data_dir}"
    offline = (" " + _how_to_prepare_from_idx(name)
               if name in idx.SOURCES else "")
    if not download:
      raise DatasetUnavailableError(
          f"{where}, and downloading is off (download=False). "
          + _how_to_prepare(name, data_dir) + offline)
    if not _network_available():
      raise DatasetUnavailableError(
          f"{where}, and this machine cannot reach the download servers. "
          + _how_to_prepare(name, data_dir) + offline)
  try:
    return tfds.load(name, split=split, data_dir=data_dir, download=True,
                     as_supervised=supervised, with_info=True)
  except (OSError, ConnectionError) as e:
    raise DatasetUnavailableError(
        f"Downloading data set {name!r} into {data_dir} failed ({e}). "
        + _how_to_prepare(name, data_dir)
        + (" " + _how_to_prepare_from_idx(name) if name in idx.SOURCES
           else "")) from e


def dataset_info(name=DEFAULT_DATASET, data_dir=None):
  """Image shape, number of classes and split sizes of a TFDS data set."""
  try:
    builder = tfds.builder(name, data_dir=_data_dir(data_dir))
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetUnavailableError(f"TFDS has no data set named {name!r}.") \
        from e
  info = builder.info
  # The input feature: "image", or the first supervised key of a data set
  # of other examples (the 2-D mixture's "point").
  key = "image" if "image" in info.features else info.supervised_keys[0]
  image_shape = tuple(info.features[key].shape)
  num_classes = info.features["label"].num_classes
  sizes = {split: info.splits[split].num_examples for split in info.splits}
  return DatasetInfo(name, image_shape, num_classes, sizes)


def configured(parameter, default):
  """The value gin binds to `load_dataset.<parameter>` (macros evaluated)."""
  return gin_utils.bound(f"load_dataset.{parameter}", default)


def configured_name():
  """The data set name bound to `load_dataset.name` (or the default)."""
  return configured("name", DEFAULT_DATASET)


def to_unit_range(image):
  """uint8 pixels 0..255 to floats in [-1, 1]."""
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def augment_image(image, pad=4, flip=True):
  """The reference's augmentation: reflect-pad, random crop back, h-flip."""
  shape = tf.shape(image)
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
  image = tf.image.random_crop(padded, shape)
  return tf.image.random_flip_left_right(image) if flip else image


def preprocess(image, label, data_noise=0.0, augment=False, flip=True):
  """uint8 image to [-1, 1] (augmented if asked) plus N(0, data_noise²)
  noise; label to int32."""
  if augment:
    image = augment_image(image, flip=flip)
  # uint8 pixels are scaled; float examples (2-D points) are taken as they are.
  x = (to_unit_range(image) if image.dtype == tf.uint8
       else tf.cast(image, tf.float32))
  if data_noise:
    x += data_noise * tf.random.normal(tf.shape(x))
  return x, tf.cast(label, tf.int32)


def labelled_mask(labels, labels_per_class, seed=0):
  """Which examples keep their label: `labels_per_class` of each class.

  The kept examples are the first of each class in a seeded permutation.

  Raises:
    ValueError: if a class has fewer examples than `labels_per_class`.
  """
  labels = np.asarray(labels)
  order = np.random.RandomState(seed).permutation(len(labels))
  mask = np.zeros(len(labels), bool)
  for c in np.unique(labels):
    members = order[labels[order] == c]
    if len(members) < labels_per_class:
      raise ValueError(
          f"labels_per_class={labels_per_class} but class {c} has only "
          f"{len(members)} examples in this split.")
    mask[members[:labels_per_class]] = True
  return mask


def _semi_supervised(ds, pipeline, batch_size, labels_per_class, seed):
  """Zips all images (for p(x)) with the cycled labelled subset."""
  labels = np.array([int(y) for y in ds.map(lambda _, y: y)
                     .as_numpy_iterator()])
  mask = labelled_mask(labels, labels_per_class, seed)
  if mask.sum() < batch_size:
    raise ValueError(
        f"labels_per_class={labels_per_class} keeps {int(mask.sum())} "
        f"labelled examples, fewer than one batch ({batch_size}): raise "
        f"labels_per_class or lower the batch size.")
  keep = tf.constant(mask)
  labelled = ds.enumerate().filter(lambda i, _: keep[i]).map(
      lambda _, example: example)
  return _two_terms(pipeline(ds), pipeline(labelled, repeat=True))


def _two_terms(images, labelled):
  """({"images": x, "labelled_images": x_l}, y_l) batches: the p(x) term's
  images beside the cross-entropy term's own labelled batch."""
  return tf.data.Dataset.zip(images, labelled).map(
      lambda every, lab: ({models.IMAGES: every[0],
                           models.LABELLED_IMAGES: lab[0]}, lab[1]))


@gin.configurable
def load_dataset(name=DEFAULT_DATASET, split="train", batch_size=64,
                 training=True, data_noise=0.03, data_dir=None, download=True,
                 shuffle_buffer=10000, seed=None, with_info=False,
                 augment=False, flip=True, labels_per_class=None,
                 labels_seed=0, cache=True, idx_dir=None,
                 classifier_batch_size=None, classifier_augment=None,
                 eval_data_noise=0.0):
  """Batches of (image in [-1, 1], label) from a TFDS data set.

  Args:
    name: TFDS data set name.
    split: TFDS split.
    batch_size: examples per batch.
    training: shuffle, add data noise and drop the last partial batch (so
      every step sees the same shape and XLA compiles once).
    data_noise: σ_data, std of Gaussian noise added to training images
      (JEM: 0.03); not added when `training` is False (see
      `eval_data_noise`).
    data_dir: TFDS data folder (default $TFDS_DATA_DIR or ~/tensorflow_datasets).
    download: download and prepare a missing data set (see `tfds_load`).
    shuffle_buffer: size of the shuffle buffer.
    seed: shuffle seed.
    with_info: also return the data set's `DatasetInfo`.
    augment: when training, reflect-pad by 4, crop back at random and flip
      horizontally (the JEM reference's CIFAR augmentation).
    flip: whether augmentation flips (off for SVHN, whose digits are not
      mirror-symmetric).
    labels_per_class: when training, semi-supervised batches as the JEM
      reference draws them: the p(x) batch from every image of the split,
      the cross-entropy batch (a full `batch_size`) from a labelled subset of
      this many examples per class, cycled (reshuffled each cycle). Batches
      are then ({"images": x, "labelled_images": x_l}, y_l); an epoch is one
      pass over all images.
    labels_seed: seed of the choice of labelled examples.
    cache: keep the decoded uint8 split in memory after the first pass, so
      later epochs skip reading and decoding (CIFAR-10's 45,000 images: 138
      MB); the random augmentation and noise stay per epoch.
    idx_dir: for fashion_mnist and mnist, a folder holding the four standard
      IDX files to prepare TFDS's data set from offline (see `tfds_load`).
    classifier_batch_size, classifier_augment: when training and either is
      set, the cross-entropy term gets its own batch, as SADA-JEM trains: a
      second, independently shuffled pass over the split with this many
      examples (default `batch_size`) and this augmentation (default
      `augment`), while the p(x) term's batch (`batch_size`, `augment`) is
      cycled. Batches are then ({"images": x, "labelled_images": x_l}, y_l)
      and an epoch is one pass of the classifier's batches.
    eval_data_noise: std of the noise added when `training` is False (0:
      none). The JEM reference's test transform adds σ_data noise to the
      images it reports accuracy on; `recipes/jem_reference.gin` sets it.

  Returns:
    A `tf.data.Dataset` of (float32 images [b, H, W, C], int32 labels [b])
    (see `labels_per_class` for semi-supervised batches), and its
    `DatasetInfo` if `with_info`.
  """
  if batch_size < 1:
    raise ValueError(f"load_dataset.batch_size must be >= 1, got {batch_size}.")
  if data_noise < 0:
    raise ValueError(
        f"load_dataset.data_noise (σ_data) must be >= 0, got {data_noise}.")
  ds, _ = tfds_load(name, split, data_dir=data_dir, download=download,
                    idx_dir=idx_dir)
  if eval_data_noise < 0:
    raise ValueError(f"load_dataset.eval_data_noise must be >= 0, got "
                     f"{eval_data_noise}.")
  noise = data_noise if training else eval_data_noise

  def pipeline(ds, repeat=False, batch=batch_size, augmented=augment,
               shuffle_seed=seed):
    if cache:
      ds = ds.cache()
    if training:
      ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed,
                      reshuffle_each_iteration=True)
    ds = ds.map(lambda image, label: preprocess(
        image, label, noise, augment=training and augmented, flip=flip),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=training)
    return ds.repeat() if repeat else ds

  separate = classifier_batch_size is not None or (
      classifier_augment is not None)
  if training and separate:
    if labels_per_class:
      raise ValueError(
          "load_dataset.labels_per_class and classifier_batch_size/"
          "classifier_augment both give the classifier its own batch: set "
          "one of them.")
    if classifier_batch_size is not None and classifier_batch_size < 1:
      raise ValueError(f"load_dataset.classifier_batch_size must be >= 1, "
                       f"got {classifier_batch_size}.")
    clf = pipeline(ds, batch=classifier_batch_size or batch_size,
                   augmented=augment if classifier_augment is None
                   else classifier_augment,
                   shuffle_seed=None if seed is None else seed + 1)
    ds = _two_terms(pipeline(ds, repeat=True), clf)
  elif training and labels_per_class:
    ds = _semi_supervised(ds, pipeline, batch_size, labels_per_class,
                          labels_seed)
  else:
    ds = pipeline(ds)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return (ds, dataset_info(name, data_dir)) if with_info else ds
