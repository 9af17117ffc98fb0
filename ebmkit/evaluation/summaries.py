"""The evaluation in TensorBoard: its numbers, figures and report, at the
evaluated checkpoint's step, next to the training curves."""

import glob
import os
import re

import numpy as np
import tensorflow as tf

from ebmkit import workdir as workdir_lib

EVAL_RUN = "eval"  # <workdir>/tensorboard/eval


def _tag(*parts):
  """A TensorBoard tag: parts joined by "/", odd characters as "_"."""
  return re.sub(r"[^A-Za-z0-9_.\-/]", "_", "/".join(str(p) for p in parts))


def evaluation_scalars(result):
  """The numbers of an evaluation dict as {TensorBoard tag: float}.

  Accuracy, ECE and the judge's accuracy; the detection threshold's test
  false- and true-positive rates; AUROC per OOD score and set (also of the
  score oriented on held-out data, where the evaluation has it); IS
  and FID of fresh and buffer samples, the test set's IS, the judged
  accuracy of class-conditional samples; PGD accuracy per threat model,
  target and ε; the distal adversarials' numbers; of a GAN's evaluation
  (kind "gan"), every number of its G(z) and DDLS samples
  (`samples/gan/…`, `samples/ddls/…`; their spread over draws `…_std`) and
  the discriminator's calibration. Parts the evaluation did not run (or
  numbers it could not compute, None) are left out.
  """
  found = {}

  def put(value, *tag):
    if isinstance(value, (int, float, np.number)) and not isinstance(
        value, bool):
      found[_tag(*tag)] = float(value)

  put(result.get("accuracy"), "accuracy")
  put(result.get("calibration", {}).get("ece"), "calibration", "ece")
  put(result.get("judge_test_accuracy"), "judge_test_accuracy")
  for key in ("test_fpr", "test_tpr"):
    put(result.get("detection", {}).get(key), "detection", key)
  ood = result.get("ood", {})
  for score, row in ood.get("auroc", {}).items():
    for name, value in row.items():
      put(value, "ood_auroc", score, name)
  for score, row in ood.get("orientation", {}).get("auroc", {}).items():
    for name, value in row.items():
      put(value, "ood_auroc_oriented", score, name)
  s = result.get("samples", {})
  for kind in ("fresh", "buffer"):
    for metric in ("inception_score", "fid"):
      put(s.get(kind, {}).get(metric), "samples", kind, metric)
  put(s.get("test_set", {}).get("inception_score"), "samples", "test_set",
      "inception_score")
  put(s.get("conditional", {}).get("judge_accuracy"), "samples",
      "conditional", "judge_accuracy")
  for norm in ("linf", "l2"):
    for target, curve in result.get("robustness", {}).get(norm, {}).items():
      for eps, accuracy in zip(curve["eps"], curve["accuracy"]):
        put(accuracy, "robustness", norm, target, f"eps_{eps:g}")
  d = result.get("distal", {})
  for key in ("reached_threshold", "judge_agrees", "mean_steps"):
    put(d.get(key), "distal", key)
  if result.get("kind") == "gan":  # G(z) vs DDLS (evaluation.gan_eval).
    for kind in ("gan", "ddls"):
      for key, value in result.get(kind, {}).items():
        put(value, "samples", kind, key)
        if key == "std":
          for metric, spread in value.items():
            put(spread, "samples", kind, metric + "_std")
    for key in ("scale", "shift"):
      put(result.get("discriminator_calibration", {}).get(key),
          "discriminator_calibration", key)
  return found


def checkpoint_step(path):
  """The step in a checkpoint's name (`.../ckpt-<step>`); 0 if it has none."""
  match = re.search(r"-(\d+)$", os.path.basename(str(path or "")))
  return int(match.group(1)) if match else 0


def write_evaluation_summaries(workdir, result):
  """Writes an evaluation to TensorBoard: its numbers (`evaluation_scalars`),
  every PNG under `<workdir>/figures/` (`figures/<name>`) and report.md
  (text `report`), in the run `<workdir>/tensorboard/eval` at the evaluated
  checkpoint's step, so they line up with the training curves.

  Args:
    workdir: the evaluated workdir.
    result: its evaluation dict (with "checkpoint").

  Returns:
    The TensorBoard run folder.
  """
  folder = workdir_lib.path(workdir, workdir_lib.TENSORBOARD, EVAL_RUN)
  step = checkpoint_step(result.get("checkpoint"))
  writer = tf.summary.create_file_writer(folder)
  with writer.as_default(step=step):
    for tag, value in evaluation_scalars(result).items():
      tf.summary.scalar(tag, value)
    for png in sorted(glob.glob(workdir_lib.path(workdir, workdir_lib.FIGURES,
                                                 "*.png"))):
      with open(png, "rb") as f:
        picture = tf.io.decode_png(f.read())
      tf.summary.image(_tag("figures", os.path.splitext(
          os.path.basename(png))[0]), picture[None])
    report = workdir_lib.path(workdir, workdir_lib.REPORT)
    if os.path.isfile(report):
      with open(report) as f:
        tf.summary.text("report", f.read())
  writer.close()
  return folder
