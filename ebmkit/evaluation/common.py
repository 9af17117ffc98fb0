"""What the evaluation's parts share: the data as arrays, the held-out
split, the independent classifier and the features of IS/FID, figure paths,
and repeated draws of random quantities (`over_draws`)."""

import os

import numpy as np

from ebmkit import gin_utils
from ebmkit import images
from ebmkit import workdir as workdir_lib
from ebmkit.data import pipeline as data
from ebmkit.evaluation import judge as judge_lib

FEATURE_EXTRACTORS = ("auto", "inception_pool3", "inception_v3",
                      "classifier")
# Samples of IS/FID: 50,000 is the standard count of published numbers
# (Salimans et al. 2016; Heusel et al. 2017) for CIFAR-sized data.
STANDARD_NUM_SAMPLES = 50000
SMALL_DATA_NUM_SAMPLES = 500


def arrays(ds):
  """A finite (images, labels) dataset as two NumPy arrays."""
  xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
  return np.concatenate(xs), np.concatenate(ys)


def logits_fn(model):
  """x ↦ the model's logits in inference mode (what attacks differentiate)."""
  return lambda x: model(x, training=False)["logits"]


def sample_in_chunks(model, n, steps, y=None, chunk=250):
  """`n` fresh SGLD samples (of classes `y` if given), `chunk` chains at a
  time so that memory stays bounded."""
  parts = []
  for start in range(0, n, chunk):
    labels = None if y is None else y[start:start + chunk]
    parts.append(model.sample(min(chunk, n - start), y=labels,
                              steps=steps).numpy())
  return np.concatenate(parts)


def figure_path(workdir, name):
  """Where a figure of the evaluation goes: `<workdir>/figures/<name>`."""
  return workdir_lib.path(workdir, workdir_lib.FIGURES, name)


def save_grid(x, path, columns=None):
  """Saves images `x` as one PNG grid at `path`; returns the path."""
  return images.save_png(path, images.make_grid(
      x, columns=columns, scale=images.default_scale(x.shape[1])))


def rng_of(rng, seed):
  """`rng`, or a new NumPy Generator from `seed` when it is None."""
  return np.random.default_rng(seed) if rng is None else rng


def class_names(dataset, num_classes):
  """The data set's class names (TFDS' label names), else "0", "1", …."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    names = tfds.builder(dataset).info.features["label"].names
    if len(names) == num_classes:
      return [str(n) for n in names]
  except Exception:  # pylint: disable=broad-except
    pass  # A data set TFDS cannot describe here: the class indices serve.
  return [str(c) for c in range(num_classes)]


def default_num_samples(image_shape):
  """Samples of IS/FID: 50,000 (the standard) for images of 32×32 and more,
  else 500 (the 8×8 digits, whose test split has 360 images)."""
  return (STANDARD_NUM_SAMPLES if min(image_shape[:2]) >= 32
          else SMALL_DATA_NUM_SAMPLES)


def held_out_split(x_train, y_train, train_split, validation=None,
                   validation_split=None, fraction=0.1):
  """Labelled data held out from the judge: the validation split if there
  is one, else the last `fraction` of the training split.

  Thresholds and the orientation of OOD scores are chosen on it, so that
  the numbers reported on the test split are not fitted to it.

  Args:
    x_train, y_train: the training split's images and labels.
    train_split: its name.
    validation: (images, labels) of the validation split, or None.
    validation_split: its name.
    fraction: share of the training split carved out without one.

  Returns:
    (x_judge, y_judge: what the judge trains on, x_held, y_held, held_out:
     {"split" (which data, in words), "examples", "seen_by_model"}).
  """
  if validation is not None:
    x_held, y_held = validation
    return (x_train, y_train, x_held, y_held,
            {"split": f"the validation split `{validation_split}`",
             "examples": int(len(x_held)), "seen_by_model": False})
  n = max(1, int(round(fraction * len(x_train))))
  if n >= len(x_train):
    raise ValueError(f"The training split {train_split!r} has "
                     f"{len(x_train)} examples: too few to hold "
                     f"{fraction:g} of them out.")
  return (x_train[:-n], y_train[:-n], x_train[-n:], y_train[-n:],
          {"split": f"the last {100 * fraction:g}% of `{train_split}`",
           "examples": int(n), "seen_by_model": True})


def load_held_out(x_train, y_train, train_split, calibration_split=None,
                  fraction=0.1):
  """`held_out_split` with the configured validation split: the
  given `calibration_split`, else the bound `train.validation_split`, else
  none (the last `fraction` of the training split is carved out)."""
  split = calibration_split or gin_utils.bound("train.validation_split",
                                               None)
  validation = (arrays(data.load_dataset(split=split, training=False))
                if split else None)
  return held_out_split(x_train, y_train, train_split, validation, split,
                        fraction)


def train_judge(x_train, y_train, x_test, y_test, num_classes, workdir,
                epochs=20, learning_rate=1e-3, batch_size=64, width=32):
  """The independent classifier (`<workdir>/eval/judge.keras`, trained once).

  Args:
    x_train, y_train: its training split (images, int labels).
    x_test, y_test: the split its test accuracy is measured on.
    num_classes: classes of the data set.
    workdir: the evaluated workdir.
    epochs: training epochs.
    learning_rate: Adam's learning rate.
    batch_size: training batch size.
    width: filters of its first convolutions.

  Returns:
    (judge_lib.Extractor of the classifier, its test accuracy).
  """
  return judge_lib.classifier_judge(
      x_train, y_train, x_test, y_test, num_classes,
      workdir_lib.path(workdir, workdir_lib.EVAL, workdir_lib.JUDGE),
      epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
      width=width)


def check_extractor(name):
  if name not in FEATURE_EXTRACTORS:
    raise ValueError(f"evaluate.feature_extractor must be 'auto', "
                     f"'inception_pool3', 'inception_v3' or 'classifier', "
                     f"got {name!r}.")


def select_extractor(judge, image_shape, name="auto", fid_network_path=None):
  """The features of IS and FID.

  Args:
    judge: the independent classifier (a judge_lib.Extractor).
    image_shape: (H, W, C) of the data.
    name: "auto" (the standard Inception pool_3 graph if `fid_network_path`
      is given, else Keras' Inception-v3 if its weights are on this machine
      and images have 3 channels, else the judge), "inception_pool3",
      "inception_v3" or "classifier".
    fid_network_path: a local frozen Inception graph (TTUR's
      classify_image_graph_def.pb or TF-GAN's
      inceptionv1_for_inception_score.pb); never downloaded.

  Returns:
    A judge_lib.Extractor.

  Raises:
    ValueError: for another `name`, or "inception_pool3" without a path.
  """
  check_extractor(name)
  if name == "inception_pool3" and not fid_network_path:
    raise ValueError("evaluate.feature_extractor = 'inception_pool3' needs "
                     "evaluate.fid_network_path (a local frozen Inception "
                     "graph).")
  if fid_network_path and name in ("auto", "inception_pool3"):
    return judge_lib.frozen_inception_extractor(fid_network_path)
  if name == "inception_v3" or (
      name == "auto" and image_shape[-1] == 3
      and os.path.isfile(judge_lib.inception_weights_path())):
    return judge_lib.inception_extractor()
  return judge


# Seeds of repeated draws are this far apart, so that a part's own offsets
# (the OOD sets' held-out draw uses seed + 1) never meet another draw's seed.
DRAW_SEED_STRIDE = 1000


def _numeric(value):
  return isinstance(value, float) or (
      isinstance(value, (list, tuple)) and value
      and all(isinstance(v, float) for v in value))


def mean_and_std(results):
  """The first result with every float leaf (and list of floats) replaced by
  its mean over `results`, and a dict of the same nesting holding only their
  standard deviations. Other leaves (ints, strings, paths) are the first's."""
  first = results[0]
  if isinstance(first, dict):
    mean, std = {}, {}
    for key, value in first.items():
      if all(isinstance(r, dict) and key in r for r in results):
        mean[key], s = mean_and_std([r[key] for r in results])
        if s is not None:
          std[key] = s
      else:
        mean[key] = value
    return mean, (std or None)
  if _numeric(first) and all(
      _numeric(r) and np.shape(r) == np.shape(first) for r in results):
    values = np.asarray(results, np.float64)
    if isinstance(first, float):
      return float(values.mean()), float(values.std())
    return values.mean(0).tolist(), values.std(0).tolist()
  return first, None


def over_draws(part, draws, seed, *args, **kwargs):
  """Runs an evaluation part on `draws` independent draws and reports the
  mean with the standard deviation over them.

  Draw i gets `seed + i * DRAW_SEED_STRIDE`. Figures and other non-numeric
  results are the first draw's; with `draws` = 1 the result is the part's
  own, marked as a single draw.

  Args:
    part: an evaluation part taking `seed` (a keyword) and returning a dict.
    draws: independent draws (>= 1).
    seed: the first draw's seed.
    *args, **kwargs: the part's other arguments.

  Returns:
    The part's dict with every float (and list of floats) the mean over the
    draws, plus "draws", "seeds" and, with draws > 1, "std" (the standard
    deviations, in the same nesting).

  Raises:
    ValueError: if `draws` < 1.
  """
  if int(draws) < 1:
    raise ValueError(f"evaluate.draws must be at least 1, got {draws!r}.")
  seeds = [seed + i * DRAW_SEED_STRIDE for i in range(int(draws))]
  results = [part(*args, seed=s, **kwargs) for s in seeds]
  mean, std = mean_and_std(results)
  mean["draws"], mean["seeds"] = len(seeds), seeds
  if len(seeds) > 1:
    mean["std"] = std or {}
  return mean
