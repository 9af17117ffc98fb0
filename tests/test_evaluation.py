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

from conftest import TINY_EVAL


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
  # Each score's sign is chosen on held-out data: the oriented AUROC on
  # the test data is the defined one, or 1 − it where the sign flips.
  orientation = result["ood"]["orientation"]
  for score, row in result["ood"]["auroc"].items():
    for name, value in row.items():
      sign = orientation["sign"][score][name]
      assert sign == (1 if orientation["held_out_auroc"][score][name] >= 0.5
                      else -1)
      assert orientation["auroc"][score][name] == pytest.approx(
          value if sign > 0 else 1 - value)
  # The detection threshold comes from the held-out end of the train split.
  assert result["detection"]["calibration"]["split"] == (
      "the last 10% of `train`")
  assert result["samples"]["buffer"]["num_samples"] == 64
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
  from ebmkit.data import pipeline as data  # pylint: disable=g-import-not-at-top
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

  # 3 class-conditional samples per class (default 10 for 10 classes): one
  # row per class, 3 cells of 1 inch at 110 dpi plus 0.9 inch of row labels
  # across; 10 rows of 1.25 inches (with captions) plus 0.5 for the title.
  assert saved["samples"]["conditional"]["per_class"] == 3
  grid = tf.io.decode_png(tf.io.read_file(os.path.join(
      workdir, "figures", "samples_conditional.png"))).shape
  assert grid[:2] == (round((10 * 1.25 + 0.5) * 110),
                      round((3 * 1.0 + 0.9) * 110))

  # The judge: Adam's learning rate as bound, and as many updates as
  # batches of 128 in 2 epochs (64 per batch would make twice as many), over
  # the training split less its last 10% (held out: the digits config has
  # no validation split).
  judge = keras.models.load_model(os.path.join(workdir, "eval",
                                               "judge.keras"))
  assert float(judge.optimizer.learning_rate) == pytest.approx(0.002)
  n_train = sum(int(x.shape[0]) for x, _ in data.load_dataset(
      split=gin_utils.bound("train.train_split", "train"), training=False))
  n_held = round(0.1 * n_train)
  assert saved["held_out"] == {"split": "the last 10% of `train`",
                               "examples": n_held, "seen_by_model": True}
  assert int(judge.optimizer.iterations) == 2 * math.ceil(
      (n_train - n_held) / 128)


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
  auroc = {"log_px": {"interp": 0.875, "uniform": 0.5},
           "neg_grad_norm": {"interp": 0.0, "uniform": 0.75}}
  sign = {"log_px": {"interp": 1, "uniform": 1},
          "neg_grad_norm": {"interp": -1, "uniform": 1}}
  oriented = {"log_px": {"interp": 0.875, "uniform": 0.5},
              "neg_grad_norm": {"interp": 1.0, "uniform": 0.75}}
  if classifies:
    auroc["max_prob"] = {"interp": 0.25, "uniform": 1.0}
    sign["max_prob"] = {"interp": 1, "uniform": 1}
    oriented["max_prob"] = auroc["max_prob"]
  held_out = {"split": "the last 10% of `train`", "examples": 144,
              "seen_by_model": True}
  result = {
      "checkpoint": "ckpt-7", "dataset": "sklearn_digits",
      "test_split": "test", "test_examples": 360, "held_out": held_out,
      "feature_extractor": {"name": "classifier", "label": "judge-classifier",
                            "description": "a made-up judge",
                            "standard": False},
      "judge_test_accuracy": 0.95,
      "ood": {"sets": ["interp", "uniform", "cifar100"], "examples": 64,
              "auroc": auroc,
              "orientation": {"held_out": held_out, "examples": 64,
                              "sign": sign, "held_out_auroc": oriented,
                              "auroc": oriented},
              "figures": {k: figure(f"ood_{k}.png") for k in auroc},
              "skipped": {"cifar100": "cifar100 is not prepared"}},
      "samples": {"steps": 20, "num_samples": 500, "draws": 1,
                  "feature_network": {"name": "classifier",
                                      "label": "judge-classifier",
                                      "description": "a made-up judge",
                                      "standard": False},
                  "fid_reference": {"split": "test", "examples": 360},
                  "figures": {"fresh": figure("samples_fresh.png"),
                              "buffer": figure("samples_buffer.png")},
                  "fresh": {"inception_score": 7.123, "fid": 45.678,
                            "num_samples": 500, "draws": 1,
                            "std": {"inception_score": 0.0, "fid": 0.0}},
                  "buffer": {"inception_score": 6.5, "fid": 50.0,
                             "num_samples": 64, "draws": 1,
                             "std": {"inception_score": 0.0, "fid": 0.0}},
                  "test_set": {"inception_score": 9.25, "num_samples": 360}},
      "wall_time_s": 12.5}
  if classifies:
    result.update({
        "accuracy": 0.9325,
        "calibration": {"ece": 0.034, "num_bins": 15,
                        "figure": figure("reliability.png")},
        "detection": {"calibration": held_out, "calibration_examples": 144,
                      "target_fpr": 0.05, "threshold": -1.25,
                      "calibration_tpr": 0.875, "test_fpr": 0.0625,
                      "test_tpr": 0.9, "test_examples": 360},
        "robustness": {
            "examples": 32, "pgd_steps": 3, "pgd_step_size": "2.5·ε/steps",
            "pgd_random_start": True, "pgd_restarts": 5,
            "defense": {"steps": 10, "step_size": 1.0, "noise": 0.01,
                        "duplicates": 4, "eot_samples": 8,
                        "gradient": "straight-through (BPDA)"},
            "linf": {"undefended": {"eps": [0.0, 0.2],
                                    "accuracy": [0.9, 0.4]},
                     "SGLD defence": {"eps": [0.0, 0.2],
                                      "accuracy": [0.875, 0.625]}},
            "l2": {"undefended": {"eps": [0.0, 1.0], "accuracy": [0.9, 0.5]}},
            "figure": figure("robustness.png")},
        "distal": {"per_class": 2, "steps": 30, "step_size": 0.05,
                   "threshold": 0.5, "reached_threshold": 0.75,
                   "mean_steps": 12.4, "judge_agrees": 0.6,
                   "nearest_train_distance": {
                       "distal": {"mean": 6.5, "std": 0.25, "examples": 20},
                       "test": {"mean": 2.125, "std": 0.5,
                                "examples": 360}},
                   "figure": figure("distal.png")}})
    result["samples"]["conditional"] = {
        "per_class": 3, "judge_accuracy": 0.9, "judge_accuracy_std": 0.0,
        "figure": figure("samples_conditional.png")}
  else:  # An IGEBM-like model: no classes; it samples, by two draws.
    for part, fid_std in (("fresh", 2.5), ("buffer", 1.5)):
      result["samples"][part].update(
          draws=2, std={"inception_score": 0.125, "fid": fid_std})
    result["samples"]["draws"] = 2
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
  # Every IS/FID says its network and sample count (item 17, 22).
  assert t["model"][0]["jem"] == {
      "accuracy": "93.25%", "judge-classifier IS (fresh, n=500)": "7.123",
      "judge-classifier FID (fresh, n=500)": "45.678",
      "judge-classifier IS (buffer, n=64)": "6.500",
      "judge-classifier FID (buffer, n=64)": "50.000", "ECE": "3.40%"}
  assert "## Hybrid modelling (the quantities of the paper's Table 1, " \
         "measured here)" in text
  assert "the paper's Table 1)" not in text  # No claim to be its table.
  assert ("These judge-classifier IS/FID are not comparable to the paper's"
          in text and "they use 500 samples, not 50,000" in text)
  assert "buffer samples: 64 drawn from the replay buffer; single draw" in text
  # OOD: the defined sign, then the sign chosen on held-out data.
  assert t["score"][0] == {
      "log_px": {"interp": "0.875", "uniform": "0.500"},
      "neg_grad_norm": {"interp": "0.000", "uniform": "0.750"},
      "max_prob": {"interp": "0.250", "uniform": "1.000"}}
  assert t["score, sign chosen on held-out data"][0]["neg_grad_norm"] == {
      "interp": "↓ 1.000", "uniform": "0.750"}
  assert "higher means in-distribution, as in the paper" in text
  assert t["linf ε"][0] == {"undefended": {"0": "90.00%", "0.2": "40.00%"},
                            "SGLD defence": {"0": "87.50%", "0.2": "62.50%"}}
  assert t["l2 ε"][0] == {"undefended": {"0": "90.00%", "1": "50.00%"}}
  assert "5 restart(s)" in text
  assert ("straight-through gradient (BPDA) with EOT over 8 draw(s)" in text
          and "Gradient masking is possible" in text)
  assert "Skipped OOD set `cifar100`: cifar100 is not prepared." in text
  assert ("Noise driven to p(y = c|x) > 0.5, 2 per class" in text
          and "75.00% got there (mean 12 steps)" in text
          and "target class for 60.00%" in text)
  assert ("distal adversarials 6.500 ± 0.250, real test images 2.125 ± "
          "0.500 (360 images)") in text
  assert "one row per class" in text and "assigns 90.00%" in text
  assert "ECE 3.40% (15 equal-width bins)" in text
  assert "The test set's own judge-classifier IS (n=360): 9.250" in text
  # Detection: which split the threshold comes from, and the test rates.
  assert ("calibrated on held-out data, the last 10% of `train` (144 "
          "examples)") in text
  assert "false-positive rate 6.25%, true-positive rate 90.00%" in text
  assert "seen by the model in training" in text
  for name in ("reliability", "ood_log_px", "ood_max_prob", "robustness",
               "distal", "samples_fresh", "samples_buffer",
               "samples_conditional"):
    assert f"(figures/{name}.png)" in text  # Relative to the workdir.


def test_report_of_a_model_without_buffer_samples(tmp_path):
  workdir = str(tmp_path / "clf")
  result = made_up_evaluation(workdir)
  result["samples"]["buffer"] = {"skipped": "the model never samples"}
  del result["samples"]["figures"]["buffer"]
  text = render.report_markdown(result, workdir)
  row = tables(text)["model"][0]["clf"]
  assert row["judge-classifier IS (buffer, n=–)"] == "skipped"
  assert "Buffer IS/FID skipped: the model never samples." in text
  assert "buffer samples: none; single draw." in text
  assert "samples_buffer.png" not in text


def test_report_with_the_standard_network_says_it_is_comparable(tmp_path):
  workdir = str(tmp_path / "jem")
  result = made_up_evaluation(workdir)
  result["samples"]["feature_network"] = {
      "name": "inception_pool3", "label": "Inception-pool3",
      "description": "the standard FID network", "standard": True}
  result["samples"]["fresh"]["num_samples"] = 50000
  text = render.report_markdown(result, workdir)
  assert "Inception-pool3 IS/FID use the standard network and 50,000" in text
  assert "Inception-pool3 FID (fresh, n=50000)" in text
  assert "not comparable" not in text


def test_comparison_puts_each_number_in_its_cell(tmp_path):
  dirs = [str(tmp_path / "jem"), str(tmp_path / "igebm")]
  for w, classifies in zip(dirs, (True, False)):
    workdir_lib.write_json(os.path.join(w, "results.json"), {
        "evaluation": made_up_evaluation(w, classifies)})
  text = render.compare(dirs, output=str(tmp_path / "out"))
  assert open(tmp_path / "out" / "comparison.md").read() == text
  summary, log_px, max_prob, neg_grad_norm = tables(text)["model"][:4]
  assert summary["jem"] == {
      "accuracy": "93.25%", "ECE": "3.40%",
      "IS/FID network (n fresh / buffer)": "judge-classifier (500 / 64)",
      "IS (fresh)": "7.123", "FID (fresh)": "45.678",
      "IS (buffer)": "6.500", "FID (buffer)": "50.000",
      "class-cond. samples judged correct": "90.00%",
      "distal adversarials judged as their class": "60.00%",
      "distal adversarials reaching the threshold": "75.00%"}
  # No classes, no distal adversarials; two draws: mean ± std.
  assert summary["igebm"] == {
      "accuracy": "–", "ECE": "–",
      "IS/FID network (n fresh / buffer)": "judge-classifier (500 / 64)",
      "IS (fresh)": "7.123 ± 0.125", "FID (fresh)": "45.678 ± 2.500",
      "IS (buffer)": "6.500 ± 0.125", "FID (buffer)": "50.000 ± 1.500",
      "class-cond. samples judged correct": "–",
      "distal adversarials judged as their class": "–",
      "distal adversarials reaching the threshold": "–"}
  assert log_px == {"jem": {"interp": "0.875", "uniform": "0.500"},
                    "igebm": {"interp": "0.875", "uniform": "0.500"}}
  # The unconditional model has no max_prob score: dashes, not an error.
  assert max_prob == {"jem": {"interp": "0.250", "uniform": "1.000"},
                      "igebm": {"interp": "–", "uniform": "–"}}
  # A score pointing the wrong way: as defined, and flipped on held-out data.
  assert neg_grad_norm["igebm"] == {"interp": "0.000 (↓ 1.000)",
                                    "uniform": "0.750"}
  assert "OOD AUROC, score max_prob" in text
  linf = tables(text)["model"][4]
  assert linf == {"jem (undefended)": {"ε=0": "90.00%", "ε=0.2": "40.00%"},
                  "jem (SGLD defence)": {"ε=0": "87.50%", "ε=0.2": "62.50%"}}


def test_over_draws_reports_mean_and_std_by_hand():
  from ebmkit.evaluation import common  # pylint: disable=g-import-not-at-top
  calls = []

  def part(scale, seed=0):
    calls.append(seed)
    return {"a": scale * seed, "curve": [float(seed), 2.0], "examples": 7,
            "figure": f"fig{seed}.png", "nested": {"x": seed / 1000.0}}

  out = common.over_draws(part, 3, 5, 1.0)
  assert calls == [5, 1005, 2005]
  # Mean of 5, 1005, 2005 is 1005; the population std is 1000·√(2/3).
  assert out["a"] == pytest.approx(1005.0)
  assert out["std"]["a"] == pytest.approx(1000 * math.sqrt(2 / 3))
  assert out["curve"] == pytest.approx([1005.0, 2.0])
  assert out["std"]["curve"] == pytest.approx([1000 * math.sqrt(2 / 3), 0])
  assert out["std"]["nested"]["x"] == pytest.approx(math.sqrt(2 / 3))
  assert out["examples"] == 7 and out["figure"] == "fig5.png"
  assert out["draws"] == 3 and out["seeds"] == [5, 1005, 2005]
  single = common.over_draws(part, 1, 5, 2.0)
  assert single["a"] == 10.0 and "std" not in single
  assert single["draws"] == 1 and single["seeds"] == [5]
  with pytest.raises(ValueError, match="evaluate.draws must be at least 1"):
    common.over_draws(part, 0, 5, 1.0)


def test_report_gives_spread_over_draws_or_says_single_draw(tmp_path):
  workdir = str(tmp_path / "jem")
  result = made_up_evaluation(workdir)
  text = render.report_markdown(result, workdir)
  # No draws recorded: each random part says it is a single draw.
  assert text.count("Single draw") == 3
  for part in ("ood", "robustness", "distal"):
    result[part]["draws"], result[part]["seeds"] = 2, [0, 1000]
  result["ood"]["std"] = {"auroc": {"log_px": {"interp": 0.0125}}}
  result["robustness"]["std"] = {"linf": {"undefended": {
      "accuracy": [0.0, 0.05]}}}
  result["distal"]["std"] = {"reached_threshold": 0.125}
  text = render.report_markdown(result, workdir)
  t = tables(text)
  assert t["score"][0]["log_px"]["interp"] == "0.875 ± 0.013"
  assert t["score"][0]["log_px"]["uniform"] == "0.500"  # No std: as is.
  assert t["linf ε"][0]["undefended"] == {"0": "90.00% ± 0.00%",
                                          "0.2": "40.00% ± 5.00%"}
  assert "75.00% ± 12.50% got there" in text
  assert text.count("Mean ± standard deviation over 2 independent draws "
                    "(seeds 0, 1000).") == 3
  assert "Single draw" not in text
