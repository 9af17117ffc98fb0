"""Data through TFDS: the embedded digits, preprocessing, clear errors."""

import collections

import numpy as np
import pytest
from sklearn import datasets as sk_datasets
import tensorflow as tf
import tensorflow_datasets as tfds

from ebmkit.data import pipeline as data


def raw_split(split):
  ds, _ = data.tfds_load("sklearn_digits", split)
  images, labels = zip(*[(x.numpy(), int(y)) for x, y in ds])
  return np.stack(images), np.array(labels)


def test_digits_split_is_fixed_and_covers_sklearn_exactly():
  train_x, train_y = raw_split("train")
  test_x, test_y = raw_split("test")
  assert train_x.shape == (1437, 8, 8, 1) and test_x.shape == (360, 8, 8, 1)
  info = data.dataset_info("sklearn_digits")
  assert info.image_shape == (8, 8, 1) and info.num_classes == 10
  assert info.split_sizes == {"train": 1437, "test": 360}
  # Every scikit-learn image (counts 0..16 scaled to 0..255) appears once.
  digits = sk_datasets.load_digits()
  expected = collections.Counter(
      (np.round(im * 255 / 16).astype(np.uint8).tobytes(), int(t))
      for im, t in zip(digits.images, digits.target))
  got = collections.Counter(
      (im[..., 0].tobytes(), int(t)) for im, t in
      zip(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])))
  assert got == expected
  # The documented split: permutation with seed 0, the last 360 for test.
  order = np.random.RandomState(0).permutation(1797)[-360:]
  assert collections.Counter(test_y) == collections.Counter(
      digits.target[order])
  expected_test = np.round(digits.images[order] * 255 / 16).astype(np.uint8)
  assert sorted(im[..., 0].tobytes() for im in test_x) == sorted(
      im.tobytes() for im in expected_test)


def test_eval_batches_are_scaled_to_unit_range():
  x, y = next(iter(data.load_dataset(split="test", batch_size=360,
                                     training=False)))
  x = x.numpy()
  assert x.shape == (360, 8, 8, 1) and x.dtype == np.float32
  assert x.min() == -1.0 and x.max() == 1.0  # 0 → -1 and 255 → 1 exactly.
  assert set(np.unique(y.numpy())) == set(range(10))


def test_training_batches_have_fixed_size():
  ds = data.load_dataset(split="train", batch_size=100)
  sizes = {int(x.shape[0]) for x, _ in ds}
  assert sizes == {100} and int(ds.cardinality()) == 14  # 1,437 // 100.


def test_preprocess_adds_gaussian_noise_of_data_noise_std():
  tf.random.set_seed(0)
  image = tf.fill([64, 64, 1], tf.constant(51, tf.uint8))  # 51/127.5-1 = -0.6
  x, label = data.preprocess(image, tf.constant(3, tf.int64), data_noise=0.1)
  residual = x.numpy() + 0.6
  # 4,096 values: the std within 5%, the mean within 5 standard errors.
  assert abs(residual.std() - 0.1) < 0.005
  assert abs(residual.mean()) < 5 * 0.1 / 64
  assert label.dtype == tf.int32


def test_other_tfds_datasets_go_through_the_same_path():
  with tfds.testing.mock_data(num_examples=12):
    ds, info = data.load_dataset("mnist", split="train", batch_size=4,
                                 with_info=True)
    x, y = next(iter(ds))
  assert x.shape == (4, 28, 28, 1) and info.num_classes == 10
  assert y.dtype == tf.int32


def test_missing_dataset_without_download_is_explained(tmp_path):
  with pytest.raises(data.DatasetUnavailableError) as e:
    data.tfds_load("mnist", "train", data_dir=str(tmp_path), download=False)
  message = str(e.value)
  assert "'mnist'" in message and str(tmp_path) in message
  assert "tfds.builder(\"mnist\"" in message and "tfds build" not in message


def test_missing_dataset_offline_is_explained(tmp_path, monkeypatch):
  monkeypatch.setattr(data, "_network_available", lambda: False)
  with pytest.raises(data.DatasetUnavailableError,
                     match="cannot reach the download servers"):
    data.tfds_load("mnist", "train", data_dir=str(tmp_path), download=True)


def test_unknown_dataset_name_is_explained():
  with pytest.raises(data.DatasetUnavailableError, match="no data set named"):
    data.tfds_load("no_such_digits", "train")


def test_semi_supervised_steps_carry_a_full_labelled_batch():
  # The reference's two pipelines: p(x) from every image, the cross-entropy
  # from a full batch of the labelled subset (7 per class), cycled.
  ds = data.load_dataset(split="train", batch_size=32, labels_per_class=7,
                         data_noise=0.0)
  everything, true_labels = (t.numpy() for t in next(iter(data.load_dataset(
      split="train", batch_size=1437, training=False))))
  steps = list(ds)
  assert len(steps) == 1437 // 32  # An epoch is one pass over all images.
  images = np.concatenate([x["images"].numpy() for x, _ in steps])
  labelled = np.concatenate([x["labelled_images"].numpy() for x, _ in steps])
  labels = np.concatenate([y.numpy() for _, y in steps])
  assert all(len(y) == 32 for _, y in steps)  # 32 labelled per step, not ~0.2.
  assert len(np.unique(images.reshape(len(images), -1), axis=0)) == len(images)
  subset, index = np.unique(labelled.reshape(len(labelled), -1), axis=0,
                            return_index=True)
  assert len(subset) == 70  # Cycled over exactly the 70 labelled images.
  np.testing.assert_array_equal(np.bincount(labels[index], minlength=10),
                                [7] * 10)
  assert labels.min() >= 0
  # The labelled images are training images with their true labels.
  flat = everything.reshape(len(everything), -1)
  for image, label in zip(subset, labels[index]):
    match = np.flatnonzero(np.abs(flat - image).max(axis=1) < 1e-6)
    assert len(match) and label in true_labels[match]


def test_a_labelled_subset_smaller_than_a_batch_is_explained():
  with pytest.raises(ValueError, match="fewer than one batch"):
    data.load_dataset(split="train", batch_size=64, labels_per_class=2)


def test_labels_per_class_larger_than_a_class_is_explained():
  with pytest.raises(ValueError, match="labels_per_class=500 but class"):
    data.labelled_mask(np.array([0, 0, 1]), 500)


@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_is_a_crop_of_the_reflect_padded_image(flip):
  tf.random.set_seed(1)
  image = tf.reshape(tf.range(32 * 32 * 3) % 251, (32, 32, 3))
  padded = np.pad(image.numpy(), ((4, 4), (4, 4), (0, 0)), mode="reflect")
  windows = [padded[i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
  if flip:
    windows += [w[:, ::-1] for w in windows]
  seen_flip = False
  for _ in range(20):
    out = data.augment_image(image, flip=flip).numpy()
    matches = [k for k, w in enumerate(windows) if np.array_equal(out, w)]
    assert matches, "not a crop of the reflect-padded image"
    seen_flip |= matches[0] >= 81
  assert seen_flip == flip  # 20 draws without a flip: chance 1e-6.


def test_eval_data_noise_adds_noise_of_its_std_to_evaluation_batches():
  clean = data.load_dataset(split="test", batch_size=360, training=False)
  noisy = data.load_dataset(split="test", batch_size=360, training=False,
                            eval_data_noise=0.1)
  diff = next(iter(noisy))[0].numpy() - next(iter(clean))[0].numpy()
  # 23,040 values: the std within 2%, the mean within 5 standard errors.
  assert diff.std() == pytest.approx(0.1, rel=0.02)
  assert abs(diff.mean()) < 5 * 0.1 / np.sqrt(diff.size)
  with pytest.raises(ValueError, match="eval_data_noise must be >= 0"):
    data.load_dataset(split="test", training=False, eval_data_noise=-1.0)
