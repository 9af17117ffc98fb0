"""One evaluation run per workdir (results.json + report.md + figures), and
side-by-side comparison of several workdirs."""

import json
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


@gin.configurable
def evaluate(workdir="ebmkit_runs/default", test_split="test",
             train_split=None, num_bins=15, ood_sets=None, ood_examples=500,
             linf_eps=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
             l2_eps=(0.0, 0.5, 1.0, 2.0, 3.0, 4.0), pgd_steps=10,
             pgd_step_size=None, pgd_random_start=True,
             pgd_examples=200, sgld_defense=True, defense_steps=10,
             defense_step_size=1.0, defense_noise=0.01, defense_duplicates=4,
             distal_per_class=4, distal_steps=500, sample_steps=1000,
             num_samples=500, feature_extractor="auto", judge_epochs=20,
             seed=0):
  """Everything in the JEM paper's results section for a trained workdir.

  Computes test accuracy and calibration (ECE, reliability diagram), OOD
  detection (AUROC of log p(x), max_y p(y|x) and −‖∂log p(x)/∂x‖ against
  each OOD set, score histograms), robustness to PGD (L∞ and L2, with and
  without the SGLD-refinement defence), distal adversarials, samples (fresh
  chains, the buffer, class-conditional) with Inception Score, FID and the
  accuracy of class-conditional samples as judged by an independent
  classifier. Writes `results.json` (key "evaluation"), `report.md` and
  `figures/*.png` into `workdir`. Classifier-only parts are skipped for
  unconditional (scalar-energy) models.

  Args:
    workdir: a folder written by `train`; gin must hold its config (the
      command line parses its operative_config.gin).
    test_split: split evaluated.
    train_split: split the judge classifier trains on (default: the bound
      `train.train_split`, else "train").
    num_bins: ECE bins (equal width).
    ood_sets: OOD set names (TFDS names or interp/uniform/constant/photos);
      default per data set (ood.DEFAULT_SETS).
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
      defence's SGLD refinement.
    distal_per_class: distal adversarials per class.
    distal_steps: their maximal number of ascent steps.
    sample_steps: SGLD steps of fresh chains (from noise).
    num_samples: fresh unconditional samples for IS/FID.
    feature_extractor: "auto" (Inception-v3 if its weights are on this
      machine and images have 3 channels, else "classifier"),
      "inception_v3" or "classifier".
    judge_epochs: training epochs of the independent classifier.
    seed: seed of the random choices.

  Returns:
    The evaluation dict (also in results.json).
  """
  started = time.time()
  rng = np.random.default_rng(seed)
  figures = workdir_lib.path(workdir, workdir_lib.FIGURES)
  test_ds, info = data.load_dataset(split=test_split, training=False,
                                    with_info=True)
  x_test, y_test = _arrays(test_ds)
  model = experiment.build_model(info)
  model.compile()
  restored = experiment.restore(model, workdir)
  result = {"checkpoint": restored, "dataset": info.name,
            "test_split": test_split, "test_examples": int(len(x_test))}

  # The independent judge: IS/FID features (unless Inception) and the judge
  # of class-conditional samples.
  train_split = train_split or gin_utils.bound("train.train_split", "train")
  x_train, y_train = _arrays(data.load_dataset(split=train_split,
                                               training=False))
  judge, judge_accuracy = judge_lib.classifier_judge(
      x_train, y_train, x_test, y_test, info.num_classes,
      workdir_lib.path(workdir, workdir_lib.EVAL, "judge.keras"),
      epochs=judge_epochs)
  extractor = judge
  use_inception = feature_extractor == "inception_v3" or (
      feature_extractor == "auto" and info.image_shape[-1] == 3
      and os.path.isfile(judge_lib.inception_weights_path()))
  if use_inception:
    extractor = judge_lib.inception_extractor()
  elif feature_extractor not in ("auto", "classifier"):
    raise ValueError(f"evaluate.feature_extractor must be 'auto', "
                     f"'inception_v3' or 'classifier', got "
                     f"{feature_extractor!r}.")
  result["feature_extractor"] = {"name": extractor.name,
                                 "description": extractor.description}
  result["judge_test_accuracy"] = judge_accuracy

  # Accuracy and calibration.
  if model.classifies:
    log_pyx = np.concatenate([
        model(tf.constant(x_test[i:i + 500]))["log_pyx"].numpy()
        for i in range(0, len(x_test), 500)])
    probs = np.exp(log_pyx)
    result["accuracy"] = float(np.mean(probs.argmax(-1) == y_test))
    bins = metrics.calibration_bins(probs, y_test, num_bins)
    ece = metrics.expected_calibration_error(probs, y_test, num_bins)
    result["calibration"] = {
        "ece": ece, "num_bins": num_bins,
        "bin_accuracy": [None if np.isnan(v) else float(v)
                         for v in bins["accuracy"]],
        "bin_confidence": [None if np.isnan(v) else float(v)
                           for v in bins["confidence"]],
        "bin_count": bins["count"].tolist(),
        "figure": plots.reliability_diagram(
            bins, ece, os.path.join(figures, "reliability.png"))}

  # OOD detection.
  sets = list(ood_sets or ood.DEFAULT_SETS.get(
      info.name, ("interp", "uniform", "constant")))
  n_ood = min(ood_examples, len(x_test))
  in_scores = ood.scores(model, x_test[:n_ood])
  ood_result = {"sets": sets, "examples": n_ood, "auroc": {}, "figures": {}}
  set_scores = {}
  for name in sets:
    try:
      x_ood = ood.ood_set(name, x_test, n_ood, seed)
    except data.DatasetUnavailableError as e:
      ood_result.setdefault("skipped", {})[name] = str(e).split(". ")[0]
      continue
    set_scores[name] = ood.scores(model, x_ood)
  for score in in_scores:
    ood_result["auroc"][score] = {
        name: metrics.auroc(in_scores[score], s[score])
        for name, s in set_scores.items()}
    ood_result["figures"][score] = plots.score_histograms(
        in_scores[score], {n: s[score] for n, s in set_scores.items()},
        score, os.path.join(figures, f"ood_{score}.png"))
  result["ood"] = ood_result

  if model.classifies:
    result["robustness"] = _robustness(
        model, x_test, y_test, rng, figures, linf_eps, l2_eps,
        dict(steps=pgd_steps, step_size=pgd_step_size,
             random_start=pgd_random_start), pgd_examples, sgld_defense, defense_steps, defense_step_size,
        defense_noise, defense_duplicates, seed)
    distal, distal_probs, taken = adversarial.distal_adversarials(
        model, info.image_shape, info.num_classes, distal_per_class,
        distal_steps, seed=seed)
    result["distal"] = {
        "per_class": distal_per_class,
        "reached_0.9": float(np.mean(distal_probs > 0.9)),
        "mean_steps": float(np.mean(taken)),
        "judge_agrees": float(np.mean(
            judge.probs(distal).argmax(-1)
            == np.repeat(np.arange(info.num_classes), distal_per_class))),
        "figure": _grid(distal, os.path.join(figures, "distal.png"),
                        columns=distal_per_class * 2)}

  result["samples"] = _samples(model, extractor, judge, x_test, info,
                               figures, sample_steps, num_samples, rng)
  result["wall_time_s"] = round(time.time() - started, 1)

  path = workdir_lib.path(workdir, workdir_lib.RESULTS)
  summary = workdir_lib.read_json(path, {})
  summary["evaluation"] = result
  workdir_lib.write_json(path, summary)
  workdir_lib.write_text(
      workdir_lib.path(workdir, workdir_lib.REPORT),
      render_report(os.path.basename(os.path.normpath(workdir)), result,
                    workdir))
  return result


def _grid(x, path, columns=None):
  return images.save_png(path, images.make_grid(
      x, columns=columns, scale=images.default_scale(x.shape[1])))


def _robustness(model, x_test, y_test, rng, figures, linf_eps, l2_eps,
                attack, examples, defense, d_steps, d_step_size, d_noise,
                d_dups, seed):
  pick = rng.choice(len(x_test), min(examples, len(x_test)), replace=False)
  x, y = x_test[pick], y_test[pick]
  targets = {"undefended": _logits_fn(model)}
  defense = defense and model.draws_samples
  if defense:
    targets["SGLD defence"] = adversarial.sgld_defended_logits(
        model, d_steps, d_step_size, d_noise, d_dups)
  out = {"examples": int(len(x)), "pgd_steps": attack["steps"],
         "pgd_step_size": attack["step_size"] or "2.5·ε/steps",
         "pgd_random_start": attack["random_start"],
         "defense": {"steps": d_steps, "step_size": d_step_size,
                     "noise": d_noise, "duplicates": d_dups} if defense
                    else None}
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
  out["figure"] = plots.robustness_curves(
      curves, os.path.join(figures, "robustness.png"))
  return out


def _samples(model, extractor, judge, x_test, info, figures, steps,
             num_samples, rng):
  out = {"steps": steps, "num_samples": num_samples}
  fresh = _sample_in_chunks(model, num_samples, steps)
  buf = model.replay_buffer
  slots = rng.choice(buf.size, min(num_samples, buf.size), replace=False)
  stored = tf.gather(buf.samples.value, slots).numpy()
  out["figures"] = {
      "fresh": _grid(fresh[:64], os.path.join(figures, "samples_fresh.png")),
      "buffer": _grid(stored[:64], os.path.join(figures,
                                                "samples_buffer.png"))}
  real_features = extractor.features(x_test)
  for name, x in (("fresh", fresh), ("buffer", stored)):
    out[name] = {"inception_score": metrics.inception_score(
        extractor.probs(x)), "fid": metrics.frechet_distance(
            real_features, extractor.features(x))}
  out["test_set"] = {"inception_score": metrics.inception_score(
      extractor.probs(x_test))}
  if model.classifies:
    per_class = max(1, 100 // info.num_classes)
    y = np.repeat(np.arange(info.num_classes), per_class).astype(np.int32)
    conditional = _sample_in_chunks(model, len(y), steps, y=y)
    judged = judge.probs(conditional).argmax(-1)
    out["conditional"] = {
        "per_class": per_class,
        "judge_accuracy": float(np.mean(judged == y)),
        "figure": _grid(conditional, os.path.join(
            figures, "samples_conditional.png"), columns=per_class * (
                2 if per_class < 6 else 1))}
  return out


def _fmt(value, percent=False):
  if value is None:
    return "–"
  return f"{100 * value:.2f}%" if percent else f"{value:.3f}"


def _table(head, rows):
  """Markdown table lines: a header row, the rule, one line per row."""
  line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"
  return [line(head), "|" + "---|" * len(head)] + [line(r) for r in rows]


def render_report(name, r, workdir):
  """report.md: tables laid out like the paper's, and every figure."""
  rel = lambda p: os.path.relpath(p, workdir)
  s = r["samples"]
  lines = [f"# Evaluation of `{name}`", "",
           f"Checkpoint `{r['checkpoint']}`, data set `{r['dataset']}` "
           f"(split `{r['test_split']}`, {r['test_examples']} examples). "
           f"IS/FID features: {r['feature_extractor']['description']}.", "",
           "## Hybrid modelling (the paper's Table 1)", ""] + _table(
               ["model", "accuracy", "IS (fresh)", "FID (fresh)",
                "IS (buffer)", "FID (buffer)", "ECE"],
               [[name, _fmt(r.get("accuracy"), True),
                 _fmt(s["fresh"]["inception_score"]), _fmt(s["fresh"]["fid"]),
                 _fmt(s["buffer"]["inception_score"]),
                 _fmt(s["buffer"]["fid"]),
                 _fmt(r.get("calibration", {}).get("ece"), True)]]) + ["",
           f"IS of the test set itself: "
           f"{_fmt(s['test_set']['inception_score'])}. Fresh samples: "
           f"{s['num_samples']} chains of {s['steps']} SGLD steps from noise.",
           ""]
  if "calibration" in r:
    lines += ["## Calibration", "",
              f"ECE {_fmt(r['calibration']['ece'], True)} "
              f"({r['calibration']['num_bins']} equal-width bins).", "",
              f"![reliability]({rel(r['calibration']['figure'])})", ""]
  o = r["ood"]
  sets = list(next(iter(o["auroc"].values())))
  lines += ["## Out-of-distribution detection (AUROC, the paper's Table 2)",
            ""] + _table(["score"] + sets, [
                [score] + [_fmt(row[k]) for k in sets]
                for score, row in o["auroc"].items()])
  for name_, why in o.get("skipped", {}).items():
    lines.append(f"\nSkipped OOD set `{name_}`: {why}.")
  lines += [""] + [f"![{k}]({rel(v)})" for k, v in o["figures"].items()] + [""]
  if "robustness" in r:
    rb = r["robustness"]
    lines += ["## Adversarial robustness (PGD)", "",
              f"{rb['examples']} test examples, {rb['pgd_steps']} PGD steps of "
              f"{rb['pgd_step_size']}, random start "
              f"{'on' if rb['pgd_random_start'] else 'off'}; ε in input "
              "units (data in [−1, 1]).", ""]
    for norm in ("linf", "l2"):
      eps = next(iter(rb[norm].values()))["eps"]
      lines += _table([f"{norm} ε"] + [f"{e:g}" for e in eps], [
          [label] + [_fmt(a, True) for a in curve["accuracy"]]
          for label, curve in rb[norm].items()]) + [""]
    lines += [f"![robustness]({rel(rb['figure'])})", ""]
  if "distal" in r:
    d = r["distal"]
    lines += ["## Distal adversarials", "",
              f"Noise driven to p(y = c|x) > 0.9, {d['per_class']} per class "
              f"(two classes per row): {_fmt(d['reached_0.9'], True)} got "
              f"there (mean {d['mean_steps']:.0f} steps); the independent "
              f"classifier agrees with the target class for "
              f"{_fmt(d['judge_agrees'], True)}.", "",
              f"![distal]({rel(d['figure'])})", ""]
  lines += ["## Samples", "",
            f"Fresh chains: ![fresh]({rel(s['figures']['fresh'])}) "
            f"Replay buffer: ![buffer]({rel(s['figures']['buffer'])})", ""]
  if "conditional" in s:
    c = s["conditional"]
    lines += [f"Class-conditional samples ({c['per_class']} per class, "
              f"classes in order): the independent classifier assigns "
              f"{_fmt(c['judge_accuracy'], True)} of them to their class.",
              "", f"![conditional]({rel(c['figure'])})", ""]
  lines.append(f"Evaluation took {r['wall_time_s']} s.")
  return "\n".join(lines) + "\n"


def compare(workdirs, output=None):
  """One table of several evaluated workdirs (e.g. JEM, the classifier,
  IGEBM); writes comparison.md to `output` (a folder) if given.

  Returns:
    The markdown text.
  """
  rows = []
  for w in workdirs:
    path = workdir_lib.path(w, workdir_lib.RESULTS)
    try:
      with open(path) as f:
        evaluation = json.load(f)["evaluation"]
    except (OSError, KeyError):
      raise FileNotFoundError(
          f"{path} has no evaluation: run python -m ebmkit.run --mode=eval "
          f"--workdir={w} first.") from None
    rows.append((os.path.basename(os.path.normpath(w)), evaluation))
  sets = sorted({k for _, e in rows for k in e["ood"]["auroc"]["log_px"]})
  lines = ["# Comparison", ""] + _table(
      ["model", "accuracy", "ECE", "IS (fresh)", "FID (fresh)",
       "class-cond. samples judged correct"],
      [[name, _fmt(e.get("accuracy"), True),
        _fmt(e.get("calibration", {}).get("ece"), True),
        _fmt(e["samples"]["fresh"]["inception_score"]),
        _fmt(e["samples"]["fresh"]["fid"]),
        _fmt(e["samples"].get("conditional", {}).get("judge_accuracy"), True)]
       for name, e in rows])
  for score in ood.SCORES:
    lines += ["", f"OOD AUROC, score {score}:", ""] + _table(
        ["model"] + sets,
        [[name] + [_fmt(e["ood"]["auroc"].get(score, {}).get(k))
                   for k in sets] for name, e in rows])
  for norm in ("linf", "l2"):
    grids = [e["robustness"][norm] for _, e in rows if "robustness" in e]
    if not grids:
      continue
    eps = next(iter(grids[0].values()))["eps"]
    lines += ["", f"PGD {norm} accuracy:", ""] + _table(
        ["model"] + [f"ε={v:g}" for v in eps],
        [[f"{name} ({label})"] + [_fmt(a, True) for a in curve["accuracy"]]
         for name, e in rows
         for label, curve in e.get("robustness", {}).get(norm, {}).items()])
  text = "\n".join(lines) + "\n"
  if output:
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "comparison.md"), "w") as f:
      f.write(text)
  return text
