"""Markdown of GAN evaluations (`gan_eval`): report.md of one GAN workdir,
and the GAN-vs-DDLS table of several."""

import os

KIND = "gan"


def took(r):
  """The last line of both reports (this one's and render's): the
  evaluation's time and each part's."""
  parts = r.get("part_times_s")
  return (f"Evaluation took {r['wall_time_s']} s"
          + (": " + ", ".join(f"{name} {seconds:.0f} s"
                              for name, seconds in parts.items()) + "."
             if parts else "."))


def is_gan(result):
  return result.get("kind") == KIND


def _num(value, digits=3):
  return "–" if value is None else f"{value:.{digits}f}"


def _cell(part, key, percent=False):
  """A score, with "± std" when it comes from several draws."""
  value = part.get(key)
  if value is None:
    return "–"
  text = f"{100 * value:.1f}%" if percent else (
      f"{value:g}" if key == "modes_recovered" else _num(value))
  std = part.get("std", {}).get(key)
  if std is not None:
    text += f" ± {100 * std:.1f}%" if percent else (
        f" ± {std:.1f}" if key == "modes_recovered" else f" ± {_num(std)}")
  return text


def _rows(r):
  """(metric name, G(z) cell, DDLS cell) of one evaluation."""
  if "modes_recovered" in r["gan"]:
    return [("modes recovered (of 25)", _cell(r["gan"], "modes_recovered"),
             _cell(r["ddls"], "modes_recovered")),
            ("high-quality samples (within 4σ of a mode)",
             _cell(r["gan"], "high_quality", True),
             _cell(r["ddls"], "high_quality", True))]
  label = r.get("feature_network", {}).get("label", "")
  return [(f"IS ({label})", _cell(r["gan"], "inception_score"),
           _cell(r["ddls"], "inception_score")),
          (f"FID ({label}, vs test)", _cell(r["gan"], "fid"),
           _cell(r["ddls"], "fid")),
          ("judge confidence (mean max p(y|x))",
           _cell(r["gan"], "judge_confidence", True),
           _cell(r["ddls"], "judge_confidence", True)),
          ("classes the judge assigns", _cell(r["gan"], "classes_covered"),
           _cell(r["ddls"], "classes_covered"))]


def _calibration_text(r):
  c = r["discriminator_calibration"]
  if "skipped" in c:
    return f"d(x) is the discriminator's output: {c['skipped']}."
  return (f"The discriminator ({r['loss']} loss) is not a logit: it was "
          f"calibrated as d = {c['scale']:.4g}·D + {c['shift']:.4g}, a "
          f"logistic regression of {c['examples']} training examples vs "
          f"as many G(z) (log loss {c['log_loss']:.4f}; uncalibrated "
          f"{c['log_loss_uncalibrated']:.4f}).")


def report_markdown(r, workdir):
  """report.md of a GAN evaluation."""
  rel = lambda p: os.path.relpath(p, workdir)
  d = r["ddls_sampler"]
  lines = [f"# GAN evaluation: {os.path.basename(os.path.normpath(workdir))}",
           "", f"Checkpoint `{os.path.basename(r['checkpoint'])}`, data set "
           f"`{r['dataset']}`. {r['num_samples']} samples of each kind "
           f"from the same z ~ N(0, I) (draws: {r['draws']}): G(z), and DDLS "
           f"(Che et al. 2020) — {d['steps']} Langevin steps on "
           f"E(z) = −log p₀(z) − d(G(z)) (α = {d['step_size']:g}, "
           f"σ = {d['noise']:g}), then G.", "", _calibration_text(r), ""]
  lines += ["| | G(z) | DDLS |", "|---|---|---|"]
  lines += [f"| {m} | {a} | {b} |" for m, a, b in _rows(r)]
  if "judge_test_accuracy" in r:
    lines += ["", f"The independent classifier (the judge) has test accuracy "
              f"{100 * r['judge_test_accuracy']:.2f}%."]
  for name, path in r["figures"].items():
    lines += ["", f"![{name}]({rel(path)})"]
  lines += ["", took(r)]
  return "\n".join(lines) + "\n"


def comparison_lines(rows):
  """The GAN-vs-DDLS table of several (name, evaluation) rows."""
  lines = ["| model | metric | G(z) | DDLS |", "|---|---|---|---|"]
  for name, r in rows:
    for metric, a, b in _rows(r):
      lines.append(f"| {name} | {metric} | {a} | {b} |")
  return lines
