"""Evaluation of a trained workdir: runs every part of the JEM paper's
results section (each in its own module) and writes results.json, the
figures and (through `render`) report.md."""

import time

import gin
import numpy as np

from ebmkit import gin_utils
from ebmkit import progress
from ebmkit import workdir as workdir_lib
from ebmkit.data import pipeline as data
from ebmkit.evaluation import classification as classification_lib
from ebmkit.evaluation import common
from ebmkit.evaluation import gan_eval
from ebmkit.evaluation import ood_detection as ood_detection_lib
from ebmkit.evaluation import render
from ebmkit.evaluation import robustness as robustness_lib
from ebmkit.evaluation import sample_quality
from ebmkit.evaluation import summaries
from ebmkit.gan import model as gan_lib
from ebmkit.training import experiment


def save(workdir, result):
  """Writes `result` as results.json's "evaluation" (other keys kept) and
  report.md.

  Args:
    workdir: the evaluated workdir.
    result: the evaluation dict.

  Returns:
    The path of report.md.
  """
  path = workdir_lib.path(workdir, workdir_lib.RESULTS)
  summary = workdir_lib.read_json(path, {})
  summary["evaluation"] = result
  workdir_lib.write_json(path, summary)
  return render.write_report(result, workdir)


def num_parts(model):
  """How many parts `evaluate` runs for `model` (the progress display's
  total): a GAN's judge (images only), G(z) vs DDLS and the save; a JEM's
  judge, OOD, samples and save, plus accuracy, detection, robustness and
  distal adversarials when it classifies."""
  if isinstance(model, gan_lib.GAN):
    return 3 if len(model.sample_shape) == 3 else 2
  return 8 if model.classifies else 4


@gin.configurable
def evaluate(workdir="ebmkit_runs/default", test_split="test",
             train_split=None, num_bins=15, ood_sets=None, ood_examples=500,
             linf_eps=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
             l2_eps=(0.0, 0.5, 1.0, 2.0, 3.0, 4.0), pgd_steps=10,
             pgd_step_size=None, pgd_random_start=True, pgd_examples=200,
             sgld_defense=True, defense_steps=10, defense_step_size=1.0,
             defense_noise=0.01, defense_duplicates=4, distal_per_class=4,
             distal_steps=500, distal_step_size=0.02, distal_threshold=0.9,
             sample_steps=None, num_samples=None, conditional_per_class=None,
             feature_extractor="auto", judge_epochs=20,
             judge_learning_rate=1e-3, judge_batch_size=64, judge_width=32,
             seed=0, fid_network_path=None, sample_draws=None,
             calibration_split=None, held_out_fraction=0.1,
             detection_fpr=0.05, pgd_restarts=1, eot_samples=1, draws=None,
             buffer_samples=None):
  """Everything in the JEM paper's results section for a trained workdir.

  Holds every setting of the evaluation and passes each part its own (see
  the part for details): the independent classifier (`train_judge`; also
  the features of IS/FID unless `select_extractor` picks Inception-v3),
  accuracy and calibration (`classification`), the detection threshold on
  E(x, y) (`detection`, calibrated on held-out data: `load_held_out`), OOD
  detection (`ood_detection`), PGD robustness with and without the SGLD defence
  (`robustness`), distal adversarials (`distal`), samples with IS, FID and
  the judged class-conditional accuracy (`samples`). Writes `results.json`
  (key "evaluation"), `report.md` and `figures/*.png` into `workdir`.
  Classifier-only parts are skipped for unconditional (scalar-energy) models.

  Args:
    workdir: a folder written by `train`; gin must hold its config (the
      command line parses its operative_config.gin).
    test_split: split evaluated.
    train_split: split the judge classifier trains on (default: the bound
      `train.train_split`, else "train").
    num_bins: ECE bins (equal width).
    ood_sets: OOD set names; default per data set (ood.DEFAULT_SETS).
    ood_examples: examples per OOD set (and of the test set) scored.
    linf_eps, l2_eps: ε grids of the PGD threat models (inputs in [−1, 1]).
    pgd_steps: PGD iterations.
    pgd_step_size: PGD step (default 2.5·ε/steps).
    pgd_random_start: start each attack at a random point of the ε-ball.
    pgd_examples: test examples attacked.
    sgld_defense: also attack the defended classifier (for models trained
      with sampling only: on a plain classifier's untrained energy the
      refinement is not density-guided, and its figure would measure
      gradient masking).
    defense_steps, defense_step_size, defense_noise, defense_duplicates: the
      defence's SGLD refinement (steps, α, σ, chains per input).
    distal_per_class: distal adversarials per class.
    distal_steps: their maximal number of ascent steps.
    distal_step_size: their ascent step, per pixel.
    distal_threshold: p(y = c|x) at which a distal adversarial stops.
    sample_steps: SGLD steps of fresh chains (from noise); None: 1,000. For
      a GAN: DDLS's Langevin steps on E(z) (None: `evaluate_gan`'s, by
      default its latent sampler's η).
    num_samples: fresh unconditional samples (and buffer samples, at most
      the buffer's size, unless `buffer_samples` is set) for IS/FID; None:
      `default_num_samples` (50,000 for 32×32 images and larger, the
      standard count; 500 below). For a GAN: samples of G(z) and of DDLS
      per draw (None: `evaluate_gan`'s).
    conditional_per_class: class-conditional samples per class; None:
      max(1, 100 // num_classes).
    feature_extractor: "auto" (the standard Inception pool_3 graph if
      `fid_network_path` is given, else Keras' Inception-v3 if its weights
      are on this machine and images have 3 channels, else "classifier"),
      "inception_pool3", "inception_v3" or "classifier".
    judge_epochs: training epochs of the independent classifier.
    judge_learning_rate: its Adam learning rate.
    judge_batch_size: its training batch size.
    judge_width: filters of its first convolutions.
    seed: seed of the random choices.
    fid_network_path: a local frozen Inception graph (TTUR's
      classify_image_graph_def.pb or TF-GAN's
      inceptionv1_for_inception_score.pb), the network of published IS/FID.
    sample_draws: independent draws of the samples' random quantities
      (IS, FID, judged accuracy), reported as mean ± std (1: single draw);
      None: `draws`.
    calibration_split: held-out split of the detection threshold and of
      the OOD scores' orientation (default: the bound
      `train.validation_split`; without one, the last `held_out_fraction`
      of the training split, which the judge then does not train on).
    held_out_fraction: that share of the training split.
    detection_fpr: false-positive rate the detection threshold on
      E(x, y) is calibrated for (on held-out data; measured on test).
    pgd_restarts: PGD attacks from independent random starts per example.
    eot_samples: calls of the random SGLD defence averaged per attack
      gradient (expectation over transformation).
    draws: independent draws (seeds `seed`, `seed` + 1000, …) of every
      part that depends on random numbers: OOD sets, attacked examples and
      random starts, distal adversarials' starting noise, and (unless
      `sample_draws` says otherwise) samples. Reported as mean ± standard
      deviation over the draws; with 1, the report says "single draw".
      None: 1. For a GAN: draws of z (with `sample_draws` first; None:
      `evaluate_gan`'s).
    buffer_samples: replay-buffer samples for IS/FID (at most the buffer's
      size); None: as many as fresh samples.

  Returns:
    The evaluation dict (also in results.json).

  Raises:
    ValueError: for an unknown `feature_extractor`.
  """
  common.check_extractor(feature_extractor)  # Before the judge trains.
  started = time.time()
  rng = np.random.default_rng(seed)  # Shared: robustness, then samples.
  test_ds, info = data.load_dataset(split=test_split, training=False,
                                    with_info=True)
  x_test, y_test = common.arrays(test_ds)
  model = experiment.build_model(info)
  model.compile()
  result = {"checkpoint": experiment.restore(model, workdir),
            "dataset": info.name, "test_split": test_split,
            "test_examples": int(len(x_test))}
  # Each part's start, end and time on the console (see PartProgress).
  parts = progress.PartProgress(num_parts(model),
                                title=f"Evaluation of {workdir}")

  train_split = train_split or gin_utils.bound("train.train_split", "train")
  x_train, y_train = common.arrays(data.load_dataset(split=train_split,
                                                     training=False))

  def train_judge(x, y):
    judge, result["judge_test_accuracy"] = parts(
        "independent classifier", common.train_judge)(
        x, y, x_test, y_test, info.num_classes, workdir, epochs=judge_epochs,
        learning_rate=judge_learning_rate, batch_size=judge_batch_size,
        width=judge_width)
    return judge

  def finish():
    result["part_times_s"] = dict(parts.times)  # every part before the save
    result["wall_time_s"] = round(time.time() - started, 1)
    parts("results.json and report.md", save)(workdir, result)
    summaries.write_evaluation_summaries(workdir, result)
    return result

  if isinstance(model, gan_lib.GAN):  # G(z) vs DDLS (evaluate_gan).
    judge = (train_judge(x_train, y_train) if len(model.sample_shape) == 3
             else None)
    # The evaluation's own settings hold for a GAN too; unset, evaluate_gan's
    # (its gin bindings, e.g. ddls_mog25.gin's draws) apply.
    given = {"num_samples": num_samples, "ddls_steps": sample_steps,
             "draws": sample_draws if sample_draws is not None else draws}
    result.update(parts("G(z) and DDLS samples", gan_eval.evaluate_gan)(
        model, workdir, x_test, x_train, judge_fn=lambda: judge,
        feature_extractor=feature_extractor,
        fid_network_path=fid_network_path, seed=seed,
        **{k: v for k, v in given.items() if v is not None}))
    return finish()
  draws = 1 if draws is None else int(draws)
  sample_steps = 1000 if sample_steps is None else int(sample_steps)
  x_judge, y_judge, x_held, y_held, held_out = common.load_held_out(
      x_train, y_train, train_split, calibration_split, held_out_fraction)
  result["held_out"] = held_out
  judge = train_judge(x_judge, y_judge)
  extractor = common.select_extractor(judge, info.image_shape,
                                      feature_extractor, fid_network_path)
  result["feature_extractor"] = {"name": extractor.name,
                                 "label": extractor.label,
                                 "description": extractor.description,
                                 "standard": extractor.standard}
  names = common.class_names(info.name, info.num_classes)

  if model.classifies:
    result.update(parts("accuracy and calibration",
                        classification_lib.classification)(
        model, x_test, y_test, workdir, num_bins))
    result["detection"] = parts("detection threshold",
                                classification_lib.detection)(
        model, x_held, y_held, x_test, y_test, held_out,
        target_fpr=detection_fpr)
  result["ood"] = parts("OOD detection", common.over_draws)(
      ood_detection_lib.ood_detection, draws, seed, model, x_test,
      info.name, workdir, sets=ood_sets, examples=ood_examples,
      x_held=x_held, held_out=held_out)
  if model.classifies:
    result["robustness"] = parts("robustness (PGD)", common.over_draws)(
        robustness_lib.robustness, draws, seed, model, x_test, y_test,
        workdir, linf_eps=linf_eps, l2_eps=l2_eps,
        pgd_steps=pgd_steps, pgd_step_size=pgd_step_size,
        pgd_random_start=pgd_random_start, examples=pgd_examples,
        sgld_defense=sgld_defense, defense_steps=defense_steps,
        defense_step_size=defense_step_size, defense_noise=defense_noise,
        defense_duplicates=defense_duplicates, rng=rng,
        pgd_restarts=pgd_restarts, eot_samples=eot_samples)
    result["distal"] = parts("distal adversarials", common.over_draws)(
        robustness_lib.distal, draws, seed, model, judge, info.image_shape,
        info.num_classes, workdir, per_class=distal_per_class,
        steps=distal_steps, step_size=distal_step_size,
        threshold=distal_threshold,
        x_train=x_train, x_test=x_test, y_test=y_test, names=names)
  result["samples"] = parts("samples (IS, FID)", sample_quality.samples)(
      model, extractor, judge, x_test, info.num_classes, workdir,
      steps=sample_steps,
      num_samples=num_samples or common.default_num_samples(info.image_shape),
      conditional_per_class=conditional_per_class, seed=seed, rng=rng,
      draws=draws if sample_draws is None else sample_draws, names=names,
      buffer_samples=buffer_samples)
  return finish()
