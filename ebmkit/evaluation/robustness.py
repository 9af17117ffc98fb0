"""Evaluation parts on adversarial inputs: PGD robustness with and without
the SGLD defence, and distal adversarials."""

import numpy as np

from ebmkit.evaluation import adversarial
from ebmkit.evaluation import common
from ebmkit.evaluation import metrics
from ebmkit.evaluation import plots


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
  rng = common.rng_of(rng, seed)
  pick = rng.choice(len(x_test), min(examples, len(x_test)), replace=False)
  x, y = x_test[pick], y_test[pick]
  targets = {"undefended": common.logits_fn(model)}
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
  out["figure"] = plots.robustness_curves(
      curves, common.figure_path(workdir, "robustness.png"))
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
      cells, common.figure_path(workdir, "distal.png"),
      row_labels=[f"class {names[c]}" for c in range(shown)],
      column_labels=columns, captions=captions,
      title=f"Distal adversarials: noise driven to p(y = c|x) > "
            f"{threshold:g}{more}")
  return out
