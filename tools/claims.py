"""Which of the JEM paper's claims hold, over seeds, on the embedded digits
or on Fashion-MNIST.

Trains the shipped JEM and plain-classifier configs with several seeds,
evaluates each workdir with the shipped evaluation, and writes a table of
mean ± standard deviation per model and a verdict per claim that the spread
allows:

  python tools/claims.py --seeds=3 --out=ebmkit_runs/claims
  python tools/claims.py --dataset=fashion_mnist --seeds=3 \
      --out=ebmkit_runs/claims_fashion_mnist
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
import shutil
import statistics
import subprocess
import sys
import time

from ebmkit import workdir as workdir_lib

DATASETS = {
    "digits": {"models": {"jem": "jem_digits.gin", "clf": "clf_digits.gin"},
               "recipes": {"jempp": "jempp_digits.gin",
                           "sadajem": "sadajem_digits.gin"},
               "ood_sets": ("interp", "uniform", "constant", "photos"),
               "scores": ("log_px",), "data": "digits"},
    "fashion_mnist": {
        "models": {"jem": "jem_fashion_mnist.gin",
                   "clf": "clf_fashion_mnist.gin"},
        # The successors (issue 22), compared with the two above by
        # --models=jem,clf,jempp,sadajem; the claims stay JEM's against the
        # classifier's.
        "recipes": {"jempp": "jempp_fashion_mnist.gin",
                    "sadajem": "sadajem_fashion_mnist.gin"},
        "ood_sets": ("mnist", "digits28", "vflip", "inverted", "uniform",
                     "constant", "interp"),
        "scores": ("log_px", "max_prob", "neg_grad_norm"),
        "data": "Fashion-MNIST images"},
}
MODELS = DATASETS["digits"]["models"]
OOD_SETS = DATASETS["digits"]["ood_sets"]
SCORE_WORDS = {"log_px": "log p(x)", "max_prob": "max p(y|x)",
               "neg_grad_norm": "gradient norm"}


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


def metrics(evaluation, ood_sets=OOD_SETS, scores=("log_px",)):
  """The quantities the claims compare, from one evaluation dict."""
  out = {
      "accuracy": _get(evaluation, "accuracy"),
      "ece": _get(evaluation, "calibration", "ece"),
      "distal_distance": _get(evaluation, "distal", "nearest_train_distance",
                              "distal", "mean"),
      "conditional_judged": _get(evaluation, "samples", "conditional",
                                 "judge_accuracy"),
      "fid_buffer": _get(evaluation, "samples", "buffer", "fid"),
      "fid_fresh": _get(evaluation, "samples", "fresh", "fid"),
  }
  for score in scores:
    for s in ood_sets:
      out[f"ood_{score}_{s}"] = _get(evaluation, "ood", "auroc", score, s)
    measured = [out[f"ood_{score}_{s}"] for s in ood_sets
                if out[f"ood_{score}_{s}"] is not None]
    # This run's mean over the OOD sets it measured (MNIST only where TFDS
    # could get it).
    out[f"ood_{score}_mean"] = statistics.fmean(measured) if measured else None
  for eps in (0.2, 0.3):
    out[f"pgd_linf_{eps}"] = _pgd(evaluation, "undefended", eps)
    out[f"pgd_linf_{eps}_defended"] = _pgd(evaluation, "SGLD defence", eps)
  return out


def claims_for(ood_sets=OOD_SETS, scores=("log_px",), data="digits"):
  """(claim, model A, metric A, model B, metric B, direction: A should be
  higher (+1) or lower (-1)) for every claim."""
  return [
      ("JEM's accuracy is at least the classifier's", "jem", "accuracy",
       "clf", "accuracy", +1),
      ("JEM is better calibrated (lower ECE)", "jem", "ece", "clf", "ece", -1),
  ] + [
      (f"JEM's {SCORE_WORDS[score]} detects {s} better (AUROC)", "jem",
       f"ood_{score}_{s}", "clf", f"ood_{score}_{s}", +1)
      for score in scores for s in ood_sets
  ] + [
      (f"The SGLD defence raises JEM's accuracy under L∞ PGD ε={eps}", "jem",
       f"pgd_linf_{eps}_defended", "jem", f"pgd_linf_{eps}", +1)
      for eps in (0.2, 0.3)
  ] + [
      (f"JEM is more robust than the classifier to L∞ PGD ε={eps} (no "
       f"defence)", "jem", f"pgd_linf_{eps}", "clf", f"pgd_linf_{eps}", +1)
      for eps in (0.2, 0.3)
  ] + [
      (f"JEM's distal adversarials lie closer to real {data} (L2 to the "
       "nearest training image)", "jem", "distal_distance", "clf",
       "distal_distance", -1),
      ("JEM's class-conditional samples are judged their class more often",
       "jem", "conditional_judged", "clf", "conditional_judged", +1),
  ]


CLAIMS = claims_for()


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


class RunFailed(Exception):
  """`python -m ebmkit.run` exited non-zero after `seconds`."""

  def __init__(self, args, seconds, returncode):
    super().__init__(f"python -m ebmkit.run {' '.join(args)} exited with "
                     f"{returncode} after {seconds:.0f} s")
    self.seconds = seconds


def run_ebmkit(args, cwd):
  """Runs `python -m ebmkit.run args`; returns its wall time in seconds."""
  print("+", " ".join(args), flush=True)
  started = time.time()
  done = subprocess.run([sys.executable, "-m", "ebmkit.run"] + args,
                        check=False, cwd=cwd)
  seconds = round(time.time() - started, 1)
  if done.returncode:
    raise RunFailed(args, seconds, done.returncode)
  return seconds


# The workdir layout is ebmkit's (ebmkit/workdir.py), not restated here.
JUDGE = os.path.join(workdir_lib.EVAL, workdir_lib.JUDGE)
TIMES = "claims_times.json"  # in each workdir: its training and eval times


def _has_checkpoint(workdir):
  folder = os.path.join(workdir, workdir_lib.CHECKPOINTS)
  return os.path.isdir(folder) and any(
      name.endswith(".index") for name in os.listdir(folder))


def run_record(workdir):
  """How training went: the recoveries it made (recoveries.json) and whether
  it gave up (the claims' times file)."""
  record = {"recoveries": 0, "gave_up": 0}
  try:
    with open(os.path.join(workdir, workdir_lib.RECOVERIES)) as f:
      record["recoveries"] = len(json.load(f))
  except (OSError, ValueError):
    pass  # No recovery.
  try:
    with open(os.path.join(workdir, TIMES)) as f:
      record["gave_up"] = int(bool(json.load(f).get("gave_up")))
  except (OSError, ValueError):
    pass
  return record


def evaluated(workdir):
  """Whether `workdir` holds a finished evaluation (a rerun skips it)."""
  try:
    with open(os.path.join(workdir, workdir_lib.RESULTS)) as f:
      return "evaluation" in json.load(f)
  except (OSError, ValueError):
    return False


def share_judge(judge, workdir):
  """Copies a judge classifier already trained into `workdir`'s eval folder.

  The judge depends on the data set, its split and its own fixed seed, not on
  the model evaluated, so every run of one data set can use the first one's
  (the evaluation loads an existing judge instead of training it). Returns
  whether it copied.
  """
  target = os.path.join(workdir, JUDGE)
  if not judge or not os.path.isfile(judge) or os.path.exists(target):
    return False
  os.makedirs(os.path.dirname(target), exist_ok=True)
  shutil.copyfile(judge, target)
  return True


# The per-model table: its columns, each (heading, metric key).
TABLE_COLUMNS = (("accuracy", "accuracy"), ("ECE", "ece"),
                 ("OOD AUROC of log p(x), mean over the sets measured",
                  "ood_log_px_mean"),
                 ("OOD AUROC of −‖∂log p(x)/∂x‖, mean over the sets measured",
                  "ood_neg_grad_norm_mean"),
                 ("L∞ PGD ε = 0.2, undefended", "pgd_linf_0.2"),
                 ("buffer FID", "fid_buffer"), ("fresh-chain FID", "fid_fresh"),
                 ("conditional samples judged their class",
                  "conditional_judged"),
                 ("recoveries", "recoveries"), ("gave up", "gave_up"))


def model_table(summary, times):
  """One row per model, mean ± sd over its seeds, and its mean wall time of
  training and evaluation."""
  lines = ["| model | " + " | ".join(h for h, _ in TABLE_COLUMNS)
           + " | train / eval (min) |",
           "|---" * (len(TABLE_COLUMNS) + 2) + "|"]
  for model, stats in summary.items():
    cells = []
    for _, key in TABLE_COLUMNS:
      s = stats.get(key)
      if s is None:
        cells.append("–")
      elif key in ("recoveries", "gave_up"):
        cells.append(f"{s['mean'] * s['n']:.0f} in {s['n']} runs")
      elif key.startswith("fid"):
        cells.append(f"{s['mean']:.3g} ± {s['sd']:.2g}")
      else:
        cells.append(f"{s['mean']:.3f} ± {s['sd']:.3f}")
    runs = [t for name, t in times.items() if name.startswith(f"{model}_seed")]
    took = "–"
    if runs:
      took = (f"{statistics.fmean(t.get('train_s', 0) for t in runs) / 60:.0f}"
              f" / {statistics.fmean(t.get('eval_s', 0) for t in runs) / 60:.0f}")
    lines.append(f"| {model} | " + " | ".join(cells) + f" | {took} |")
  return lines


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", choices=sorted(DATASETS),
                      default="digits")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--models", default="jem,clf",
                      help="comma-separated: jem, clf and the recipes jempp, "
                      "sadajem; the claims need jem and clf, the per-model "
                      "table shows every one")
  parser.add_argument("--out", default="ebmkit_runs/claims")
  parser.add_argument("--skip_training", action="store_true",
                      help="only tabulate workdirs already evaluated")
  parser.add_argument("--train_binding", action="append", default=[],
                      help="extra gin binding for training (repeatable)")
  parser.add_argument("--eval_binding", action="append", default=[],
                      help="extra gin binding for evaluation (repeatable)")
  parser.add_argument("--share_judge", action=argparse.BooleanOptionalAction,
                      default=True,
                      help="train the independent judge classifier once and "
                      "copy it to the other runs (it does not depend on the "
                      "model evaluated)")
  args = parser.parse_args(argv)
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  setting = DATASETS[args.dataset]
  configs = {**setting["models"], **setting["recipes"]}
  chosen = [m.strip() for m in args.models.split(",") if m.strip()]
  unknown = [m for m in chosen if m not in configs]
  if unknown or not chosen:
    parser.error(f"--models={args.models}: unknown {unknown}; choose from "
                 f"{', '.join(configs)}")
  values = {m: [] for m in chosen}
  times = {}  # workdir name -> {"train_s": ..., "eval_s": ...}
  judge = None  # the first judge classifier, shared by the later runs
  for seed in range(args.seeds):
    for model in chosen:
      config = configs[model]
      workdir = os.path.join(out, f"{model}_seed{seed}")
      if not args.skip_training and evaluated(workdir):
        print(f"{workdir}: already evaluated; kept.", flush=True)
      elif not args.skip_training:
        took = {}
        try:
          took["train_s"] = run_ebmkit(
              [f"--gin_file={config}", f"--workdir={workdir}",
               f"--gin_bindings=train.seed = {seed}"]
              + [f"--gin_bindings={b}" for b in args.train_binding], out)
        except RunFailed as failed:
          # Training that gives up after its recoveries leaves the state its
          # last rollback went to; that run is a result too (its divergences
          # are counted), so it is evaluated like the others.
          if not _has_checkpoint(workdir):
            raise
          print(f"{failed}; evaluating its newest checkpoint.", flush=True)
          took["train_s"], took["gave_up"] = failed.seconds, True
        took["judge_shared"] = args.share_judge and share_judge(judge,
                                                                workdir)
        took["eval_s"] = run_ebmkit(
            ["--mode=eval", f"--workdir={workdir}",
             f"--gin_bindings=evaluate.seed = {seed}"]
            + [f"--gin_bindings={b}" for b in args.eval_binding], out)
        with open(os.path.join(workdir, TIMES), "w") as f:
          json.dump(took, f)
      try:
        with open(os.path.join(workdir, TIMES)) as f:
          times[os.path.basename(workdir)] = json.load(f)
      except (OSError, ValueError):
        pass  # Evaluated before times were kept.
      if judge is None and os.path.isfile(os.path.join(workdir, JUDGE)):
        judge = os.path.join(workdir, JUDGE)
      with open(os.path.join(workdir, "results.json")) as f:
        values[model].append({
            **metrics(json.load(f)["evaluation"], setting["ood_sets"],
                      setting["scores"]),
            **run_record(workdir)})
  summary = {m: {k: _stats([v[k] for v in runs]) for k in runs[0]}
             for m, runs in values.items() if runs}
  cell = lambda s: "–" if s is None else f"{s['mean']:.3f} ± {s['sd']:.3f}"
  command = (f"python tools/claims.py --dataset={args.dataset} "
             f"--seeds={args.seeds}"
             + ("" if args.models == "jem,clf" else f" --models={args.models}"))
  lines = [f"{args.dataset}, over {args.seeds} seeds (mean ± standard "
           f"deviation; `{command}`).", ""]
  lines += model_table(summary, times)
  rows = []
  if "jem" in summary and "clf" in summary:
    for claim, ma, ka, mb, kb, direction in claims_for(
        setting["ood_sets"], setting["scores"], setting["data"]):
      a, b = summary[ma][ka], summary[mb][kb]
      rows.append((claim, f"{ma}: {cell(a)}", f"{mb}: {cell(b)}",
                   verdict(a, b, direction)))
    lines += ["", "A claim holds when the difference exceeds twice its "
              "standard error.", "",
              "| claim | A | B | verdict |", "|---|---|---|---|"]
    lines += [f"| {c} | {a} | {b} | {v} |" for c, a, b, v in rows]
  if times:
    total = sum(t.get("train_s", 0) + t.get("eval_s", 0)
                for t in times.values())
    lines += ["", f"Wall time of the {len(times)} runs timed here (training "
              f"and evaluation): {total / 3600:.2f} h."]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out, "claims.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "claims.json"), "w") as f:
    json.dump({"dataset": args.dataset, "seeds": args.seeds,
               "wall_times_s": times, "summary": summary,
               "claims": [dict(zip(("claim", "a", "b", "verdict"), r))
                          for r in rows]}, f, indent=2)
  print(text)
  return rows


if __name__ == "__main__":
  main()
