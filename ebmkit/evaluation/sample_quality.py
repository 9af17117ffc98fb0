"""Evaluation part: samples (fresh chains, replay buffer, class-conditional)
with IS, FID and the judged class-conditional accuracy."""

import numpy as np
import tensorflow as tf

from ebmkit.evaluation import common
from ebmkit.evaluation import metrics
from ebmkit.evaluation import plots


def _is_fid(extractor, real_features, draws):
  """IS and FID of each draw: mean, std over the draws, their number, and
  the network and sample count they come from."""
  scores = [(metrics.inception_score(extractor.probs(x)),
             metrics.frechet_distance(real_features, extractor.features(x)))
            for x in draws]
  inception, fid = zip(*scores)
  return {"inception_score": float(np.mean(inception)),
          "fid": float(np.mean(fid)), "network": extractor.label,
          "num_samples": int(len(draws[0])),
          "draws": len(draws),
          "std": {"inception_score": float(np.std(inception)),
                  "fid": float(np.std(fid))}}


def samples(model, extractor, judge, x_test, num_classes, workdir, steps=1000,
            num_samples=500, conditional_per_class=None, seed=0, rng=None,
            draws=1, names=None, figure_classes=20, buffer_samples=None):
  """Fresh, buffer and class-conditional samples: IS, FID, judged accuracy.

  Args:
    model: an EnergyModel.
    extractor: features of IS/FID (a judge_lib.Extractor); every IS/FID is
      recorded with its network and sample count.
    judge: the independent classifier judging class-conditional samples.
    x_test: test images (FID's reference, and the test set's own IS).
    num_classes: classes of the data set.
    workdir: the evaluated workdir (figures/samples_*.png).
    steps: SGLD steps of fresh chains (from noise).
    num_samples: fresh chains, and buffer samples drawn unless
      `buffer_samples` says otherwise (at most the buffer's size: the count
      used is recorded).
    conditional_per_class: class-conditional samples per class (classifying
      models only); None: max(1, 100 // num_classes), about 100 in all.
    seed: seed of the choice of buffer samples.
    rng: numpy Generator choosing them (default: from `seed`).
    draws: independent draws of every random quantity (fresh chains, buffer
      samples, class-conditional samples); the mean is reported with the
      standard deviation over draws (1: a single draw, said so).
    names: class names (default "0", "1", …).
    figure_classes: classes drawn at most in the class-conditional figure.
    buffer_samples: replay-buffer samples of IS/FID (None: `num_samples`).
      Reading the buffer costs nothing, fresh chains cost `steps` gradient
      steps each, so the buffer's count can be far larger (FID from a few
      hundred samples is strongly biased upwards).

  Returns:
    {"steps", "num_samples" (requested), "draws", "feature_network": {"name",
      "label", "description", "standard"}, "fid_reference", "figures",
      "fresh"/"buffer": {IS, FID, "network" (its label), "num_samples"
      used, "draws", "std"} (buffer: {"skipped": why} for models that never
      sample), "test_set": {IS, "network", "num_samples"}, "conditional"
      (classifying models)}.
  """
  rng = common.rng_of(rng, seed)
  names = names or [str(c) for c in range(num_classes)]
  out = {"steps": steps, "num_samples": num_samples, "draws": draws,
         "feature_network": {"name": extractor.name,
                             "label": extractor.label,
                             "description": extractor.description,
                             "standard": extractor.standard},
         "fid_reference": {"split": "test", "examples": int(len(x_test))}}
  real_features = extractor.features(x_test)
  fresh = [common.sample_in_chunks(model, num_samples, steps)
           for _ in range(draws)]
  out["figures"] = {"fresh": common.save_grid(
      fresh[0][:64], common.figure_path(workdir, "samples_fresh.png"))}
  out["fresh"] = _is_fid(extractor, real_features, fresh)
  if model.draws_samples:
    buf = model.replay_buffer
    n = min(num_samples if buffer_samples is None else buffer_samples,
            buf.size)
    stored = [tf.gather(buf.samples.value, rng.choice(
        buf.size, n, replace=False)).numpy() for _ in range(draws)]
    out["figures"]["buffer"] = common.save_grid(
        stored[0][:64], common.figure_path(workdir, "samples_buffer.png"))
    out["buffer"] = _is_fid(extractor, real_features, stored)
  else:
    out["buffer"] = {"skipped": "the model never samples in training "
                                "(no p(x) or p(x|y) term), so its replay "
                                "buffer holds only its initial noise"}
  out["test_set"] = {"inception_score": metrics.inception_score(
      extractor.probs(x_test)), "network": extractor.label,
                     "num_samples": int(len(x_test))}
  if model.classifies:
    per_class = (max(1, 100 // num_classes) if conditional_per_class is None
                 else conditional_per_class)
    y = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
    drawn = [common.sample_in_chunks(model, len(y), steps, y=y)
             for _ in range(draws)]
    judged = [judge.probs(x).argmax(-1) for x in drawn]
    accuracies = [float(np.mean(j == y)) for j in judged]
    shown = min(num_classes, figure_classes)
    cells = drawn[0].reshape((num_classes, per_class)
                             + drawn[0].shape[1:])[:shown]
    more = (f" (first {shown} of {num_classes} classes)"
            if shown < num_classes else "")
    out["conditional"] = {
        "per_class": per_class, "judge_accuracy": float(np.mean(accuracies)),
        "judge_accuracy_std": float(np.std(accuracies)),
        "figure_classes": shown,
        "figure": plots.image_table(
            cells, common.figure_path(workdir, "samples_conditional.png"),
            row_labels=[f"class {names[c]}" for c in range(shown)],
            captions=[[f"judge: {names[judged[0][c * per_class + i]]}"
                       for i in range(per_class)] for c in range(shown)],
            title=f"Class-conditional samples x ~ p(x|y), one row per "
                  f"class y{more}")}
  return out
