"""Markdown of evaluations: one workdir's report.md, and several evaluated
workdirs side by side (comparison.md). Reads only the evaluation dict; the
numbers and figures come from `evaluate`."""

import os

from ebmkit import workdir as workdir_lib


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


def report_markdown(result, workdir):
  """report.md: tables laid out like the paper's, and every figure.

  Args:
    result: an evaluation dict (results.json's "evaluation").
    workdir: the evaluated workdir (its name heads the report; figure links
      are relative to it).

  Returns:
    The markdown text.
  """
  r = result
  name = _name(workdir)
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
              f"Noise driven to p(y = c|x) > {d['threshold']:g}, "
              f"{d['per_class']} per class (two classes per row; at most "
              f"{d['steps']} ascent steps of {d['step_size']:g} per pixel): "
              f"{_fmt(d['reached_threshold'], True)} got there (mean "
              f"{d['mean_steps']:.0f} steps); the independent classifier "
              f"agrees with the target class for "
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


def compare(workdirs, output=None):
  """One table of several evaluated workdirs (e.g. JEM, the classifier,
  IGEBM); writes comparison.md to `output` (a folder) if given.

  Args:
    workdirs: evaluated workdirs, in the order of the rows.
    output: folder of comparison.md; None: nothing is written.

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
  # Every OOD score any of them has (unconditional models lack max_prob).
  scores = sorted({k for _, e in rows for k in e["ood"]["auroc"]})
  sets = sorted({k for _, e in rows for row in e["ood"]["auroc"].values()
                 for k in row})
  lines = ["# Comparison", ""] + _table(
      ["model", "accuracy", "ECE", "IS (fresh)", "FID (fresh)",
       "class-cond. samples judged correct"],
      [[name, _fmt(e.get("accuracy"), True),
        _fmt(e.get("calibration", {}).get("ece"), True),
        _fmt(e["samples"]["fresh"]["inception_score"]),
        _fmt(e["samples"]["fresh"]["fid"]),
        _fmt(e["samples"].get("conditional", {}).get("judge_accuracy"), True)]
       for name, e in rows])
  for score in scores:
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
    workdir_lib.write_text(workdir_lib.path(output, workdir_lib.COMPARISON),
                           text)
  return text
