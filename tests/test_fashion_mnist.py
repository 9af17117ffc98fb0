"""Fashion-MNIST: TFDS's own data set prepared offline from IDX files, the
real files (exercised in CI), its OOD suite and a short real-data run."""

import gzip
import os
import struct
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from ebmkit.data import pipeline as data
from ebmkit.data.datasets import idx
from ebmkit.evaluation import ood

REAL_DIR = "/usr/share/datasets/fashion-mnist"


def write_idx(path, array, compress=False, magic=None):
  """An IDX file as LeCun's format defines it: big-endian magic, sizes,
  then the uint8 values."""
  array = np.asarray(array, np.uint8)
  magic = magic if magic is not None else 0x00000800 | array.ndim
  raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I",
                                               *array.shape) + array.tobytes()
  with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
    f.write(raw)


def small_idx_folder(folder, n_train=37, n_test=19, seed=0):
  """Four small IDX files (train images gzip-compressed, as Debian ships
  them; the others plain); returns the arrays written."""
  rng = np.random.default_rng(seed)
  arrays = {"train_data": rng.integers(0, 256, (n_train, 28, 28)),
            "train_labels": rng.integers(0, 10, n_train),
            "test_data": rng.integers(0, 256, (n_test, 28, 28)),
            "test_labels": rng.integers(0, 10, n_test)}
  os.makedirs(folder, exist_ok=True)
  for key, array in arrays.items():
    compress = key == "train_data"
    write_idx(os.path.join(folder, idx.FILES[key] + (".gz" if compress
                                                     else "")),
              array, compress=compress)
  return arrays


def examples(name, split, data_dir):
  ds = tfds.load(name, split=split, data_dir=data_dir, download=False)
  return [(e["image"].numpy(), int(e["label"])) for e in ds]


def no_real_files(monkeypatch):
  """Hides the Debian package's folder and the environment variable."""
  monkeypatch.setattr(idx.SOURCES["fashion_mnist"], "default_dirs",
                      ("/nonexistent/fashion-mnist",))
  monkeypatch.delenv("EBMKIT_FASHION_MNIST_DIR", raising=False)


def test_prepared_from_idx_equals_what_tfds_own_builder_writes(tmp_path,
                                                               monkeypatch):
  no_real_files(monkeypatch)
  arrays = small_idx_folder(tmp_path / "idx")
  ours = str(tmp_path / "ours")
  ds, info = data.tfds_load("fashion_mnist", "train", data_dir=ours,
                            idx_dir=str(tmp_path / "idx"))
  assert info.name == "fashion_mnist" and info.features["label"].names[9] == \
      "Ankle boot"
  assert {s: info.splits[s].num_examples for s in info.splits} == {
      "train": 37, "test": 19}
  # TFDS's own FashionMNIST builder, its download answered with the same
  # (decompressed) files and its example counts set to theirs.
  plain = tmp_path / "plain"
  plain.mkdir()
  files = {}
  for key, array in arrays.items():
    files[key] = str(plain / idx.FILES[key])
    write_idx(files[key], array)
  monkeypatch.setattr(tfds_mnist, "_TRAIN_EXAMPLES", 37)
  monkeypatch.setattr(tfds_mnist, "_TEST_EXAMPLES", 19)
  theirs = str(tmp_path / "theirs")
  with mock.patch.object(tfds.download.DownloadManager,
                         "download_and_extract", lambda self, urls: files):
    tfds.builder("fashion_mnist", data_dir=theirs).download_and_prepare()
  for split in ("train", "test"):
    mine, reference = (examples("fashion_mnist", split, d)
                       for d in (ours, theirs))
    assert len(mine) == len(reference) == len(arrays[f"{split}_labels"])
    for (x1, y1), (x2, y2) in zip(mine, reference):  # Same order, same values.
      np.testing.assert_array_equal(x1, x2)
      assert y1 == y2
  # And they are the files' images, as a set with their labels.
  got = sorted((x.tobytes(), y) for x, y in examples("fashion_mnist", "train",
                                                      ours))
  want = sorted((im.astype(np.uint8)[..., None].tobytes(), int(y)) for im, y
                in zip(arrays["train_data"], arrays["train_labels"]))
  assert got == want


@pytest.mark.parametrize("damage,message", [
    ("truncate", "truncated"),
    ("magic", "not an IDX images file"),
    ("count", "37 images but"),
])
def test_a_damaged_file_is_explained_and_nothing_is_prepared(
    tmp_path, monkeypatch, damage, message):
  no_real_files(monkeypatch)
  folder = tmp_path / "idx"
  arrays = small_idx_folder(folder)
  images = folder / (idx.FILES["train_data"] + ".gz")
  if damage == "truncate":
    raw = gzip.open(images).read()
    with gzip.open(images, "wb") as f:
      f.write(raw[:-100])
  elif damage == "magic":  # A labels file where the images belong.
    write_idx(images, arrays["train_data"], compress=True, magic=0x801)
  else:
    write_idx(folder / idx.FILES["train_labels"], arrays["train_labels"][:30])
  data_dir = tmp_path / "tfds"
  with pytest.raises(data.DatasetUnavailableError, match=message) as e:
    data.tfds_load("fashion_mnist", "train", data_dir=str(data_dir),
                   idx_dir=str(folder))
  assert "Nothing was prepared" in str(e.value)
  assert not tfds.builder("fashion_mnist", data_dir=str(data_dir)).is_prepared()
  leftovers = list((data_dir / "fashion_mnist").rglob("*")) if (
      data_dir / "fashion_mnist").exists() else []
  assert not leftovers


def test_a_gzip_file_cut_short_is_explained(tmp_path):
  path = tmp_path / "train-images-idx3-ubyte.gz"
  write_idx(path, np.zeros((5, 28, 28)), compress=True)
  path.write_bytes(path.read_bytes()[:-20])  # The gzip stream itself cut.
  with pytest.raises(idx.IdxFormatError, match="cannot be read"):
    idx.read(str(path), "images")


def test_the_environment_variable_names_the_folder(tmp_path, monkeypatch):
  no_real_files(monkeypatch)
  small_idx_folder(tmp_path / "idx", n_train=12, n_test=5)
  monkeypatch.setenv("EBMKIT_FASHION_MNIST_DIR", str(tmp_path / "idx"))
  ds, info = data.tfds_load("fashion_mnist", "test",
                            data_dir=str(tmp_path / "tfds"))
  assert info.splits["test"].num_examples == 5 and len(list(ds)) == 5
  # A named folder without the files: said, not silently passed over.
  monkeypatch.setenv("EBMKIT_FASHION_MNIST_DIR", str(tmp_path))
  with pytest.raises(data.DatasetUnavailableError,
                     match="EBMKIT_FASHION_MNIST_DIR.*does not hold"):
    data.tfds_load("fashion_mnist", "test", data_dir=str(tmp_path / "t2"))


def test_without_files_or_network_the_error_says_both_ways(tmp_path,
                                                           monkeypatch):
  no_real_files(monkeypatch)
  monkeypatch.setattr(data, "_network_available", lambda: False)
  with pytest.raises(data.DatasetUnavailableError) as e:
    data.tfds_load("fashion_mnist", "train", data_dir=str(tmp_path))
  message = str(e.value)
  assert "cannot reach the download servers" in message
  assert 'tfds.builder("fashion_mnist"' in message  # Download elsewhere...
  assert "load_dataset.idx_dir" in message  # ...or the IDX files here.
  assert "$EBMKIT_FASHION_MNIST_DIR" in message
  assert "apt-get install dataset-fashion-mnist" in message


def real_files_or_skip():
  """The Debian package's files; CI installs them, so there they must be."""
  if idx.find_files(REAL_DIR) is None:
    if os.environ.get("CI") == "true":
      pytest.fail(f"CI=true but {REAL_DIR} lacks the Fashion-MNIST IDX "
                  f"files: .ci/run installs the Debian package "
                  f"dataset-fashion-mnist.")
    pytest.skip(f"no Fashion-MNIST IDX files in {REAL_DIR} (apt-get install "
                f"dataset-fashion-mnist)")


def test_the_real_files_are_the_standard_fashion_mnist():
  real_files_or_skip()
  arrays = idx.check(idx.find_files(REAL_DIR))
  assert arrays["train_data"].shape == (60000, 28, 28)
  assert arrays["test_data"].shape == (10000, 28, 28)
  # Published facts of the data set: 6,000 training and 1,000 test images
  # per class; the first training images are an ankle boot, two T-shirts, a
  # dress, ... (the order Keras' fashion_mnist.load_data() returns).
  np.testing.assert_array_equal(np.bincount(arrays["train_labels"]),
                                [6000] * 10)
  np.testing.assert_array_equal(np.bincount(arrays["test_labels"]),
                                [1000] * 10)
  np.testing.assert_array_equal(arrays["train_labels"][:10],
                                [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
  np.testing.assert_array_equal(arrays["test_labels"][:10],
                                [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])


def test_ood_suite_sets_have_the_right_shape_range_and_size():
  rng = np.random.default_rng(0)
  x_test = rng.uniform(-1, 1, (50, 28, 28, 1)).astype(np.float32)
  for name in ("digits28", "vflip", "inverted", "uniform", "constant",
               "interp"):
    x = ood.ood_set(name, x_test, 40, seed=3)
    assert x.shape == (40, 28, 28, 1) and x.dtype == np.float32, name
    assert x.min() >= -1.0 and x.max() <= 1.0, name
  flipped = ood.ood_set("vflip", x_test, 40, seed=3)
  inverted = ood.ood_set("inverted", x_test, 40, seed=3)
  originals = {im.tobytes() for im in x_test}
  assert all(im[::-1].tobytes() in originals for im in flipped)
  assert all((-im).tobytes() in originals for im in inverted)


def test_mnist_like_digits_are_drawn_as_mnist_and_are_not_fashion_images():
  digits = ood.ood_set("digits28", np.zeros((1, 28, 28, 1), np.float32), 200,
                       seed=0)
  # MNIST's layout: a 20x20 box centred in 28x28, black (−1) border of 4.
  border = np.concatenate([digits[:, :4].ravel(), digits[:, -4:].ravel(),
                           digits[:, :, :4].ravel(), digits[:, :, -4:].ravel()])
  assert np.all(border == -1.0)
  assert digits.max() > 0.9  # bright strokes
  ink = (digits > 0).mean()
  assert 0.05 < ink < 0.4  # strokes, not filled shapes
  if idx.find_files(REAL_DIR) is not None:
    fashion = idx.read(os.path.join(REAL_DIR, "t10k-images-idx3-ubyte.gz"),
                       "images")[:2000].astype(np.float32) / 127.5 - 1
    nearest = min(np.abs(fashion - d[..., 0]).mean(axis=(1, 2)).min()
                  for d in digits[:20])
    assert nearest > 0.05  # no digit is a Fashion-MNIST image


@pytest.mark.slow
def test_shipped_jem_config_learns_real_fashion_mnist(tmp_path):
  """A few hundred iterations of jem_fashion_mnist.gin on the real data."""
  real_files_or_skip()
  from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top
  from ebmkit.training import train
  gin_utils.parse(["jem_fashion_mnist.gin"], [
      "EPOCHS = 1", "train.train_split = 'train[5000:24200]'",  # 300 iter.
      "train.validation_split = None", "train.test_split = 'test[:2000]'",
      "WARMUP_STEPS = 100", "BUFFER_SIZE = 1000",
      "train.checkpoint_every_steps = 0"])
  results = train.train(workdir=str(tmp_path / "jem"))
  # Chance is 10%; the full run reaches about 90%.
  assert results["test_accuracy"] > 0.7, results


def test_the_lean_backbone_has_the_parameters_counted_by_hand():
  from ebmkit.networks import backbones  # pylint: disable=g-import-not-at-top
  net = backbones.small_convnet(10, widths=(32, 64), strides=(2, 2),
                                pool="flatten", dense_units=(128,))
  out = net(np.zeros((3, 28, 28, 1), np.float32))
  assert out.shape == (3, 10)
  # conv 3·3·1·32+32, conv 3·3·32·64+64, dense 7·7·64·128+128, logits 128·10+10.
  assert net.count_params() == 320 + 18496 + 401536 + 1290
  # The default is unchanged: full-resolution first layer, global pooling.
  default = backbones.small_convnet(10)
  default(np.zeros((1, 8, 8, 1), np.float32))
  assert default.count_params() == (320 + 18496 + 73856 + 1290)
  with pytest.raises(ValueError, match="one stride per width"):
    backbones.small_convnet(10, widths=(32, 64), strides=(2,))
  with pytest.raises(ValueError, match="'average' or 'flatten'"):
    backbones.small_convnet(10, pool="max")


def test_the_dcgan_generator_makes_28x28_images_with_the_counted_weights():
  from ebmkit.gan import networks as gan_networks  # pylint: disable=g-import-not-at-top
  gen = gan_networks.dcgan_generator(latent_dim=64, width=32, start_size=7,
                                     upsamples=2)
  assert gen.output_shape == (None, 28, 28, 1)
  # project 64·7·7·128, bn0 4·6272, up1 4·4·128·64, bn1 4·64, up2 4·4·64·32,
  # bn2 4·32, to_image 3·3·32+1.
  assert gen.count_params() == (401408 + 25088 + 131072 + 256 + 32768 + 128
                                + 289)
  default = gan_networks.dcgan_generator()  # the digits' 8x8, as before
  assert default.output_shape == (None, 8, 8, 1)
  assert default.count_params() == 65536 + 8192 + 131072 + 256 + 577
  disc = gan_networks.dcgan_discriminator(image_shape=(28, 28, 1), width=32)
  assert disc.output_shape == (None, 1)


def test_a_second_tfds_draw_too_big_for_the_test_split_comes_from_train(
    monkeypatch):
  """10,000 held-out MNIST images after 10,000 test ones: MNIST's test split
  has no more, so the second draw is the start of its train split."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  asked = []

  class Info:
    splits = {"test": mock.Mock(num_examples=10000)}

  def fake_load(name, split, supervised=True):
    asked.append(split)
    images = np.zeros((3, 28, 28, 1), np.uint8)
    return tf.data.Dataset.from_tensor_slices({"image": images}), Info()

  monkeypatch.setattr(data, "tfds_load", fake_load)
  ood.tfds_set("mnist", (28, 28, 1), 3, offset=0)
  assert asked[-1] == "test[0:3]"
  ood.tfds_set("mnist", (28, 28, 1), 3, offset=9000)
  assert asked[-1] == "test[9000:9003]"  # Fits beside the first draw.
  ood.tfds_set("mnist", (28, 28, 1), 10000, offset=10000)
  assert asked[-1] == "train[0:10000]"
