"""Evaluation part: out-of-distribution detection (the paper's Table 2
scores), with each score's sign chosen on held-out data."""

from ebmkit.data import pipeline as data
from ebmkit.evaluation import common
from ebmkit.evaluation import metrics
from ebmkit.evaluation import ood
from ebmkit.evaluation import plots


def ood_detection(model, x_test, dataset, workdir, sets=None, examples=500,
                  seed=0, x_held=None, held_out=None, energy_temperatures=()):
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
    energy_temperatures: also score with Liu et al.'s energy score at each
      of these temperatures T (classifiers; `ood.neg_free_energy`).

  Returns:
    {"sets", "examples", "auroc": {score: {set: AUROC}}, "figures",
      "skipped" (sets not prepared on this machine, with why), and with
      `x_held`: "orientation": {"held_out", "examples", "sign": {score:
      {set: ±1}}, "held_out_auroc": {score: {set: AUROC}}, "auroc": {score:
      {set: AUROC of the oriented score}}}}.
  """
  score = lambda x: ood.scores(model, x,
                               energy_temperatures=energy_temperatures)
  sets = list(sets or ood.DEFAULT_SETS.get(
      dataset, ("interp", "uniform", "constant")))
  n = min(examples, len(x_test))
  in_scores = score(x_test[:n])
  out = {"sets": sets, "examples": n, "auroc": {}, "figures": {}}
  set_scores, held_scores = {}, {}
  n_held = 0 if x_held is None else min(n, len(x_held))
  held_in = score(x_held[:n_held]) if n_held else None
  for name in sets:
    try:
      x_ood = ood.ood_set(name, x_test, n, seed)
      if n_held:
        held_scores[name] = score(ood.ood_set(
            name, x_held, n_held, seed + 1, offset=n))
    except data.DatasetUnavailableError as e:
      out.setdefault("skipped", {})[name] = str(e).split(". ")[0]
      continue
    set_scores[name] = score(x_ood)
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
        score, common.figure_path(workdir, f"ood_{score}.png"))
  return out
