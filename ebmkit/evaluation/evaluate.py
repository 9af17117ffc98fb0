"""Evaluation of a trained workdir: runs every part of the JEM paper's
results section (each in its own module) and writes results.json, the
figures and (through `render`) report.md."""

import time
import types

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
  if model.generates:
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
             buffer_samples=None, energy_temperatures=()):
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
    energy_temperatures: temperatures T of Liu et al.'s energy score
      T·LSE(f(x)/T) added to the OOD scores (classifiers; T = 1 equals
      log p(x) up to a constant, so it adds nothing there); () for none.

  Returns:
    The evaluation dict (also in results.json).

  Raises:
    ValueError: for an unknown `feature_extractor`.
  """
  # Every argument by name (first statement: locals() is the arguments).
  settings = types.SimpleNamespace(**locals())
  common.check_extractor(feature_extractor)  # Before the judge trains.
  return Evaluation(settings).run()


class Evaluation:
  """One evaluation of a trained workdir, in named parts; `evaluate`'s
  settings (`s`) are handed to each part as it needs them."""

  def __init__(self, settings):
    self.s = settings
    self.started = time.time()
    self.rng = np.random.default_rng(settings.seed)  # Robustness, samples.

  def run(self):
    """Loads data and model, runs the parts the model kind has, saves."""
    s = self.s
    test_ds, info = data.load_dataset(split=s.test_split, training=False,
                                      with_info=True)
    self.info = info
    self.x_test, self.y_test = common.arrays(test_ds)
    model = self.model = experiment.build_model(info)
    model.compile()
    self.result = {"checkpoint": experiment.restore(model, s.workdir),
                   "dataset": info.name, "test_split": s.test_split,
                   "test_examples": int(len(self.x_test))}
    # Each part's start, end and time on the console (see PartProgress).
    self.parts = progress.PartProgress(num_parts(model),
                                       title=f"Evaluation of {s.workdir}")
    self.train_split = s.train_split or gin_utils.bound("train.train_split",
                                                        "train")
    self.x_train, self.y_train = common.arrays(data.load_dataset(
        split=self.train_split, training=False))
    if model.generates:
      self._generator_parts()
    else:
      self._energy_model_parts()
    return self._finish()

  def _train_judge(self, x, y):
    s = self.s
    judge, self.result["judge_test_accuracy"] = self.parts(
        "independent classifier", common.train_judge)(
        x, y, self.x_test, self.y_test, self.info.num_classes, s.workdir,
        epochs=s.judge_epochs, learning_rate=s.judge_learning_rate,
        batch_size=s.judge_batch_size, width=s.judge_width)
    return judge

  def _finish(self):
    result, workdir = self.result, self.s.workdir
    result["part_times_s"] = dict(self.parts.times)  # Every part but save.
    result["wall_time_s"] = round(time.time() - self.started, 1)
    self.parts("results.json and report.md", save)(workdir, result)
    summaries.write_evaluation_summaries(workdir, result)
    return result

  def _generator_parts(self):
    """A model that generates (a GAN): G(z) against DDLS (evaluate_gan)."""
    s, model = self.s, self.model
    judge = (self._train_judge(self.x_train, self.y_train)
             if len(model.sample_shape) == 3 else None)
    # The evaluation's own settings hold here too; unset, evaluate_gan's
    # (its gin bindings, e.g. ddls_mog25.gin's draws) apply.
    given = {"num_samples": s.num_samples, "ddls_steps": s.sample_steps,
             "draws": s.sample_draws if s.sample_draws is not None
                      else s.draws}
    self.result.update(self.parts("G(z) and DDLS samples",
                                  gan_eval.evaluate_gan)(
        model, s.workdir, self.x_test, self.x_train,
        judge_fn=lambda: judge, feature_extractor=s.feature_extractor,
        fid_network_path=s.fid_network_path, seed=s.seed,
        **{k: v for k, v in given.items() if v is not None}))

  def _energy_model_parts(self):
    """An energy model: the judge, then classification, OOD, robustness and
    distal adversarials (what its kind has), then samples."""
    s, info, result = self.s, self.info, self.result
    self.draws = 1 if s.draws is None else int(s.draws)
    x_judge, y_judge, self.x_held, self.y_held, self.held_out = (
        common.load_held_out(self.x_train, self.y_train, self.train_split,
                             s.calibration_split, s.held_out_fraction))
    result["held_out"] = self.held_out
    self.judge = self._train_judge(x_judge, y_judge)
    self.extractor = common.select_extractor(
        self.judge, info.image_shape, s.feature_extractor, s.fid_network_path)
    result["feature_extractor"] = {
        "name": self.extractor.name, "label": self.extractor.label,
        "description": self.extractor.description,
        "standard": self.extractor.standard}
    self.names = common.class_names(info.name, info.num_classes)
    if self.model.classifies:
      self._classification()
    result["ood"] = self.parts("OOD detection", common.over_draws)(
        ood_detection_lib.ood_detection, self.draws, s.seed, self.model,
        self.x_test, info.name, s.workdir, sets=s.ood_sets,
        examples=s.ood_examples, x_held=self.x_held, held_out=self.held_out,
        energy_temperatures=tuple(s.energy_temperatures or ()))
    if self.model.classifies:
      self._robustness()
    self._samples()

  def _classification(self):
    s, model = self.s, self.model
    self.result.update(self.parts("accuracy and calibration",
                                  classification_lib.classification)(
        model, self.x_test, self.y_test, s.workdir, s.num_bins))
    self.result["detection"] = self.parts(
        "detection threshold", classification_lib.detection)(
        model, self.x_held, self.y_held, self.x_test, self.y_test,
        self.held_out, target_fpr=s.detection_fpr)

  def _robustness(self):
    s, info = self.s, self.info
    self.result["robustness"] = self.parts("robustness (PGD)",
                                           common.over_draws)(
        robustness_lib.robustness, self.draws, s.seed, self.model,
        self.x_test, self.y_test, s.workdir, linf_eps=s.linf_eps,
        l2_eps=s.l2_eps, pgd_steps=s.pgd_steps,
        pgd_step_size=s.pgd_step_size, pgd_random_start=s.pgd_random_start,
        examples=s.pgd_examples, sgld_defense=s.sgld_defense,
        defense_steps=s.defense_steps, defense_step_size=s.defense_step_size,
        defense_noise=s.defense_noise,
        defense_duplicates=s.defense_duplicates, rng=self.rng,
        pgd_restarts=s.pgd_restarts, eot_samples=s.eot_samples)
    self.result["distal"] = self.parts("distal adversarials",
                                       common.over_draws)(
        robustness_lib.distal, self.draws, s.seed, self.model, self.judge,
        info.image_shape, info.num_classes, s.workdir,
        per_class=s.distal_per_class, steps=s.distal_steps,
        step_size=s.distal_step_size, threshold=s.distal_threshold,
        x_train=self.x_train, x_test=self.x_test, y_test=self.y_test,
        names=self.names)

  def _samples(self):
    s, info = self.s, self.info
    self.result["samples"] = self.parts("samples (IS, FID)",
                                        sample_quality.samples)(
        self.model, self.extractor, self.judge, self.x_test,
        info.num_classes, s.workdir,
        steps=1000 if s.sample_steps is None else int(s.sample_steps),
        num_samples=s.num_samples or common.default_num_samples(
            info.image_shape),
        conditional_per_class=s.conditional_per_class, seed=s.seed,
        rng=self.rng,
        draws=self.draws if s.sample_draws is None else s.sample_draws,
        names=self.names, buffer_samples=s.buffer_samples)
