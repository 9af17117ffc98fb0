"""TFDS's own MNIST-family data sets, prepared offline from the IDX files.

TFDS's `fashion_mnist` (and `mnist`) builders download four IDX files
(LeCun's format: a big-endian header, then uint8 pixels or labels) and write
the TFDS data set from them. Where the download servers cannot be reached,
the same four files often can: Debian's package `dataset-fashion-mnist`
installs them under /usr/share/datasets/fashion-mnist (re-compressed, so
TFDS's download checksums do not match, but the decompressed contents are
the standard ones). `prepare` checks the files and then runs TFDS's own
builder on them: the same name, version, features, splits and example order
as a download gives.
"""

import gzip
import os
import shutil
import struct
import tempfile

import numpy as np

IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions: [n, rows, cols]
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension: [n]

# The four standard file names (each may also end in .gz), by TFDS's keys.
FILES = {
    "train_data": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_data": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class IdxSource:
  """Where an IDX-backed TFDS data set's files can be found."""

  def __init__(self, env_var, default_dirs, debian_package=None):
    self.env_var = env_var
    self.default_dirs = tuple(default_dirs)
    self.debian_package = debian_package


SOURCES = {
    "fashion_mnist": IdxSource(
        "EBMKIT_FASHION_MNIST_DIR", ["/usr/share/datasets/fashion-mnist"],
        debian_package="dataset-fashion-mnist"),
    "mnist": IdxSource("EBMKIT_MNIST_DIR", ["/usr/share/datasets/mnist"]),
}


class IdxFormatError(ValueError):
  """An IDX file is not what its name says (wrong magic, short, too long)."""


def _open(path):
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read(path, kind):
  """The array in an IDX file, checked against its header.

  Args:
    path: an IDX file, optionally gzip-compressed (name ending in .gz).
    kind: "images" (uint8 [n, rows, cols]) or "labels" (uint8 [n]).

  Returns:
    The uint8 array.

  Raises:
    IdxFormatError: wrong magic number, or fewer or more bytes than the
      header announces.
  """
  magic = IMAGES_MAGIC if kind == "images" else LABELS_MAGIC
  name = os.path.basename(path)
  try:
    with _open(path) as f:
      raw = f.read()
  except (OSError, EOFError) as e:  # gzip: truncated or not gzip at all.
    raise IdxFormatError(f"{path}: cannot be read ({e}); the file is damaged "
                         f"or not what its name says. Replace it.") from None
  if len(raw) < 4 or struct.unpack(">I", raw[:4])[0] != magic:
    found = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    raise IdxFormatError(
        f"{path}: not an IDX {kind} file (magic number "
        f"{found if found is None else hex(found)}, expected {hex(magic)}). "
        f"Is {name} the right file?")
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise IdxFormatError(f"{path}: truncated inside its header.")
  shape = struct.unpack(f">{ndim}I", raw[4:header])
  expected = int(np.prod(shape))
  if len(raw) - header != expected:
    raise IdxFormatError(
        f"{path}: the header announces shape {shape} ({expected} bytes) but "
        f"the file holds {len(raw) - header}: it is "
        f"{'truncated' if len(raw) - header < expected else 'too long'}. "
        f"Replace it with a complete copy.")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def find_files(folder):
  """The four standard files in `folder` ({TFDS key: path}), each with or
  without .gz, or None if any is missing."""
  found = {}
  for key, stem in FILES.items():
    for candidate in (stem, stem + ".gz"):
      path = os.path.join(folder, candidate)
      if os.path.isfile(path):
        found[key] = path
        break
    else:
      return None
  return found


def locate(name, idx_dir=None):
  """The folder holding `name`'s four IDX files, or None.

  Looks in `idx_dir` if given (then only there), else in the folder named
  by the data set's environment variable, else in the known system folders
  (Debian's package).

  Raises:
    FileNotFoundError: `idx_dir` (or the environment variable) names a
      folder without the four files.
  """
  source = SOURCES[name]
  named = idx_dir or os.environ.get(source.env_var)
  if named:
    named = os.path.expanduser(named)
    if find_files(named) is None:
      raise FileNotFoundError(
          f"{named} (from {'load_dataset.idx_dir' if idx_dir else '$' + source.env_var}"
          f") does not hold {name}'s four IDX files "
          f"({', '.join(FILES.values())}, each optionally .gz).")
    return named
  for folder in source.default_dirs:
    if find_files(folder) is not None:
      return folder
  return None


def check(files):
  """Reads and checks all four files; returns their arrays by TFDS key.

  Raises:
    IdxFormatError: a damaged file, or images and labels of different
      counts or image sizes other than 28×28.
  """
  arrays = {key: read(path, "images" if key.endswith("data") else "labels")
            for key, path in files.items()}
  for split in ("train", "test"):
    images, labels = arrays[f"{split}_data"], arrays[f"{split}_labels"]
    if images.shape[1:] != (28, 28):
      raise IdxFormatError(f"{files[split + '_data']}: images are "
                           f"{images.shape[1:]}, expected 28×28.")
    if len(images) != len(labels):
      raise IdxFormatError(
          f"{files[split + '_data']} holds {len(images)} images but "
          f"{files[split + '_labels']} {len(labels)} labels.")
  return arrays


def prepare(name, idx_dir, data_dir):
  """Writes TFDS's data set `name` into `data_dir` from the IDX files in
  `idx_dir`, with TFDS's own builder.

  Every file is checked first, so a damaged one fails before anything is
  written; TFDS writes into a temporary folder and renames it only when the
  whole data set is written, so an interruption leaves nothing half-made.
  The split sizes are read from the files (the real ones: 60,000 and 10,000,
  TFDS's own counts).

  Raises:
    IdxFormatError: as `check`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from ebmkit import compat  # pylint: disable=g-import-not-at-top
  files = find_files(idx_dir)
  if files is None:
    raise FileNotFoundError(f"{idx_dir} does not hold {name}'s four IDX "
                            f"files ({', '.join(FILES.values())}).")
  arrays = check(files)
  counts = {split: len(arrays[f"{split}_labels"]) for split in ("train",
                                                                "test")}
  builder = tfds.builder(name, data_dir=data_dir)
  scratch = tempfile.mkdtemp(prefix=f"ebmkit_{name}_idx_")
  try:
    plain = {}
    for key, path in files.items():
      # TFDS's example generator reads uncompressed IDX files (what its
      # download manager extracts).
      plain[key] = os.path.join(scratch, FILES[key])
      with _open(path) as src, open(plain[key], "wb") as dst:
        shutil.copyfileobj(src, dst)

    def split_generators(dl_manager):
      del dl_manager  # The files are local.
      return [tfds.core.SplitGenerator(
          name=split, gen_kwargs=dict(
              num_examples=counts[split], data_path=plain[f"{split}_data"],
              label_path=plain[f"{split}_labels"]))
              for split in ("train", "test")]

    # TFDS's builder with its download step answered from the local files;
    # its example generator, features and writer (which fixes the example
    # order) are its own.
    compat.replace_split_generators(builder, split_generators)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        try_download_gcs=False))
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return builder
