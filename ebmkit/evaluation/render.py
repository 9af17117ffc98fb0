"""Markdown of evaluations: one workdir's report.md, and several evaluated
workdirs side by side (comparison.md). Reads only the evaluation dict; the
numbers and figures come from `evaluate`."""

import os

from ebmkit import workdir as workdir_lib
from ebmkit.evaluation import gan_report


def _fmt(value, percent=False):
  if value is None:
    return "–"
  return f"{100 * value:.2f}%" if percent else f"{value:.3f}"


def _table(head, rows):
  """Markdown table lines: a header row, the rule, one line per row."""
  line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"
  return [line(head), "|" + "---|" * len(head)] + [line(r) for r in rows]


def _name(workdir):
  return os.path.basename(os.path.normpath(workdir))


STANDARD_NUM_SAMPLES = 50000  # Of published IS/FID (evaluate's default).


def _features(result):
  """The IS/FID feature network of an evaluation (older ones: its name)."""
  s = result["samples"]
  return s.get("feature_network") or dict(result["feature_extractor"],
                                          standard=False)


def _label(result):
  """What its IS/FID are called: "judge-classifier", "Inception-pool3", …."""
  f = _features(result)
  return f.get("label") or f["name"]


def _is_fid(part, key):
  """A sample part's IS or FID: "7.123", or "7.123 ± 0.100" over draws;
  "skipped" or "–" where there is none."""
  if part is None or key not in part:
    return "skipped" if part and "skipped" in part else "–"
  std = part.get("std", {}).get(key)
  if part.get("draws", 1) > 1 and std is not None:
    return f"{_fmt(part[key])} ± {_fmt(std)}"
  return _fmt(part[key])


def _count(part, default):
  """Samples a part used: its own count (older results: `default`); None
  where it was skipped."""
  if part and "skipped" in part:
    return None
  return part.get("num_samples", default) if part else default


def _n(count):
  return "–" if count is None else str(count)


def _spread(part, path, value, percent=False):
  """`value` formatted, with "± std" where `part` holds several draws
  (`common.over_draws`: the std at the same `path` under part["std"])."""
  std = part.get("std") if part.get("draws", 1) > 1 else None
  for key in path:
    if std is None:
      break
    try:
      std = std[key]
    except (KeyError, IndexError, TypeError):
      std = None
  if std is None or value is None:
    return _fmt(value, percent)
  return f"{_fmt(value, percent)} ± {_fmt(std, percent)}"


def _drawn(part):
  """Which random draws a part's numbers come from, in a sentence."""
  draws = part.get("draws", 1)
  seeds = part.get("seeds")
  if draws == 1:
    return ("Single draw" + (f" (seed {seeds[0]})" if seeds else "")
            + ": `evaluate.draws = N` reports mean ± standard deviation "
              "over N seeds.")
  return (f"Mean ± standard deviation over {draws} independent draws "
          f"(seeds {', '.join(map(str, seeds))}).")


def _draws_sentence(s):
  draws = s.get("draws", 1)
  return ("single draw" if draws == 1 else
          f"mean ± standard deviation over {draws} independent draws")


def _comparability(r):
  """Whether the IS/FID can be put next to published ones, and why not."""
  s = r["samples"]
  f = _features(r)
  n = _count(s["fresh"], s["num_samples"])
  if f.get("standard") and n >= STANDARD_NUM_SAMPLES:
    return (f"{_label(r)} IS/FID use the standard network and "
            f"{n:,} samples, like published numbers (the FID's reference "
            f"is this data set's test split).")
  why = []
  if not f.get("standard"):
    why.append(f"their features come from the {_label(r)} network, not "
               f"the 2015 Inception network's pool_3 (TTUR/TF-GAN graph; "
               f"`evaluate.fid_network_path`)")
  if n < STANDARD_NUM_SAMPLES:
    why.append(f"they use {n:,} samples, not {STANDARD_NUM_SAMPLES:,}")
  return (f"These {_label(r)} IS/FID are not comparable to the paper's "
          f"(or other published) IS/FID: " + "; ".join(why) + ".")


def _orientation(o, score, set_name):
  """(sign, AUROC of the signed score) chosen on held-out data for one score
  and OOD set; (1, None) where the evaluation chose none."""
  orientation = o.get("orientation") or {}
  sign = orientation.get("sign", {}).get(score, {}).get(set_name)
  if sign is None:
    return 1, None
  return sign, orientation["auroc"][score][set_name]


def _oriented_cell(o, score, set_name):
  """"0.950", or "↓ 1.000" where the sign is flipped."""
  sign, value = _orientation(o, score, set_name)
  path = ("orientation", "auroc", score, set_name)
  return ("↓ " if sign < 0 else "") + _spread(o, path, value)


def _held_out(h):
  """`held_out_split`'s description in words (older results: a string)."""
  if isinstance(h, str):
    return h
  return f"{h['split']} ({h['examples']} examples)"


SCORE_DEFINITIONS = ("log_px = −E(x), max_prob = max_y p(y|x) and "
                     "neg_grad_norm = −‖∂log p(x)/∂x‖₂ (and, when asked, "
                     "neg_energy_T<T> = T·LogSumExp(f(x)/T), Liu et al.'s "
                     "energy score)")


def _auroc_with_flip(o, score, set_name):
  """"0.000 (↓ 1.000)": the AUROC as defined, and the held-out-oriented one
  where its sign is flipped; "–" where the score or set is missing."""
  sign, value = _orientation(o, score, set_name)
  cell = _spread(o, ("auroc", score, set_name),
                 o["auroc"].get(score, {}).get(set_name))
  flipped = _spread(o, ("orientation", "auroc", score, set_name), value)
  return cell + (f" (↓ {flipped})" if sign < 0 else "")


def report_markdown(result, workdir):
  """report.md: the paper's quantities in tables, and every figure; one
  section function each.

  Args:
    result: an evaluation dict (results.json's "evaluation").
    workdir: the evaluated workdir (its name heads the report; figure links
      are relative to it).

  Returns:
    The markdown text.
  """
  if gan_report.is_gan(result):  # G(z) vs DDLS: its own report.
    return gan_report.report_markdown(result, workdir)
  rel = lambda p: os.path.relpath(p, workdir)
  lines = _header(result, _name(workdir))
  for section in (_calibration, _detection, _ood, _robustness, _distal,
                  _samples):
    lines += section(result, rel)
  lines.append(gan_report.took(result))
  return "\n".join(lines) + "\n"


def _header(r, name):
  """Title, checkpoint and data, and the hybrid-modelling table."""
  s = r["samples"]
  label = _label(r)
  n_fresh = _count(s["fresh"], s["num_samples"])
  n_buffer = _count(s["buffer"], s["num_samples"])
  lines = [f"# Evaluation of `{name}`", "",
           f"Checkpoint `{r['checkpoint']}`, data set `{r['dataset']}` "
           f"(split `{r['test_split']}`, {r['test_examples']} examples)."]
  h = r.get("held_out")
  if h:
    lines[-1] += (f" Held-out data (the detection threshold and the OOD "
                  f"scores' signs are chosen on it): {_held_out(h)}")
    lines[-1] += (": not used to train the judge classifier, but seen by "
                  "the model in training, since its config has no "
                  "validation split." if isinstance(h, dict)
                  and h.get("seen_by_model") else ".")
  lines += ["", f"IS/FID features: {_features(r)['description']}. "
            + _comparability(r), "",
            "## Hybrid modelling (the quantities of the paper's Table 1, "
            "measured here)", ""] + _table(
                ["model", "accuracy", f"{label} IS (fresh, n={n_fresh})",
                 f"{label} FID (fresh, n={n_fresh})",
                 f"{label} IS (buffer, n={_n(n_buffer)})",
                 f"{label} FID (buffer, n={_n(n_buffer)})", "ECE"],
                [[name, _fmt(r.get("accuracy"), True),
                  _is_fid(s["fresh"], "inception_score"),
                  _is_fid(s["fresh"], "fid"),
                  _is_fid(s["buffer"], "inception_score"),
                  _is_fid(s["buffer"], "fid"),
                  _fmt(r.get("calibration", {}).get("ece"), True)]]) + [""]
  reference = s.get("fid_reference", {})
  lines.append(
      f"The test set's own {label} IS "
      f"(n={_count(s['test_set'], r['test_examples'])}): "
      f"{_fmt(s['test_set']['inception_score'])}. FID against the "
      f"{reference.get('examples', r['test_examples'])} test images. "
      f"Fresh samples: {n_fresh} chains of {s['steps']} SGLD steps from "
      f"noise; buffer samples: "
      + (f"{n_buffer} drawn from the replay buffer" if n_buffer else "none")
      + f"; {_draws_sentence(s)}.")
  if "skipped" in s["buffer"]:
    lines.append(f"Buffer IS/FID skipped: {s['buffer']['skipped']}.")
  lines.append("")
  return lines


def _calibration(r, rel):
  if "calibration" not in r:
    return []
  return ["## Calibration", "",
          f"ECE {_fmt(r['calibration']['ece'], True)} "
          f"({r['calibration']['num_bins']} equal-width bins). In the "
          f"diagram, bars are each bin's accuracy and the hatched boxes "
          f"the gap to its mean confidence (a box above a bar: "
          f"over-confident; inside it: under-confident); below, the "
          f"examples per bin.", "",
          f"![reliability]({rel(r['calibration']['figure'])})", ""]


def _detection(r, rel):
  del rel  # No figure.
  if "detection" not in r:
    return []
  d = r["detection"]
  return ["## Detection: E(x, y) ≤ threshold", "",
          f"Threshold {d['threshold']:.4g}, calibrated on held-out "
          f"data, {_held_out(d['calibration'])}, "
          f"{d['calibration_examples']} of them used, for a "
          f"false-positive rate of {_fmt(d['target_fpr'], True)} "
          f"(true-positive rate there "
          f"{_fmt(d['calibration_tpr'], True)}). On the test split "
          f"({d['test_examples']} examples): false-positive rate "
          f"{_fmt(d['test_fpr'], True)}, true-positive rate "
          f"{_fmt(d['test_tpr'], True)}.", ""]


def _ood(r, rel):
  lines = []
  o = r["ood"]
  sets = list(next(iter(o["auroc"].values())))
  lines += ["## Out-of-distribution detection (AUROC; the scores of the "
            "paper's Table 2)", "",
            f"Each score is defined so that higher means in-distribution, "
            f"as in the paper: {SCORE_DEFINITIONS}. The first table keeps "
            f"these signs; an AUROC below 0.5 means the score points the "
            f"other way for this model.", ""] + _table(
                ["score"] + sets,
                [[score] + [_spread(o, ("auroc", score, k), row[k])
                            for k in sets]
                 for score, row in o["auroc"].items()]) + ["", _drawn(o)]
  if o.get("orientation"):
    lines += ["", f"With each score's sign chosen on held-out data "
              f"({_held_out(o['orientation']['held_out'])}: "
              f"{o['orientation']['examples']} images against a second, "
              f"disjoint draw of each OOD set), the test AUROC is (↓: the sign is flipped, the score used is "
              f"its negative):", ""] + _table(
                  ["score, sign chosen on held-out data"] + sets,
                  [[score] + [_oriented_cell(o, score, k) for k in sets]
                   for score in o["auroc"]])
  for name_, why in o.get("skipped", {}).items():
    lines.append(f"\nSkipped OOD set `{name_}`: {why}.")
  lines += [""] + [f"![{k}]({rel(v)})" for k, v in o["figures"].items()] + [""]
  return lines


def _robustness(r, rel):
  if "robustness" not in r:
    return []
  lines = []
  rb = r["robustness"]
  lines += ["## Adversarial robustness (PGD)", "",
            f"{rb['examples']} test examples, {rb['pgd_steps']} PGD steps of "
            f"{rb['pgd_step_size']}, random start "
            f"{'on' if rb['pgd_random_start'] else 'off'}, "
            f"{rb.get('pgd_restarts', 1)} restart(s) (the strongest kept "
            f"per example); ε in input units (data in [−1, 1]).", ""]
  for norm in ("linf", "l2"):
    eps = next(iter(rb[norm].values()))["eps"]
    lines += _table([f"{norm} ε"] + [f"{e:g}" for e in eps], [
        [label_] + [_spread(rb, (norm, label_, "accuracy", i), a, True)
                    for i, a in enumerate(curve["accuracy"])]
        for label_, curve in rb[norm].items()]) + [""]
  lines += [_drawn(rb) + " The attacked examples, random starts and "
            "the defence's noise are drawn anew in each draw.", ""]
  if rb.get("defense"):
    df = rb["defense"]
    lines += [f"Caveat on the SGLD defence ({df['steps']} steps, "
              f"{df['duplicates']} chains per input): PGD attacks it "
              f"through a straight-through gradient (BPDA) with EOT over "
              f"{df.get('eot_samples', 1)} draw(s) of its noise. Gradient "
              f"masking is possible, so its accuracies are an upper bound "
              f"that a stronger, adaptive attack may lower.", ""]
  lines += [f"![robustness]({rel(rb['figure'])})", ""]
  return lines


def _distal(r, rel):
  if "distal" not in r:
    return []
  lines = []
  d = r["distal"]
  reached = _spread(d, ("reached_threshold",), d["reached_threshold"], True)
  agrees = _spread(d, ("judge_agrees",), d["judge_agrees"], True)
  lines += ["## Distal adversarials", "",
            f"Noise driven to p(y = c|x) > {d['threshold']:g}, "
            f"{d['per_class']} per class (one row per class, after a real "
            f"test image of it; captions: p(c|x) and the independent "
            f"classifier's class; at most {d['steps']} ascent steps of "
            f"{d['step_size']:g} per pixel): "
            f"{reached} got there (mean {d['mean_steps']:.0f} steps); the "
            f"independent classifier agrees with the target class for "
            f"{agrees}. "
            f"{_drawn(d)}"]
  near = d.get("nearest_train_distance")
  if near:
    text = (f"Mean L2 distance to the nearest training image: distal "
            f"adversarials {near['distal']['mean']:.3f} ± "
            f"{near['distal']['std']:.3f}")
    if "test" in near:
      text += (f", real test images {near['test']['mean']:.3f} ± "
               f"{near['test']['std']:.3f} ({near['test']['examples']} "
               f"images)")
    lines.append(text + " (± one standard deviation over images).")
  lines += ["", f"![distal]({rel(d['figure'])})", ""]
  return lines


def _samples(r, rel):
  s = r["samples"]
  lines = []
  lines += ["## Samples", "",
            f"Fresh chains: ![fresh]({rel(s['figures']['fresh'])})"]
  if "buffer" in s["figures"]:
    lines[-1] += f" Replay buffer: ![buffer]({rel(s['figures']['buffer'])})"
  lines.append("")
  if "conditional" in s:
    c = s["conditional"]
    judged = _fmt(c["judge_accuracy"], True)
    if s.get("draws", 1) > 1 and "judge_accuracy_std" in c:
      judged += f" ± {_fmt(c['judge_accuracy_std'], True)}"
    lines += [f"Class-conditional samples ({c['per_class']} per class, one "
              f"row per class; captions: the independent classifier's "
              f"class): it assigns {judged} of them to their class.",
              "", f"![conditional]({rel(c['figure'])})", ""]
  return lines


def write_report(result, workdir):
  """Writes `<workdir>/report.md` (see `report_markdown`).

  Args:
    result: an evaluation dict.
    workdir: the evaluated workdir.

  Returns:
    The path of report.md.
  """
  return workdir_lib.write_text(
      workdir_lib.path(workdir, workdir_lib.REPORT),
      report_markdown(result, workdir))


def comparison_path(output):
  """Where `compare` writes for `output`: the file itself if it ends in
  .md, else `<output>/comparison.md`."""
  if output.lower().endswith(".md"):
    return output
  return workdir_lib.path(output, workdir_lib.COMPARISON)


def compare(workdirs, output=None):
  """One table of several evaluated workdirs (e.g. JEM, the classifier,
  IGEBM); writes it to `output` if given (see `comparison_path`).

  Args:
    workdirs: evaluated workdirs, in the order of the rows.
    output: a .md file, or a folder for comparison.md; None: nothing is
      written.

  Returns:
    The markdown text.

  Raises:
    FileNotFoundError: a workdir has no evaluation.
  """
  rows = []
  for w in workdirs:
    path = workdir_lib.path(w, workdir_lib.RESULTS)
    try:
      evaluation = workdir_lib.read_json(path, {})["evaluation"]
    except (OSError, KeyError):
      raise FileNotFoundError(
          f"{path} has no evaluation: run python -m ebmkit.run --mode=eval "
          f"--workdir={w} first.") from None
    rows.append((_name(w), evaluation))
  gans = [(n, e) for n, e in rows if gan_report.is_gan(e)]
  rows = [(n, e) for n, e in rows if not gan_report.is_gan(e)]
  # Every OOD score any of them has (unconditional models lack max_prob).
  scores = sorted({k for _, e in rows for k in e["ood"]["auroc"]})
  sets = sorted({k for _, e in rows for row in e["ood"]["auroc"].values()
                 for k in row})

  def network(e):
    s = e["samples"]
    return (f"{_label(e)} ({_n(_count(s['fresh'], s['num_samples']))} / "
            f"{_n(_count(s.get('buffer'), s['num_samples']))})")

  def distal(e, key):
    d = e.get("distal", {})
    return _spread(d, (key,), d.get(key), True)

  lines = ["# Comparison", "",
           "IS/FID: each row's feature network (samples fresh / buffer); "
           "only the standard Inception pool_3 network with 50,000 samples "
           "gives numbers comparable to published ones. ± : standard "
           "deviation over the evaluation's draws (`evaluate.draws`); "
           "without it, a single draw.", ""] + _table(
      ["model", "accuracy", "ECE", "IS/FID network (n fresh / buffer)",
       "IS (fresh)", "FID (fresh)", "IS (buffer)", "FID (buffer)",
       "class-cond. samples judged correct",
       "distal adversarials judged as their class",
       "distal adversarials reaching the threshold"],
      [[name, _fmt(e.get("accuracy"), True),
        _fmt(e.get("calibration", {}).get("ece"), True), network(e),
        _is_fid(e["samples"]["fresh"], "inception_score"),
        _is_fid(e["samples"]["fresh"], "fid"),
        _is_fid(e["samples"].get("buffer"), "inception_score"),
        _is_fid(e["samples"].get("buffer"), "fid"),
        _fmt(e["samples"].get("conditional", {}).get("judge_accuracy"), True),
        distal(e, "judge_agrees"), distal(e, "reached_threshold")]
       for name, e in rows])
  for score in scores:
    lines += ["", f"OOD AUROC, score {score} (higher = in-distribution as "
              f"defined; ↓ x: the sign chosen on held-out data is flipped, "
              f"and x is the flipped score's AUROC):", ""] + _table(
        ["model"] + sets,
        [[name] + [_auroc_with_flip(e["ood"], score, k) for k in sets]
         for name, e in rows])
  for norm in ("linf", "l2"):
    grids = [e["robustness"][norm] for _, e in rows if "robustness" in e]
    if not grids:
      continue
    eps = next(iter(grids[0].values()))["eps"]
    lines += ["", f"PGD {norm} accuracy:", ""] + _table(
        ["model"] + [f"ε={v:g}" for v in eps],
        [[f"{name} ({label})"] + [
            _spread(e["robustness"], (norm, label, "accuracy", i), a, True)
            for i, a in enumerate(curve["accuracy"])]
         for name, e in rows
         for label, curve in e.get("robustness", {}).get(norm, {}).items()])
  if gans:  # GAN workdirs: G(z) vs DDLS.
    lines = (lines if rows else ["# Comparison"]) + [
        "", "GAN samples G(z) vs DDLS from the same z:", ""] + (
            gan_report.comparison_lines(gans))
  text = "\n".join(lines) + "\n"
  if output:
    workdir_lib.write_text(comparison_path(output), text)
  return text
