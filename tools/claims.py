"""Which of the JEM paper's claims hold on the embedded digits, over seeds.

Trains the shipped JEM and plain-classifier configs with several seeds,
evaluates each workdir with the shipped evaluation, and writes a table of
mean ± standard deviation per model and a verdict per claim that the spread
allows:

  python tools/claims.py --seeds=3 --out=ebmkit_runs/claims
  python tools/claims.py --seeds=3 --out=... --skip_training   # re-tabulate

A claim "A beats B on m" holds when the difference of the means, in the
claimed direction, exceeds twice its standard error
(sqrt(sd_A²/n + sd_B²/n)); it does not hold when it exceeds that the other
way; otherwise the seeds do not resolve it. Writes <out>/claims.md and
<out>/claims.json and prints the table.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

MODELS = {"jem": "jem_digits.gin", "clf": "clf_digits.gin"}
OOD_SETS = ("interp", "uniform", "constant", "photos")


def _get(d, *path):
  for key in path:
    if isinstance(d, dict) and key in d:
      d = d[key]
    elif isinstance(d, list) and isinstance(key, int) and key < len(d):
      d = d[key]
    else:
      return None
  return d


def _pgd(evaluation, label, eps):
  """Accuracy under L∞ PGD at `eps` for "undefended" / "SGLD defence"."""
  curve = _get(evaluation, "robustness", "linf", label)
  if not curve:
    return None
  for e, a in zip(curve["eps"], curve["accuracy"]):
    if math.isclose(e, eps):
      return a
  return None


def metrics(evaluation):
  """The quantities the claims compare, from one evaluation dict."""
  out = {
      "accuracy": _get(evaluation, "accuracy"),
      "ece": _get(evaluation, "calibration", "ece"),
      "distal_distance": _get(evaluation, "distal", "nearest_train_distance",
                              "distal", "mean"),
      "conditional_judged": _get(evaluation, "samples", "conditional",
                                 "judge_accuracy"),
  }
  for s in OOD_SETS:
    out[f"ood_log_px_{s}"] = _get(evaluation, "ood", "auroc", "log_px", s)
  for eps in (0.2, 0.3):
    out[f"pgd_linf_{eps}"] = _pgd(evaluation, "undefended", eps)
    out[f"pgd_linf_{eps}_defended"] = _pgd(evaluation, "SGLD defence", eps)
  return out


# (claim, model A, metric A, model B, metric B, direction: A should be
# higher (+1) or lower (-1)).
CLAIMS = [
    ("JEM's accuracy is at least the classifier's", "jem", "accuracy",
     "clf", "accuracy", +1),
    ("JEM is better calibrated (lower ECE)", "jem", "ece", "clf", "ece", -1),
] + [
    (f"JEM's log p(x) detects {s} better (AUROC)", "jem",
     f"ood_log_px_{s}", "clf", f"ood_log_px_{s}", +1) for s in OOD_SETS
] + [
    (f"The SGLD defence raises JEM's accuracy under L∞ PGD ε={eps}", "jem",
     f"pgd_linf_{eps}_defended", "jem", f"pgd_linf_{eps}", +1)
    for eps in (0.2, 0.3)
] + [
    (f"JEM is more robust than the classifier to L∞ PGD ε={eps} (no "
     f"defence)", "jem", f"pgd_linf_{eps}", "clf", f"pgd_linf_{eps}", +1)
    for eps in (0.2, 0.3)
] + [
    ("JEM's distal adversarials lie closer to real digits (L2 to the "
     "nearest training image)", "jem", "distal_distance", "clf",
     "distal_distance", -1),
    ("JEM's class-conditional samples are judged their class more often",
     "jem", "conditional_judged", "clf", "conditional_judged", +1),
]


def _stats(values):
  values = [v for v in values if v is not None]
  if not values:
    return None
  sd = statistics.stdev(values) if len(values) > 1 else 0.0
  return {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}


def verdict(a, b, direction):
  """"holds" / "does not hold" / "not resolved" by the 2-standard-error rule."""
  if a is None or b is None:
    return "not measured"
  diff = direction * (a["mean"] - b["mean"])
  se = math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"])
  if a["n"] < 2 or b["n"] < 2:
    return "single seed: not resolved"
  if diff > 2 * se:
    return "holds"
  if diff < -2 * se:
    return "does not hold"
  return "not resolved by the spread"


def _run(args, cwd):
  print("+", " ".join(args), flush=True)
  subprocess.run([sys.executable, "-m", "ebmkit.run"] + args, check=True,
                 cwd=cwd)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--out", default="ebmkit_runs/claims")
  parser.add_argument("--skip_training", action="store_true",
                      help="only tabulate workdirs already evaluated")
  parser.add_argument("--train_binding", action="append", default=[],
                      help="extra gin binding for training (repeatable)")
  parser.add_argument("--eval_binding", action="append", default=[],
                      help="extra gin binding for evaluation (repeatable)")
  args = parser.parse_args(argv)
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  values = {m: [] for m in MODELS}
  for seed in range(args.seeds):
    for model, config in MODELS.items():
      workdir = os.path.join(out, f"{model}_seed{seed}")
      if not args.skip_training:
        _run([f"--gin_file={config}", f"--workdir={workdir}",
              f"--gin_bindings=train.seed = {seed}"]
             + [f"--gin_bindings={b}" for b in args.train_binding], out)
        _run(["--mode=eval", f"--workdir={workdir}",
              f"--gin_bindings=evaluate.seed = {seed}"]
             + [f"--gin_bindings={b}" for b in args.eval_binding], out)
      with open(os.path.join(workdir, "results.json")) as f:
        values[model].append(metrics(json.load(f)["evaluation"]))
  summary = {m: {k: _stats([v[k] for v in runs]) for k in runs[0]}
             for m, runs in values.items() if runs}
  rows = []
  for claim, ma, ka, mb, kb, direction in CLAIMS:
    a, b = summary[ma][ka], summary[mb][kb]
    cell = lambda s: "–" if s is None else f"{s['mean']:.3f} ± {s['sd']:.3f}"
    rows.append((claim, f"{ma}: {cell(a)}", f"{mb}: {cell(b)}",
                 verdict(a, b, direction)))
  lines = [f"Over {args.seeds} seeds (mean ± standard deviation; "
           f"`python tools/claims.py --seeds={args.seeds}`). A claim holds "
           "when the difference exceeds twice its standard error.", "",
           "| claim | A | B | verdict |", "|---|---|---|---|"]
  lines += [f"| {c} | {a} | {b} | {v} |" for c, a, b, v in rows]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out, "claims.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "claims.json"), "w") as f:
    json.dump({"seeds": args.seeds, "summary": summary,
               "claims": [dict(zip(("claim", "a", "b", "verdict"), r))
                          for r in rows]}, f, indent=2)
  print(text)
  return rows


if __name__ == "__main__":
  main()
