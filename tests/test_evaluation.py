"""Evaluation on a small trained digits model: PGD, the report, compare;
report.md and the comparison from made-up evaluation dicts."""

import json
import math
import os
import shutil

import numpy as np
import pytest

from ebmkit import gin_utils
from ebmkit import workdir as workdir_lib
from ebmkit.evaluation import adversarial, evaluate, render

TINY_EVAL = ["evaluate.sample_steps = 20", "evaluate.num_samples = 64",
             "evaluate.pgd_examples = 32", "evaluate.linf_eps = (0.0, 0.2)",
             "evaluate.l2_eps = (0.0, 1.0)", "evaluate.pgd_steps = 3",
             "evaluate.defense_steps = 2", "evaluate.defense_duplicates = 2",
             "evaluate.distal_per_class = 1", "evaluate.distal_steps = 30",
             "evaluate.judge_epochs = 2", "evaluate.ood_examples = 64"]


def logits_of(model):
  return lambda v: model(v)["logits"]


def test_pgd_with_zero_eps_changes_nothing(trained):
  _, model, x, y = trained
  x_adv = adversarial.pgd(logits_of(model), x, y, eps=0.0)
  np.testing.assert_array_equal(x_adv, x)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.5)])
def test_pgd_stays_in_its_ball_and_the_data_range(trained, norm, eps):
  _, model, x, y = trained
  delta = adversarial.pgd(logits_of(model), x, y, eps, norm,
                          steps=5).numpy() - x
  if norm == "linf":
    assert np.abs(delta).max() <= eps + 1e-6
  else:
    assert np.sqrt((delta ** 2).sum(axis=(1, 2, 3))).max() <= eps + 1e-5
  assert (x + delta).min() >= -1 - 1e-6 and (x + delta).max() <= 1 + 1e-6


@pytest.mark.parametrize("norm, grid", [("linf", (0.0, 0.05, 0.15, 0.4)),
                                        ("l2", (0.0, 0.5, 1.5, 3.0))])
def test_accuracy_does_not_rise_with_eps(trained, norm, grid):
  _, model, x, y = trained
  fn = logits_of(model)
  accs = [adversarial.accuracy(fn, adversarial.pgd(fn, x, y, e, norm,
                                                   steps=10).numpy(), y)
          for e in grid]
  assert accs[0] == adversarial.accuracy(fn, x, y) > 0.7
  assert all(b <= a for a, b in zip(accs, accs[1:])), accs
  assert accs[-1] < accs[0]  # The attack does something.


def test_defended_classifier_keeps_clean_accuracy(trained):
  _, model, x, y = trained
  defended = adversarial.sgld_defended_logits(model, steps=5, step_size=1.0,
                                              noise=0.01, duplicates=2)
  assert adversarial.accuracy(defended, x, y) >= adversarial.accuracy(
      logits_of(model), x, y) - 0.1


def test_distal_adversarials_climb_towards_their_class(trained):
  _, model, _, _ = trained
  x, probs, _ = adversarial.distal_adversarials(model, (8, 8, 1), 10,
                                                per_class=1, steps=200)
  assert x.shape == (10, 8, 8, 1) and np.abs(x).max() <= 1.0
  # The same uniform starts (seed 0) before any step:
  start = np.random.default_rng(0).uniform(-1, 1, (10, 8, 8, 1))
  p0 = np.exp(model(start.astype(np.float32))["log_pyx"].numpy())[
      np.arange(10), np.arange(10)]
  assert np.all(probs > p0)
  # This 4-epoch model is under-confident (its best in the [-1, 1] box is
  # below 0.9 for some classes); the fully trained one reaches 0.9 for all
  # (README, evaluation results). Here: well above chance (0.1) for every c.
  assert probs.min() > 0.3


def test_eval_run_writes_the_whole_report(trained, tmp_path):
  workdir = str(tmp_path / "jem")
  shutil.copytree(trained[0], workdir)
  gin_utils.parse([os.path.join(workdir, "operative_config.gin")], TINY_EVAL)
  result = evaluate.evaluate(workdir=workdir)
  figures = sorted(os.listdir(os.path.join(workdir, "figures")))
  assert figures == sorted([
      "reliability.png", "ood_log_px.png", "ood_max_prob.png",
      "ood_neg_grad_norm.png", "robustness.png", "distal.png",
      "samples_fresh.png", "samples_buffer.png", "samples_conditional.png"])
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  assert saved["evaluation"]["accuracy"] == result["accuracy"]
  assert "test_accuracy" in saved  # The training summary is kept.
  assert set(result["ood"]["auroc"]["log_px"]) == {"interp", "uniform",
                                                   "constant", "photos"}
  assert result["feature_extractor"]["name"] == "classifier"
  text = open(os.path.join(workdir, "report.md")).read()
  for figure in figures:
    assert f"figures/{figure}" in text
  assert "| log_px |" in text and "SGLD defence" in text

  # Side by side: a second (copied) evaluated workdir.
  other = str(tmp_path / "clf")
  shutil.copytree(workdir, other)
  table = render.compare([workdir, other], output=str(tmp_path))
  assert "| jem |" in table and "| clf |" in table
  assert os.path.isfile(os.path.join(tmp_path, "comparison.md"))


def test_formerly_fixed_settings_are_bindable_and_used(trained, tmp_path):
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ebmkit import data  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "jem")
  shutil.copytree(trained[0], workdir)
  gin_utils.parse([os.path.join(workdir, "operative_config.gin")], [
      *TINY_EVAL, "evaluate.sgld_defense = False",  # Faster; not tested here.
      "evaluate.distal_threshold = 0.5", "evaluate.distal_step_size = 0.05",
      "evaluate.conditional_per_class = 3",
      "evaluate.judge_learning_rate = 0.002",
      "evaluate.judge_batch_size = 128"])
  evaluate.evaluate(workdir=workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)["evaluation"]

  # Distal adversarials: the bound step size and threshold are recorded and
  # drive the ascent: the same 10 starts (seed 0, 30 steps, 1 per class)
  # attacked directly stop at the same steps and pass 0.5 as often.
  distal = saved["distal"]
  assert (distal["threshold"], distal["step_size"]) == (0.5, 0.05)
  _, probs, taken = adversarial.distal_adversarials(
      trained[1], (8, 8, 1), 10, per_class=1, steps=30, step_size=0.05,
      threshold=0.5, seed=0)
  assert distal["mean_steps"] == pytest.approx(np.mean(taken))
  assert distal["reached_threshold"] == pytest.approx(np.mean(probs > 0.5))
  assert "p(y = c|x) > 0.5" in open(os.path.join(workdir, "report.md")).read()

  # 3 class-conditional samples per class (default 10 for 10 classes): 30
  # cells of 8·4 + 1 pixels, 6 columns (two classes per row), 5 rows.
  assert saved["samples"]["conditional"]["per_class"] == 3
  grid = tf.io.decode_png(tf.io.read_file(os.path.join(
      workdir, "figures", "samples_conditional.png"))).shape
  assert grid[:2] == (5 * 33 + 1, 6 * 33 + 1)

  # The judge: Adam's learning rate as bound, and as many updates as
  # batches of 128 in 2 epochs (64 per batch would make twice as many).
  judge = keras.models.load_model(os.path.join(workdir, "eval",
                                               "judge.keras"))
  assert float(judge.optimizer.learning_rate) == pytest.approx(0.002)
  n_train = sum(int(x.shape[0]) for x, _ in data.load_dataset(
      split=gin_utils.bound("train.train_split", "train"), training=False))
  assert int(judge.optimizer.iterations) == 2 * math.ceil(n_train / 128)


def test_inception_without_local_weights_is_explained(monkeypatch, tmp_path):
  from ebmkit.evaluation import judge  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="never downloads them"):
    judge.inception_extractor()


def test_compare_needs_evaluated_workdirs(tmp_path):
  with pytest.raises(FileNotFoundError, match="--mode=eval"):
    render.compare([str(tmp_path)])


def test_tfds_ood_sets_are_resized_to_the_input(monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from ebmkit.evaluation import ood  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=6):
    faces = ood.ood_set("celeb_a", np.zeros((1, 32, 32, 3)), 4)
    grey = ood.ood_set("svhn_cropped", np.zeros((1, 8, 8, 1)), 4)
  assert faces.shape == (4, 32, 32, 3) and grey.shape == (4, 8, 8, 1)
  assert faces.min() >= -1 and faces.max() <= 1


def test_synthetic_ood_sets():
  from ebmkit.evaluation import ood  # pylint: disable=g-import-not-at-top
  test = np.stack([np.full((8, 8, 1), -1.0), np.full((8, 8, 1), 1.0)])
  interp = ood.synthetic_set("interp", test, 50)
  # Each is the average of two of the images: -1, 0 or 1 everywhere.
  assert set(np.unique(interp)) <= {-1.0, 0.0, 1.0}
  constant = ood.synthetic_set("constant", test, 5)
  assert np.all(constant.max(axis=(1, 2, 3)) == constant.min(axis=(1, 2, 3)))
  photos = ood.synthetic_set("photos", test, 5)
  assert photos.shape == (5, 8, 8, 1) and photos.std() > 0.05


def made_up_evaluation(workdir, classifies=True):
  """An evaluation dict with small, made-up numbers (no model behind it)."""
  figure = lambda name: os.path.join(workdir, "figures", name)
  auroc = {"log_px": {"interp": 0.875, "uniform": 0.5}}
  if classifies:
    auroc["max_prob"] = {"interp": 0.25, "uniform": 1.0}
  result = {
      "checkpoint": "ckpt-7", "dataset": "sklearn_digits",
      "test_split": "test", "test_examples": 360,
      "feature_extractor": {"name": "classifier",
                            "description": "a made-up judge"},
      "judge_test_accuracy": 0.95,
      "ood": {"sets": ["interp", "uniform", "cifar100"], "examples": 64,
              "auroc": auroc,
              "figures": {k: figure(f"ood_{k}.png") for k in auroc},
              "skipped": {"cifar100": "cifar100 is not prepared"}},
      "samples": {"steps": 20, "num_samples": 64,
                  "figures": {"fresh": figure("samples_fresh.png"),
                              "buffer": figure("samples_buffer.png")},
                  "fresh": {"inception_score": 7.123, "fid": 45.678},
                  "buffer": {"inception_score": 6.5, "fid": 50.0},
                  "test_set": {"inception_score": 9.25}},
      "wall_time_s": 12.5}
  if classifies:
    result.update({
        "accuracy": 0.9325,
        "calibration": {"ece": 0.034, "num_bins": 15,
                        "figure": figure("reliability.png")},
        "robustness": {
            "examples": 32, "pgd_steps": 3, "pgd_step_size": "2.5·ε/steps",
            "pgd_random_start": True, "defense": None,
            "linf": {"undefended": {"eps": [0.0, 0.2],
                                    "accuracy": [0.9, 0.4]},
                     "SGLD defence": {"eps": [0.0, 0.2],
                                      "accuracy": [0.875, 0.625]}},
            "l2": {"undefended": {"eps": [0.0, 1.0], "accuracy": [0.9, 0.5]}},
            "figure": figure("robustness.png")},
        "distal": {"per_class": 2, "steps": 30, "step_size": 0.05,
                   "threshold": 0.5, "reached_threshold": 0.75,
                   "mean_steps": 12.4, "judge_agrees": 0.6,
                   "figure": figure("distal.png")}})
    result["samples"]["conditional"] = {
        "per_class": 3, "judge_accuracy": 0.9,
        "figure": figure("samples_conditional.png")}
  return result


def tables(text):
  """The markdown tables in `text`, by their first header cell, each a list
  (in order) of {row label: {column header: cell}}."""
  split = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]
  blocks, current = [], []
  for line in text.splitlines() + [""]:
    if line.startswith("|"):
      current.append(split(line))
    elif current:
      blocks.append(current)
      current = []
  out = {}
  for head, _, *body in blocks:  # The header, the rule, the rows.
    out.setdefault(head[0], []).append(
        {row[0]: dict(zip(head[1:], row[1:])) for row in body})
  return out


def test_report_puts_each_number_in_its_cell(tmp_path):
  workdir = str(tmp_path / "jem")
  render.write_report(made_up_evaluation(workdir), workdir)
  text = open(os.path.join(workdir, "report.md")).read()
  t = tables(text)
  assert t["model"][0]["jem"] == {
      "accuracy": "93.25%", "IS (fresh)": "7.123", "FID (fresh)": "45.678",
      "IS (buffer)": "6.500", "FID (buffer)": "50.000", "ECE": "3.40%"}
  assert t["score"][0] == {"log_px": {"interp": "0.875", "uniform": "0.500"},
                           "max_prob": {"interp": "0.250",
                                        "uniform": "1.000"}}
  assert t["linf ε"][0] == {"undefended": {"0": "90.00%", "0.2": "40.00%"},
                            "SGLD defence": {"0": "87.50%", "0.2": "62.50%"}}
  assert t["l2 ε"][0] == {"undefended": {"0": "90.00%", "1": "50.00%"}}
  assert "Skipped OOD set `cifar100`: cifar100 is not prepared." in text
  assert ("Noise driven to p(y = c|x) > 0.5, 2 per class" in text
          and "75.00% got there (mean 12 steps)" in text
          and "target class for 60.00%" in text)
  assert "(3 per class, classes in order)" in text and "assigns 90.00%" in text
  assert "ECE 3.40% (15 equal-width bins)" in text
  assert "IS of the test set itself: 9.250" in text
  for name in ("reliability", "ood_log_px", "ood_max_prob", "robustness",
               "distal", "samples_fresh", "samples_buffer",
               "samples_conditional"):
    assert f"(figures/{name}.png)" in text  # Relative to the workdir.


def test_comparison_puts_each_number_in_its_cell(tmp_path):
  dirs = [str(tmp_path / "jem"), str(tmp_path / "igebm")]
  for w, classifies in zip(dirs, (True, False)):
    workdir_lib.write_json(os.path.join(w, "results.json"), {
        "evaluation": made_up_evaluation(w, classifies)})
  text = render.compare(dirs, output=str(tmp_path / "out"))
  assert open(tmp_path / "out" / "comparison.md").read() == text
  summary, log_px, max_prob = tables(text)["model"][:3]
  assert summary["jem"] == {"accuracy": "93.25%", "ECE": "3.40%",
                            "IS (fresh)": "7.123", "FID (fresh)": "45.678",
                            "class-cond. samples judged correct": "90.00%"}
  assert summary["igebm"]["accuracy"] == "–"
  assert summary["igebm"]["IS (fresh)"] == "7.123"
  assert log_px == {"jem": {"interp": "0.875", "uniform": "0.500"},
                    "igebm": {"interp": "0.875", "uniform": "0.500"}}
  # The unconditional model has no max_prob score: dashes, not an error.
  assert max_prob == {"jem": {"interp": "0.250", "uniform": "1.000"},
                      "igebm": {"interp": "–", "uniform": "–"}}
  assert "OOD AUROC, score max_prob:" in text
  linf = tables(text)["model"][3]
  assert linf == {"jem (undefended)": {"ε=0": "90.00%", "ε=0.2": "40.00%"},
                  "jem (SGLD defence)": {"ε=0": "87.50%", "ε=0.2": "62.50%"}}
