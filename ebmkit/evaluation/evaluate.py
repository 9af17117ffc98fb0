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
from ebmkit import workdir as workdir_lib
from ebmkit.evaluation import adversarial
from ebmkit.evaluation import judge as judge_lib
from ebmkit.evaluation import metrics
from ebmkit.evaluation import ood
from ebmkit.evaluation import plots
from ebmkit.evaluation import render

FEATURE_EXTRACTORS = ("auto", "inception_v3", "classifier")


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
                     f"'inception_v3' or 'classifier', got {name!r}.")


def select_extractor(judge, image_shape, name="auto"):
  """The features of IS and FID.

  Args:
    judge: the independent classifier (a judge_lib.Extractor).
    image_shape: (H, W, C) of the data.
    name: "auto" (Inception-v3 if its weights are on this machine and images
      have 3 channels, else the judge), "inception_v3" or "classifier".

  Returns:
    A judge_lib.Extractor.

  Raises:
    ValueError: for another `name`.
  """
  _check_extractor(name)
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


def ood_detection(model, x_test, dataset, workdir, sets=None, examples=500,
                  seed=0):
  """AUROC of each OOD score (ood.SCORES) of the test set against OOD sets.

  Args:
    model: an EnergyModel.
    x_test: in-distribution test images.
    dataset: the data set's name (picks the default OOD sets).
    workdir: the evaluated workdir (figures/ood_<score>.png).
    sets: OOD set names (TFDS names or interp/uniform/constant/photos);
      default per data set (ood.DEFAULT_SETS).
    examples: examples per OOD set (and of the test set) scored.
    seed: seed of the synthetic sets.

  Returns:
    {"sets", "examples", "auroc": {score: {set: AUROC}}, "figures",
     "skipped" (sets not prepared on this machine, with why)}.
  """
  sets = list(sets or ood.DEFAULT_SETS.get(
      dataset, ("interp", "uniform", "constant")))
  n = min(examples, len(x_test))
  in_scores = ood.scores(model, x_test[:n])
  out = {"sets": sets, "examples": n, "auroc": {}, "figures": {}}
  set_scores = {}
  for name in sets:
    try:
      x_ood = ood.ood_set(name, x_test, n, seed)
    except data.DatasetUnavailableError as e:
      out.setdefault("skipped", {})[name] = str(e).split(". ")[0]
      continue
    set_scores[name] = ood.scores(model, x_ood)
  for score in in_scores:
    out["auroc"][score] = {
        name: metrics.auroc(in_scores[score], s[score])
        for name, s in set_scores.items()}
    out["figures"][score] = plots.score_histograms(
        in_scores[score], {n: s[score] for n, s in set_scores.items()},
        score, _figure(workdir, f"ood_{score}.png"))
  return out


def robustness(model, x_test, y_test, workdir,
               linf_eps=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
               l2_eps=(0.0, 0.5, 1.0, 2.0, 3.0, 4.0), pgd_steps=10,
               pgd_step_size=None, pgd_random_start=True, examples=200,
               sgld_defense=True, defense_steps=10, defense_step_size=1.0,
               defense_noise=0.01, defense_duplicates=4, seed=0, rng=None):
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
                random_start=pgd_random_start)
  out = {"examples": int(len(x)), "pgd_steps": pgd_steps,
         "pgd_step_size": pgd_step_size or "2.5·ε/steps",
         "pgd_random_start": pgd_random_start,
         "defense": {"steps": defense_steps, "step_size": defense_step_size,
                     "noise": defense_noise,
                     "duplicates": defense_duplicates} if defense else None}
  curves = {}
  for norm, grid in (("linf", linf_eps), ("l2", l2_eps)):
    out[norm] = {}
    curves[norm] = {}
    for label, fn in targets.items():
      accs = []
      for eps in grid:
        x_adv = np.concatenate([
            adversarial.pgd(fn, x[i:i + 100], y[i:i + 100], eps, norm,
                            seed=seed, **attack).numpy()
            for i in range(0, len(x), 100)])
        accs.append(adversarial.accuracy(fn, x_adv, y, batch_size=100))
      out[norm][label] = {"eps": list(map(float, grid)), "accuracy": accs}
      curves[norm][label] = (list(grid), accs)
  out["figure"] = plots.robustness_curves(curves,
                                          _figure(workdir, "robustness.png"))
  return out


def distal(model, judge, image_shape, num_classes, workdir, per_class=4,
           steps=500, step_size=0.02, threshold=0.9, seed=0):
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

  Returns:
    {the settings, "reached_threshold" (share above `threshold`),
     "mean_steps", "judge_agrees", "figure"}.
  """
  x, probs, taken = adversarial.distal_adversarials(
      model, image_shape, num_classes, per_class, steps, step_size=step_size,
      threshold=threshold, seed=seed)
  target = np.repeat(np.arange(num_classes), per_class)
  return {"per_class": per_class, "steps": steps, "step_size": step_size,
          "threshold": threshold,
          "reached_threshold": float(np.mean(probs > threshold)),
          "mean_steps": float(np.mean(taken)),
          "judge_agrees": float(np.mean(judge.probs(x).argmax(-1) == target)),
          "figure": _grid(x, _figure(workdir, "distal.png"),
                          columns=per_class * 2)}


def samples(model, extractor, judge, x_test, num_classes, workdir, steps=1000,
            num_samples=500, conditional_per_class=None, seed=0, rng=None):
  """Fresh, buffer and class-conditional samples: IS, FID, judged accuracy.

  Args:
    model: an EnergyModel.
    extractor: features of IS/FID (a judge_lib.Extractor).
    judge: the independent classifier judging class-conditional samples.
    x_test: test images (FID's reference, and the test set's own IS).
    num_classes: classes of the data set.
    workdir: the evaluated workdir (figures/samples_*.png).
    steps: SGLD steps of fresh chains (from noise).
    num_samples: fresh chains, and buffer samples drawn.
    conditional_per_class: class-conditional samples per class (classifying
      models only); None: max(1, 100 // num_classes), about 100 in all.
    seed: seed of the choice of buffer samples.
    rng: numpy Generator choosing them (default: from `seed`).

  Returns:
    {"steps", "num_samples", "figures", "fresh"/"buffer": {IS, FID},
     "test_set": {IS}, "conditional" (classifying models)}.
  """
  rng = _rng(rng, seed)
  out = {"steps": steps, "num_samples": num_samples}
  fresh = _sample_in_chunks(model, num_samples, steps)
  buf = model.replay_buffer
  slots = rng.choice(buf.size, min(num_samples, buf.size), replace=False)
  stored = tf.gather(buf.samples.value, slots).numpy()
  out["figures"] = {
      "fresh": _grid(fresh[:64], _figure(workdir, "samples_fresh.png")),
      "buffer": _grid(stored[:64], _figure(workdir, "samples_buffer.png"))}
  real_features = extractor.features(x_test)
  for name, x in (("fresh", fresh), ("buffer", stored)):
    out[name] = {"inception_score": metrics.inception_score(
        extractor.probs(x)), "fid": metrics.frechet_distance(
            real_features, extractor.features(x))}
  out["test_set"] = {"inception_score": metrics.inception_score(
      extractor.probs(x_test))}
  if model.classifies:
    per_class = (max(1, 100 // num_classes) if conditional_per_class is None
                 else conditional_per_class)
    y = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
    conditional = _sample_in_chunks(model, len(y), steps, y=y)
    judged = judge.probs(conditional).argmax(-1)
    out["conditional"] = {
        "per_class": per_class,
        "judge_accuracy": float(np.mean(judged == y)),
        "figure": _grid(conditional,
                        _figure(workdir, "samples_conditional.png"),
                        columns=per_class * (2 if per_class < 6 else 1))}
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
             sample_steps=1000, num_samples=500, conditional_per_class=None,
             feature_extractor="auto", judge_epochs=20,
             judge_learning_rate=1e-3, judge_batch_size=64, judge_width=32,
             seed=0):
  """Everything in the JEM paper's results section for a trained workdir.

  Holds every setting of the evaluation and passes each part its own (see
  the part for details): the independent classifier (`train_judge`; also
  the features of IS/FID unless `select_extractor` picks Inception-v3),
  accuracy and calibration (`classification`), OOD detection
  (`ood_detection`), PGD robustness with and without the SGLD defence
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
    num_samples: fresh unconditional samples for IS/FID.
    conditional_per_class: class-conditional samples per class; None:
      max(1, 100 // num_classes).
    feature_extractor: "auto" (Inception-v3 if its weights are on this
      machine and images have 3 channels, else "classifier"),
      "inception_v3" or "classifier".
    judge_epochs: training epochs of the independent classifier.
    judge_learning_rate: its Adam learning rate.
    judge_batch_size: its training batch size.
    judge_width: filters of its first convolutions.
    seed: seed of the random choices.

  Returns:
    The evaluation dict (also in results.json).

  Raises:
    ValueError: for an unknown `feature_extractor`.
  """
  _check_extractor(feature_extractor)  # Before the judge trains.
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

  train_split = train_split or gin_utils.bound("train.train_split", "train")
  x_train, y_train = _arrays(data.load_dataset(split=train_split,
                                               training=False))
  judge, result["judge_test_accuracy"] = train_judge(
      x_train, y_train, x_test, y_test, info.num_classes, workdir,
      epochs=judge_epochs, learning_rate=judge_learning_rate,
      batch_size=judge_batch_size, width=judge_width)
  extractor = select_extractor(judge, info.image_shape, feature_extractor)
  result["feature_extractor"] = {"name": extractor.name,
                                 "description": extractor.description}

  if model.classifies:
    result.update(classification(model, x_test, y_test, workdir, num_bins))
  result["ood"] = ood_detection(model, x_test, info.name, workdir,
                                sets=ood_sets, examples=ood_examples,
                                seed=seed)
  if model.classifies:
    result["robustness"] = robustness(
        model, x_test, y_test, workdir, linf_eps=linf_eps, l2_eps=l2_eps,
        pgd_steps=pgd_steps, pgd_step_size=pgd_step_size,
        pgd_random_start=pgd_random_start, examples=pgd_examples,
        sgld_defense=sgld_defense, defense_steps=defense_steps,
        defense_step_size=defense_step_size, defense_noise=defense_noise,
        defense_duplicates=defense_duplicates, seed=seed, rng=rng)
    result["distal"] = distal(
        model, judge, info.image_shape, info.num_classes, workdir,
        per_class=distal_per_class, steps=distal_steps,
        step_size=distal_step_size, threshold=distal_threshold, seed=seed)
  result["samples"] = samples(
      model, extractor, judge, x_test, info.num_classes, workdir,
      steps=sample_steps, num_samples=num_samples,
      conditional_per_class=conditional_per_class, seed=seed, rng=rng)
  result["wall_time_s"] = round(time.time() - started, 1)
  save(workdir, result)
  return result
