"""tools/claims.py: the verdict rule and the metrics it reads, by hand."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "tools"))
import claims  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.pop(0)


@pytest.mark.parametrize("a, b, direction, expected", [
    # diff 0.1, se = sqrt(2·0.01²/3) = 0.0082: 0.1 > 2·se.
    ((0.9, 0.01), (0.8, 0.01), +1, "holds"),
    ((0.8, 0.01), (0.9, 0.01), +1, "does not hold"),
    ((0.9, 0.01), (0.8, 0.01), -1, "does not hold"),
    # diff 0.01 < 2·sqrt(2·0.01²/3) = 0.0163.
    ((0.81, 0.01), (0.80, 0.01), +1, "not resolved by the spread"),
])
def test_verdict_is_the_two_standard_error_rule(a, b, direction, expected):
  stat = lambda m, sd: {"mean": m, "sd": sd, "n": 3}
  assert claims.verdict(stat(*a), stat(*b), direction) == expected


def test_single_seeds_and_missing_values_are_not_verdicts():
  one = {"mean": 0.9, "sd": 0.0, "n": 1}
  assert claims.verdict(one, one, +1).startswith("single seed")
  assert claims.verdict(None, one, +1) == "not measured"
  assert claims._stats([0.8, None, 1.0]) == {"mean": 0.9, "sd": pytest.approx(
      0.1414213, rel=1e-5), "n": 2}


def test_metrics_reads_the_evaluation_it_names():
  evaluation = {
      "accuracy": 0.99, "calibration": {"ece": 0.05},
      "ood": {"auroc": {"log_px": {"interp": 0.8, "uniform": 1.0}}},
      "robustness": {"linf": {
          "undefended": {"eps": [0.0, 0.2, 0.3], "accuracy": [0.99, 0.7, 0.4]},
          "SGLD defence": {"eps": [0.0, 0.2, 0.3],
                           "accuracy": [0.95, 0.8, 0.6]}}},
      "distal": {"nearest_train_distance": {"distal": {"mean": 6.5}}},
      "samples": {"conditional": {"judge_accuracy": 1.0}}}
  got = claims.metrics(evaluation)
  assert got["accuracy"] == 0.99 and got["ece"] == 0.05
  assert got["ood_log_px_interp"] == 0.8 and got["ood_log_px_photos"] is None
  assert got["pgd_linf_0.2"] == 0.7 and got["pgd_linf_0.3_defended"] == 0.6
  assert got["distal_distance"] == 6.5 and got["conditional_judged"] == 1.0


def test_fashion_mnist_claims_cover_every_score_and_ood_set():
  setting = claims.DATASETS["fashion_mnist"]
  rows = claims.claims_for(setting["ood_sets"], setting["scores"],
                           setting["data"])
  ood_rows = [r for r in rows if r[2].startswith("ood_")]
  assert len(ood_rows) == 3 * 7  # every score against every OOD set
  assert ("JEM's max p(y|x) detects mnist better (AUROC)", "jem",
          "ood_max_prob_mnist", "clf", "ood_max_prob_mnist", +1) in rows
  evaluation = {"ood": {"auroc": {"neg_grad_norm": {"vflip": 0.61}}}}
  got = claims.metrics(evaluation, setting["ood_sets"], setting["scores"])
  assert got["ood_neg_grad_norm_vflip"] == 0.61
  assert got["ood_log_px_mnist"] is None


def test_runs_share_the_first_judge_and_finished_runs_are_kept(tmp_path,
                                                              monkeypatch):
  """The flow of main() with the training and evaluation commands faked:
  each fake evaluation writes results.json and, unless the workdir already
  holds one, trains (writes) its own judge."""
  commands, trained_judges = [], []

  def fake_run(args, cwd):
    del cwd
    commands.append(args)
    workdir = next(a.split("=", 1)[1] for a in args
                   if a.startswith("--workdir="))
    if "--mode=eval" in args:
      judge = os.path.join(workdir, claims.JUDGE)
      if not os.path.exists(judge):
        os.makedirs(os.path.dirname(judge), exist_ok=True)
        with open(judge, "w") as f:
          f.write(workdir)
        trained_judges.append(workdir)
      with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"evaluation": {"accuracy": 0.9}}, f)
    else:
      os.makedirs(workdir, exist_ok=True)
    return 1.5

  monkeypatch.setattr(claims, "run_ebmkit", fake_run)
  out = str(tmp_path / "claims")
  claims.main(["--seeds=2", f"--out={out}"])
  # One judge trained (jem, seed 0); the three other runs got a copy of it.
  assert trained_judges == [os.path.join(out, "jem_seed0")]
  for run in ("clf_seed0", "jem_seed1", "clf_seed1"):
    with open(os.path.join(out, run, claims.JUDGE)) as f:
      assert f.read() == os.path.join(out, "jem_seed0")
  with open(os.path.join(out, "claims.json")) as f:
    times = json.load(f)["wall_times_s"]
  assert times["clf_seed1"] == {"train_s": 1.5, "judge_shared": True,
                                "eval_s": 1.5}
  assert times["jem_seed0"]["judge_shared"] is False
  # A rerun keeps the four finished runs: no command runs again.
  commands.clear()
  claims.main(["--seeds=2", f"--out={out}"])
  assert not commands
  # Without sharing, every run trains its own judge.
  trained_judges.clear()
  claims.main(["--seeds=1", f"--out={tmp_path / 'alone'}",
               "--no-share_judge"])
  assert len(trained_judges) == 2


def test_recipes_that_give_up_are_evaluated_and_counted(tmp_path, monkeypatch):
  """--models picks the recipes; a training that gives up (exits non-zero
  with a checkpoint left) is evaluated, and the per-model table counts its
  recoveries and that it gave up; without a checkpoint the failure stops the
  tool."""
  evaluated = []
  accuracy = {"jempp": [0.9, 0.8], "sadajem": [0.5, 0.7]}

  def fake_run(args, cwd):
    del cwd
    workdir = next(a.split("=", 1)[1] for a in args
                   if a.startswith("--workdir="))
    name, seed = os.path.basename(workdir).split("_seed")
    if "--mode=eval" in args:
      evaluated.append(os.path.basename(workdir))
      with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"evaluation": {"accuracy": accuracy[name][int(seed)]}}, f)
      return 2.0
    os.makedirs(os.path.join(workdir, "checkpoints"))
    if name == "sadajem" and seed == "0":  # Gives up after two recoveries.
      with open(os.path.join(workdir, "checkpoints", "ckpt-7.index"), "w"):
        pass
      with open(os.path.join(workdir, "recoveries.json"), "w") as f:
        json.dump([{"step": 5}, {"step": 6}], f)
      raise claims.RunFailed(args, 60.0, 1)
    return 120.0

  monkeypatch.setattr(claims, "run_ebmkit", fake_run)
  out = str(tmp_path / "recipes")
  claims.main(["--dataset=fashion_mnist", "--seeds=2",
               "--models=jempp,sadajem", f"--out={out}"])
  assert evaluated == ["jempp_seed0", "sadajem_seed0", "jempp_seed1",
                       "sadajem_seed1"]
  with open(os.path.join(out, "claims.json")) as f:
    got = json.load(f)
  assert got["wall_times_s"]["sadajem_seed0"]["gave_up"] is True
  assert got["wall_times_s"]["sadajem_seed0"]["train_s"] == 60.0
  summary = got["summary"]
  assert summary["sadajem"]["recoveries"]["mean"] == pytest.approx(1.0)
  assert summary["sadajem"]["accuracy"]["mean"] == pytest.approx(0.6)
  assert got["claims"] == []  # No claims without JEM and the classifier.
  with open(os.path.join(out, "claims.md")) as f:
    table = f.read()
  # 0.6 ± sd(0.5, 0.7) = 0.141; recoveries 2 in 2 runs; minutes 1.5 / 0.
  assert "| sadajem | 0.600 ± 0.141 |" in table
  assert "| 2 in 2 runs | 1 in 2 runs | 2 / 0 |" in table
  assert "| jempp | 0.850 ± 0.071 |" in table

  def no_checkpoint(args, cwd):
    del cwd
    raise claims.RunFailed(args, 1.0, 1)

  monkeypatch.setattr(claims, "run_ebmkit", no_checkpoint)
  with pytest.raises(claims.RunFailed):
    claims.main(["--dataset=fashion_mnist", "--seeds=1", "--models=jempp",
                 f"--out={tmp_path / 'broken'}"])
  with pytest.raises(SystemExit):
    claims.main(["--models=jem,nope", f"--out={tmp_path / 'x'}"])
