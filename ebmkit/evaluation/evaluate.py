"""Evaluation of a trained workdir: computes every part of the JEM paper's
results section, one function per part, and writes results.json, the figures
and (through `render`) report.md."""

import os
import time

import gin
import numpy as np
import tensorflow as tf

from ebmkit import data
from ebmkit import experiment
from ebmkit import gin_utils
from ebmkit import images
from ebmkit import inference
from ebmkit import workdir as workdir_lib
from ebmkit.evaluation import adversarial
from ebmkit.evaluation import judge as judge_lib
from ebmkit.evaluation import metrics
from ebmkit.evaluation import ood
from ebmkit.evaluation import plots
from ebmkit.evaluation import render

FEATURE_EXTRACTORS = ("auto", "inception_pool3", "inception_v3",
                      "classifier")
# Samples of IS/FID: 50,000 is the standard count of published numbers
# (Salimans et al. 2016; Heusel et al. 2017) for CIFAR-sized data.
STANDARD_NUM_SAMPLES = 50000
SMALL_DATA_NUM_SAMPLES = 500


def _arrays(ds):
  xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
  return np.concatenate(xs), np.concatenate(ys)


def _logits_fn(model):
  return lambda x: model(x, training=False)["logits"]


def _sample_in_chunks(model, n, steps, y=None, chunk=250):
  parts = []
  for start in range(0, n, chunk):
    labels = None if y is None else y[start:start + chunk]
    parts.append(model.sample(min(chunk, n - start), y=labels,
                              steps=steps).numpy())
  return np.concatenate(parts)


def _figure(workdir, name):
  return workdir_lib.path(workdir, workdir_lib.FIGURES, name)


def _grid(x, path, columns=None):
  return images.save_png(path, images.make_grid(
      x, columns=columns, scale=images.default_scale(x.shape[1])))


def _rng(rng, seed):
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
  validation = (_arrays(data.load_dataset(split=split, training=False))
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


def _check_extractor(name):
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
  _check_extractor(name)
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


def classification(model, x_test, y_test, workdir, num_bins=15):
  """Test accuracy and calibration (ECE, reliability diagram).

  Args:
    model: a classifying EnergyModel.
    x_test, y_test: test images and int labels.
    workdir: the evaluated workdir (figures/reliability.png).
    num_bins: ECE bins (equal width).

  Returns:
    {"accuracy": ..., "calibration": {...}}.
  """
  log_pyx = np.concatenate([
      model(tf.constant(x_test[i:i + 500]))["log_pyx"].numpy()
      for i in range(0, len(x_test), 500)])
  probs = np.exp(log_pyx)
  bins = metrics.calibration_bins(probs, y_test, num_bins)
  ece = metrics.expected_calibration_error(probs, y_test, num_bins)
  as_list = lambda values: [None if np.isnan(v) else float(v) for v in values]
  return {"accuracy": float(np.mean(probs.argmax(-1) == y_test)),
          "calibration": {
              "ece": ece, "num_bins": num_bins,
              "bin_accuracy": as_list(bins["accuracy"]),
              "bin_confidence": as_list(bins["confidence"]),
              "bin_count": bins["count"].tolist(),
              "figure": plots.reliability_diagram(
                  bins, ece, _figure(workdir, "reliability.png"))}}


def detection(model, x_held, y_held, x_test, y_test, held_out,
              target_fpr=0.05, calibration_examples=2000, batch_size=500):
  """The detection threshold on E(x, y), calibrated on held-out data and
  measured on the test split.

  Args:
    model: a classifying EnergyModel.
    x_held, y_held: held-out labelled images (the threshold's calibration).
    x_test, y_test: test images and labels (where it is measured).
    held_out: `held_out_split`'s description of them (for the report).
    target_fpr: false-positive rate the threshold is calibrated for.
    calibration_examples: held-out examples used at most.
    batch_size: examples per forward pass on the test split.

  Returns:
    {"calibration": description, "calibration_examples", "target_fpr",
     "threshold", "calibration_tpr", "test_fpr", "test_tpr", "test_examples"}.
  """
  n = min(calibration_examples, len(x_held))
  calibrated = inference.calibrate_detection(model, x_held[:n], y_held[:n],
                                             target_fpr)
  energies = np.concatenate([
      inference.class_energies(model, x_test[i:i + batch_size])
      for i in range(0, len(x_test), batch_size)])
  positive = np.zeros(energies.shape, bool)
  positive[np.arange(len(y_test)), y_test] = True
  accepted = energies <= calibrated["threshold"]
  return {"calibration": held_out, "calibration_examples": int(n),
          "target_fpr": float(target_fpr),
          "threshold": calibrated["threshold"],
          "calibration_tpr": calibrated["true_positive_rate"],
          "test_fpr": float(np.mean(accepted[~positive])),
          "test_tpr": float(np.mean(accepted[positive])),
          "test_examples": int(len(x_test))}


def ood_detection(model, x_test, dataset, workdir, sets=None, examples=500,
                  seed=0, x_held=None, held_out=None):
  """AUROC of each OOD score (ood.SCORES) of the test set against OOD sets.

  Every score is defined so that higher means more in-distribution (as in
  the paper), and its AUROC is reported with that sign. A score can point
  the other way for a model (IGEBM's gradient norm: AUROC near 0), so with
  held-out images the sign is also chosen on held-out data, per score and
  set: the held-out images against a second, disjoint draw of the OOD set
  (`metrics.oriented_auroc`), and the AUROC of the oriented score on the
  test data is reported next to the defined one.

  Args:
    model: an EnergyModel.
    x_test: in-distribution test images.
    dataset: the data set's name (picks the default OOD sets).
    workdir: the evaluated workdir (figures/ood_<score>.png).
    sets: OOD set names (TFDS names or interp/uniform/constant/photos);
      default per data set (ood.DEFAULT_SETS).
    examples: examples per OOD set (and of the test set) scored.
    seed: seed of the synthetic sets (seed + 1 for the held-out draw).
    x_held: held-out in-distribution images choosing the signs; None: the
      signs are not chosen.
    held_out: `held_out_split`'s description of them (for the report).

  Returns:
    {"sets", "examples", "auroc": {score: {set: AUROC}}, "figures",
     "skipped" (sets not prepared on this machine, with why), and with
     `x_held`: "orientation": {"held_out", "examples", "sign": {score:
     {set: ±1}}, "held_out_auroc": {score: {set: AUROC}}, "auroc": {score:
     {set: AUROC of the oriented score}}}}.
  """
  sets = list(sets or ood.DEFAULT_SETS.get(
      dataset, ("interp", "uniform", "constant")))
  n = min(examples, len(x_test))
  in_scores = ood.scores(model, x_test[:n])
  out = {"sets": sets, "examples": n, "auroc": {}, "figures": {}}
  set_scores, held_scores = {}, {}
  n_held = 0 if x_held is None else min(n, len(x_held))
  held_in = ood.scores(model, x_held[:n_held]) if n_held else None
  for name in sets:
    try:
      x_ood = ood.ood_set(name, x_test, n, seed)
      if n_held:
        held_scores[name] = ood.scores(model, ood.ood_set(
            name, x_held, n_held, seed + 1, offset=n))
    except data.DatasetUnavailableError as e:
      out.setdefault("skipped", {})[name] = str(e).split(". ")[0]
      continue
    set_scores[name] = ood.scores(model, x_ood)
  if n_held:
    out["orientation"] = {"held_out": held_out, "examples": n_held,
                          "sign": {}, "held_out_auroc": {}, "auroc": {}}
  for score in in_scores:
    out["auroc"][score] = {
        name: metrics.auroc(in_scores[score], s[score])
        for name, s in set_scores.items()}
    if n_held:
      oriented = {name: metrics.oriented_auroc(
          in_scores[score], s[score], held_in[score],
          held_scores[name][score]) for name, s in set_scores.items()}
      for key in ("sign", "held_out_auroc", "auroc"):
        out["orientation"][key][score] = {
            name: o[key] for name, o in oriented.items()}
    out["figures"][score] = plots.score_histograms(
        in_scores[score], {n: s[score] for n, s in set_scores.items()},
        score, _figure(workdir, f"ood_{score}.png"))
  return out


def robustness(model, x_test, y_test, workdir,
               linf_eps=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
               l2_eps=(0.0, 0.5, 1.0, 2.0, 3.0, 4.0), pgd_steps=10,
               pgd_step_size=None, pgd_random_start=True, examples=200,
               sgld_defense=True, defense_steps=10, defense_step_size=1.0,
               defense_noise=0.01, defense_duplicates=4, seed=0, rng=None,
               pgd_restarts=1, eot_samples=1):
  """Accuracy under PGD (L∞ and L2), undefended and with the SGLD defence.

  Args:
    model: a classifying EnergyModel.
    x_test, y_test: test images and int labels.
    workdir: the evaluated workdir (figures/robustness.png).
    linf_eps, l2_eps: ε grids of the two threat models (inputs in [−1, 1]).
    pgd_steps: PGD iterations.
    pgd_step_size: PGD step (default 2.5·ε/steps).
    pgd_random_start: start each attack at a random point of the ε-ball.
    examples: test examples attacked.
    sgld_defense: also attack the defended classifier (only for models that
      draw samples).
    defense_steps: SGLD steps of the defence's refinement.
    defense_step_size: its step size α.
    defense_noise: its noise σ.
    defense_duplicates: chains averaged per input.
    seed: seed of the attacks' random starts.
    rng: numpy Generator choosing the examples (default: from `seed`).
    pgd_restarts: attacks from independent random starts per example (the
      one with the highest loss is kept).
    eot_samples: for the (random) SGLD defence, calls averaged in each
      attack gradient (expectation over transformation); the undefended
      classifier is deterministic and gets 1.

  Returns:
    {"examples", the PGD and defence settings, "linf"/"l2": {target:
     {"eps", "accuracy"}}, "figure"}.
  """
  rng = _rng(rng, seed)
  pick = rng.choice(len(x_test), min(examples, len(x_test)), replace=False)
  x, y = x_test[pick], y_test[pick]
  targets = {"undefended": _logits_fn(model)}
  defense = sgld_defense and model.draws_samples
  if defense:
    targets["SGLD defence"] = adversarial.sgld_defended_logits(
        model, defense_steps, defense_step_size, defense_noise,
        defense_duplicates)
  attack = dict(steps=pgd_steps, step_size=pgd_step_size,
                random_start=pgd_random_start, restarts=pgd_restarts)
  out = {"examples": int(len(x)), "pgd_steps": pgd_steps,
         "pgd_step_size": pgd_step_size or "2.5·ε/steps",
         "pgd_random_start": pgd_random_start, "pgd_restarts": pgd_restarts,
         "defense": {"steps": defense_steps, "step_size": defense_step_size,
                     "noise": defense_noise, "duplicates": defense_duplicates,
                     "eot_samples": eot_samples,
                     "gradient": "straight-through (BPDA)"}
                    if defense else None}
  curves = {}
  for norm, grid in (("linf", linf_eps), ("l2", l2_eps)):
    out[norm] = {}
    curves[norm] = {}
    for label, fn in targets.items():
      accs = []
      for eps in grid:
        x_adv = np.concatenate([
            adversarial.pgd(fn, x[i:i + 100], y[i:i + 100], eps, norm,
                            seed=seed, eot_samples=(
                                1 if label == "undefended" else eot_samples),
                            **attack).numpy()
            for i in range(0, len(x), 100)])
        accs.append(adversarial.accuracy(fn, x_adv, y, batch_size=100))
      out[norm][label] = {"eps": list(map(float, grid)), "accuracy": accs}
      curves[norm][label] = (list(grid), accs)
  out["figure"] = plots.robustness_curves(curves,
                                          _figure(workdir, "robustness.png"))
  return out


def _first_of_each_class(x, y, num_classes):
  """One image per class (the first in `x`), NaN where a class is absent."""
  out = np.full((num_classes,) + x.shape[1:], np.nan, np.float32)
  for c in range(num_classes):
    members = np.flatnonzero(y == c)
    if len(members):
      out[c] = x[members[0]]
  return out


def distal(model, judge, image_shape, num_classes, workdir, per_class=4,
           steps=500, step_size=0.02, threshold=0.9, seed=0, x_train=None,
           x_test=None, y_test=None, names=None, figure_classes=20):
  """Distal adversarials: noise driven to p(y = c|x) > threshold.

  Args:
    model: a classifying EnergyModel.
    judge: the independent classifier (a judge_lib.Extractor), asked whether
      it sees class c too.
    image_shape: (H, W, C) of the data.
    num_classes: classes of the data set.
    workdir: the evaluated workdir (figures/distal.png).
    per_class: distal adversarials per class.
    steps: their maximal number of ascent steps.
    step_size: ascent step, per pixel (times √(H·W·C) for the whole image).
    threshold: p(y = c|x) at which an image stops.
    seed: seed of the starting noise.
    x_train: training images; with them, each adversarial's L2 distance to
      its nearest training image is reported, against the same distance of
      real test images (up to 1,000).
    x_test, y_test: test images and labels; a real one of each class heads
      its row of the figure.
    names: class names (default "0", "1", …).
    figure_classes: classes drawn at most (one row each).

  Returns:
    {the settings, "reached_threshold" (share above `threshold`),
     "mean_steps", "judge_agrees", "nearest_train_distance" (with
     `x_train`: {"distal", "test"}: {"mean", "std", "examples"}),
     "figure_classes", "figure"}.
  """
  x, probs, taken = adversarial.distal_adversarials(
      model, image_shape, num_classes, per_class, steps, step_size=step_size,
      threshold=threshold, seed=seed)
  target = np.repeat(np.arange(num_classes), per_class)
  judged = judge.probs(x).argmax(-1)
  names = names or [str(c) for c in range(num_classes)]
  out = {"per_class": per_class, "steps": steps, "step_size": step_size,
         "threshold": threshold,
         "reached_threshold": float(np.mean(probs > threshold)),
         "mean_steps": float(np.mean(taken)),
         "judge_agrees": float(np.mean(judged == target))}
  if x_train is not None:
    near = {"distal": metrics.nearest_neighbour_distance(x, x_train)}
    if x_test is not None:
      near["test"] = metrics.nearest_neighbour_distance(x_test[:1000],
                                                        x_train)
    out["nearest_train_distance"] = {
        k: {"mean": float(d.mean()), "std": float(d.std()),
            "examples": int(len(d))} for k, d in near.items()}
  shown = min(num_classes, figure_classes)
  cells = x.reshape((num_classes, per_class) + tuple(image_shape))[:shown]
  captions = [[f"p={probs[c * per_class + i]:.2f}, judge: "
               f"{names[judged[c * per_class + i]]}"
               for i in range(per_class)] for c in range(shown)]
  columns = [f"distal {i + 1}" for i in range(per_class)]
  if x_test is not None:
    real = _first_of_each_class(x_test, y_test, num_classes)[:shown, None]
    cells = np.concatenate([real, cells], axis=1)
    captions = [[""] + row for row in captions]
    columns = ["real (test)"] + columns
  more = f" (first {shown} of {num_classes} classes)" if shown < num_classes \
      else ""
  out["figure_classes"] = shown
  out["figure"] = plots.image_table(
      cells, _figure(workdir, "distal.png"),
      row_labels=[f"class {names[c]}" for c in range(shown)],
      column_labels=columns, captions=captions,
      title=f"Distal adversarials: noise driven to p(y = c|x) > "
            f"{threshold:g}{more}")
  return out


def _is_fid(extractor, real_features, draws):
  """IS and FID of each draw: mean, std over the draws, their number, and
  the network and sample count they come from."""
  scores = [(metrics.inception_score(extractor.probs(x)),
             metrics.frechet_distance(real_features, extractor.features(x)))
            for x in draws]
  inception, fid = zip(*scores)
  return {"inception_score": float(np.mean(inception)),
          "fid": float(np.mean(fid)), "network": extractor.label,
          "num_samples": int(len(draws[0])),
          "draws": len(draws),
          "std": {"inception_score": float(np.std(inception)),
                  "fid": float(np.std(fid))}}


def samples(model, extractor, judge, x_test, num_classes, workdir, steps=1000,
            num_samples=500, conditional_per_class=None, seed=0, rng=None,
            draws=1, names=None, figure_classes=20):
  """Fresh, buffer and class-conditional samples: IS, FID, judged accuracy.

  Args:
    model: an EnergyModel.
    extractor: features of IS/FID (a judge_lib.Extractor); every IS/FID is
      recorded with its network and sample count.
    judge: the independent classifier judging class-conditional samples.
    x_test: test images (FID's reference, and the test set's own IS).
    num_classes: classes of the data set.
    workdir: the evaluated workdir (figures/samples_*.png).
    steps: SGLD steps of fresh chains (from noise).
    num_samples: fresh chains, and buffer samples drawn (at most the
      buffer's size: the count used is recorded).
    conditional_per_class: class-conditional samples per class (classifying
      models only); None: max(1, 100 // num_classes), about 100 in all.
    seed: seed of the choice of buffer samples.
    rng: numpy Generator choosing them (default: from `seed`).
    draws: independent draws of every random quantity (fresh chains, buffer
      samples, class-conditional samples); the mean is reported with the
      standard deviation over draws (1: a single draw, said so).
    names: class names (default "0", "1", …).
    figure_classes: classes drawn at most in the class-conditional figure.

  Returns:
    {"steps", "num_samples" (requested), "draws", "feature_network": {"name",
     "label", "description", "standard"}, "fid_reference", "figures",
     "fresh"/"buffer": {IS, FID, "network" (its label), "num_samples"
     used, "draws", "std"} (buffer: {"skipped": why} for models that never
     sample), "test_set": {IS, "network", "num_samples"}, "conditional"
     (classifying models)}.
  """
  rng = _rng(rng, seed)
  names = names or [str(c) for c in range(num_classes)]
  out = {"steps": steps, "num_samples": num_samples, "draws": draws,
         "feature_network": {"name": extractor.name,
                             "label": extractor.label,
                             "description": extractor.description,
                             "standard": extractor.standard},
         "fid_reference": {"split": "test", "examples": int(len(x_test))}}
  real_features = extractor.features(x_test)
  fresh = [_sample_in_chunks(model, num_samples, steps) for _ in range(draws)]
  out["figures"] = {"fresh": _grid(fresh[0][:64],
                                   _figure(workdir, "samples_fresh.png"))}
  out["fresh"] = _is_fid(extractor, real_features, fresh)
  if model.draws_samples:
    buf = model.replay_buffer
    n = min(num_samples, buf.size)
    stored = [tf.gather(buf.samples.value, rng.choice(
        buf.size, n, replace=False)).numpy() for _ in range(draws)]
    out["figures"]["buffer"] = _grid(stored[0][:64],
                                     _figure(workdir, "samples_buffer.png"))
    out["buffer"] = _is_fid(extractor, real_features, stored)
  else:
    out["buffer"] = {"skipped": "the model never samples in training "
                                "(no p(x) or p(x|y) term), so its replay "
                                "buffer holds only its initial noise"}
  out["test_set"] = {"inception_score": metrics.inception_score(
      extractor.probs(x_test)), "network": extractor.label,
                     "num_samples": int(len(x_test))}
  if model.classifies:
    per_class = (max(1, 100 // num_classes) if conditional_per_class is None
                 else conditional_per_class)
    y = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
    drawn = [_sample_in_chunks(model, len(y), steps, y=y)
             for _ in range(draws)]
    judged = [judge.probs(x).argmax(-1) for x in drawn]
    accuracies = [float(np.mean(j == y)) for j in judged]
    shown = min(num_classes, figure_classes)
    cells = drawn[0].reshape((num_classes, per_class)
                             + drawn[0].shape[1:])[:shown]
    more = (f" (first {shown} of {num_classes} classes)"
            if shown < num_classes else "")
    out["conditional"] = {
        "per_class": per_class, "judge_accuracy": float(np.mean(accuracies)),
        "judge_accuracy_std": float(np.std(accuracies)),
        "figure_classes": shown,
        "figure": plots.image_table(
            cells, _figure(workdir, "samples_conditional.png"),
            row_labels=[f"class {names[c]}" for c in range(shown)],
            captions=[[f"judge: {names[judged[0][c * per_class + i]]}"
                       for i in range(per_class)] for c in range(shown)],
            title=f"Class-conditional samples x ~ p(x|y), one row per "
                  f"class y{more}")}
  return out


def save(workdir, result):
  """Writes `result` as results.json's "evaluation" (other keys kept) and
  report.md.

  Args:
    workdir: the evaluated workdir.
    result: the evaluation dict.

  Returns:
    The path of report.md.
  """
  path = workdir_lib.path(workdir, workdir_lib.RESULTS)
  summary = workdir_lib.read_json(path, {})
  summary["evaluation"] = result
  workdir_lib.write_json(path, summary)
  return render.write_report(result, workdir)


@gin.configurable
def evaluate(workdir="ebmkit_runs/default", test_split="test",
             train_split=None, num_bins=15, ood_sets=None, ood_examples=500,
             linf_eps=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
             l2_eps=(0.0, 0.5, 1.0, 2.0, 3.0, 4.0), pgd_steps=10,
             pgd_step_size=None, pgd_random_start=True, pgd_examples=200,
             sgld_defense=True, defense_steps=10, defense_step_size=1.0,
             defense_noise=0.01, defense_duplicates=4, distal_per_class=4,
             distal_steps=500, distal_step_size=0.02, distal_threshold=0.9,
             sample_steps=1000, num_samples=None, conditional_per_class=None,
             feature_extractor="auto", judge_epochs=20,
             judge_learning_rate=1e-3, judge_batch_size=64, judge_width=32,
             seed=0, fid_network_path=None, sample_draws=1,
             calibration_split=None, held_out_fraction=0.1,
             detection_fpr=0.05, pgd_restarts=1, eot_samples=1):
  """Everything in the JEM paper's results section for a trained workdir.

  Holds every setting of the evaluation and passes each part its own (see
  the part for details): the independent classifier (`train_judge`; also
  the features of IS/FID unless `select_extractor` picks Inception-v3),
  accuracy and calibration (`classification`), the detection threshold on
  E(x, y) (`detection`, calibrated on held-out data: `load_held_out`), OOD
  detection (`ood_detection`), PGD robustness with and without the SGLD defence
  (`robustness`), distal adversarials (`distal`), samples with IS, FID and
  the judged class-conditional accuracy (`samples`). Writes `results.json`
  (key "evaluation"), `report.md` and `figures/*.png` into `workdir`.
  Classifier-only parts are skipped for unconditional (scalar-energy) models.

  Args:
    workdir: a folder written by `train`; gin must hold its config (the
      command line parses its operative_config.gin).
    test_split: split evaluated.
    train_split: split the judge classifier trains on (default: the bound
      `train.train_split`, else "train").
    num_bins: ECE bins (equal width).
    ood_sets: OOD set names; default per data set (ood.DEFAULT_SETS).
    ood_examples: examples per OOD set (and of the test set) scored.
    linf_eps, l2_eps: ε grids of the PGD threat models (inputs in [−1, 1]).
    pgd_steps: PGD iterations.
    pgd_step_size: PGD step (default 2.5·ε/steps).
    pgd_random_start: start each attack at a random point of the ε-ball.
    pgd_examples: test examples attacked.
    sgld_defense: also attack the defended classifier (for models trained
      with sampling only: on a plain classifier's untrained energy the
      refinement is not density-guided, and its figure would measure
      gradient masking).
    defense_steps, defense_step_size, defense_noise, defense_duplicates: the
      defence's SGLD refinement (steps, α, σ, chains per input).
    distal_per_class: distal adversarials per class.
    distal_steps: their maximal number of ascent steps.
    distal_step_size: their ascent step, per pixel.
    distal_threshold: p(y = c|x) at which a distal adversarial stops.
    sample_steps: SGLD steps of fresh chains (from noise).
    num_samples: fresh unconditional samples (and buffer samples, at most
      the buffer's size) for IS/FID; None: `default_num_samples` (50,000
      for 32×32 images and larger, the standard count; 500 below).
    conditional_per_class: class-conditional samples per class; None:
      max(1, 100 // num_classes).
    feature_extractor: "auto" (the standard Inception pool_3 graph if
      `fid_network_path` is given, else Keras' Inception-v3 if its weights
      are on this machine and images have 3 channels, else "classifier"),
      "inception_pool3", "inception_v3" or "classifier".
    judge_epochs: training epochs of the independent classifier.
    judge_learning_rate: its Adam learning rate.
    judge_batch_size: its training batch size.
    judge_width: filters of its first convolutions.
    seed: seed of the random choices.
    fid_network_path: a local frozen Inception graph (TTUR's
      classify_image_graph_def.pb or TF-GAN's
      inceptionv1_for_inception_score.pb), the network of published IS/FID.
    sample_draws: independent draws of the samples' random quantities
      (IS, FID, judged accuracy), reported as mean ± std (1: single draw).
    calibration_split: held-out split of the detection threshold and of
      the OOD scores' orientation (default: the bound
      `train.validation_split`; without one, the last `held_out_fraction`
      of the training split, which the judge then does not train on).
    held_out_fraction: that share of the training split.
    detection_fpr: false-positive rate the detection threshold on
      E(x, y) is calibrated for (on held-out data; measured on test).
    pgd_restarts: PGD attacks from independent random starts per example.
    eot_samples: calls of the random SGLD defence averaged per attack
      gradient (expectation over transformation).

  Returns:
    The evaluation dict (also in results.json).

  Raises:
    ValueError: for an unknown `feature_extractor`.
  """
  _check_extractor(feature_extractor)  # Before the judge trains.
  from ebmkit import callbacks  # pylint: disable=g-import-not-at-top
  started = time.time()
  rng = np.random.default_rng(seed)  # Shared: robustness, then samples.
  test_ds, info = data.load_dataset(split=test_split, training=False,
                                    with_info=True)
  x_test, y_test = _arrays(test_ds)
  model = experiment.build_model(info)
  model.compile()
  result = {"checkpoint": experiment.restore(model, workdir),
            "dataset": info.name, "test_split": test_split,
            "test_examples": int(len(x_test))}
  # Each part's start, end and time on the console (see PartProgress).
  parts = callbacks.PartProgress(8 if model.classifies else 4,
                                 title=f"Evaluation of {workdir}")

  train_split = train_split or gin_utils.bound("train.train_split", "train")
  x_train, y_train = _arrays(data.load_dataset(split=train_split,
                                               training=False))
  x_judge, y_judge, x_held, y_held, held_out = load_held_out(
      x_train, y_train, train_split, calibration_split, held_out_fraction)
  result["held_out"] = held_out
  judge, result["judge_test_accuracy"] = parts(
      "independent classifier", train_judge)(
      x_judge, y_judge, x_test, y_test, info.num_classes, workdir,
      epochs=judge_epochs, learning_rate=judge_learning_rate,
      batch_size=judge_batch_size, width=judge_width)
  extractor = select_extractor(judge, info.image_shape, feature_extractor,
                               fid_network_path)
  result["feature_extractor"] = {"name": extractor.name,
                                 "label": extractor.label,
                                 "description": extractor.description,
                                 "standard": extractor.standard}
  names = class_names(info.name, info.num_classes)

  if model.classifies:
    result.update(parts("accuracy and calibration", classification)(
        model, x_test, y_test, workdir, num_bins))
    result["detection"] = parts("detection threshold", detection)(
        model, x_held, y_held, x_test, y_test, held_out,
        target_fpr=detection_fpr)
  result["ood"] = parts("OOD detection", ood_detection)(
      model, x_test, info.name, workdir, sets=ood_sets,
      examples=ood_examples, seed=seed, x_held=x_held, held_out=held_out)
  if model.classifies:
    result["robustness"] = parts("robustness (PGD)", robustness)(
        model, x_test, y_test, workdir, linf_eps=linf_eps, l2_eps=l2_eps,
        pgd_steps=pgd_steps, pgd_step_size=pgd_step_size,
        pgd_random_start=pgd_random_start, examples=pgd_examples,
        sgld_defense=sgld_defense, defense_steps=defense_steps,
        defense_step_size=defense_step_size, defense_noise=defense_noise,
        defense_duplicates=defense_duplicates, seed=seed, rng=rng,
        pgd_restarts=pgd_restarts, eot_samples=eot_samples)
    result["distal"] = parts("distal adversarials", distal)(
        model, judge, info.image_shape, info.num_classes, workdir,
        per_class=distal_per_class, steps=distal_steps,
        step_size=distal_step_size, threshold=distal_threshold, seed=seed,
        x_train=x_train, x_test=x_test, y_test=y_test, names=names)
  result["samples"] = parts("samples (IS, FID)", samples)(
      model, extractor, judge, x_test, info.num_classes, workdir,
      steps=sample_steps,
      num_samples=num_samples or default_num_samples(info.image_shape),
      conditional_per_class=conditional_per_class, seed=seed, rng=rng,
      draws=sample_draws, names=names)
  result["wall_time_s"] = round(time.time() - started, 1)
  parts("results.json and report.md", save)(workdir, result)
  callbacks.write_evaluation_summaries(workdir, result)
  return result
