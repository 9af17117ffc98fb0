"""Evaluation of a GAN workdir: samples of G(z) and of DDLS from the same
z, side by side, scored alike (IS/FID through the evaluation's feature
network on images; modes recovered and high-quality share on the 2-D
mixture)."""


import gin
import numpy as np

from ebmkit import images
from ebmkit.data.datasets import mixture
from ebmkit.evaluation import common
from ebmkit.evaluation import metrics
from ebmkit.evaluation import plots

KIND = "gan"  # results.json's evaluation["kind"] of a GAN workdir.


def mixture_scores(points, means=None, std=mixture.STD, high_quality_stds=4.0,
                   min_mode_share=0.1):
  """The 2-D mixture's scores (DRS, Azadi et al. 2019; DDLS, Che et al.).

  A sample is high-quality when it lies within `high_quality_stds` standard
  deviations of its nearest mode; a mode is recovered when at least
  `min_mode_share` of its fair share (n / modes) of the high-quality
  samples lie at it.

  Returns:
    {"high_quality": share of high-quality samples, "modes_recovered":
     count, "modes": number of modes, "per_mode": high-quality counts}.
  """
  means = mixture.means() if means is None else np.asarray(means)
  d = np.linalg.norm(points[:, None, :] - means[None], axis=-1)
  nearest, dist = d.argmin(1), d.min(1)
  good = dist <= high_quality_stds * std
  per_mode = np.bincount(nearest[good], minlength=len(means))
  needed = max(1.0, min_mode_share * len(points) / len(means))
  return {"high_quality": float(good.mean()),
          "modes_recovered": float((per_mode >= needed).sum()),
          "modes": int(len(means)), "per_mode": per_mode.tolist()}


def _in_chunks(fn, z, chunk=500):
  return np.concatenate([np.asarray(fn(z[i:i + chunk]))
                         for i in range(0, len(z), chunk)])


def _image_scores(extractor, real_features, x):
  probs = extractor.probs(x)
  return {"inception_score": metrics.inception_score(probs),
          "fid": metrics.frechet_distance(real_features,
                                          extractor.features(x)),
          "judge_confidence": float(probs.max(-1).mean()),
          "classes_covered": int(len(np.unique(probs.argmax(-1))))}


def _side_by_side(left, right):
  """Two uint8 pictures next to each other, 8 white columns between."""
  h = max(left.shape[0], right.shape[0])
  pad = lambda p: np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)),
                         constant_values=255)
  gap = np.full((h, 8, left.shape[2]), 255, np.uint8)
  return np.concatenate([pad(left), gap, pad(right)], 1)


def scatter_figure(gan_points, ddls_points, path, means=None):
  """G(z) and DDLS samples of the 2-D mixture, two panels, modes marked."""
  means = mixture.means() if means is None else means
  fig, axes = plots.subplots(1, 2, figsize=(9, 4.5), sharex=True,
                             sharey=True)
  for ax, pts, title in ((axes[0], gan_points, "G(z), z ~ N(0, I)"),
                         (axes[1], ddls_points, "DDLS: G(z) after Langevin "
                                                "on E(z)")):
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, color="tab:blue")
    ax.scatter(means[:, 0], means[:, 1], s=20, marker="x", color="tab:red")
    ax.set_title(title)
    ax.set_xlim(-5.5, 5.5)
    ax.set_ylim(-5.5, 5.5)
    ax.set_aspect("equal")
  fig.tight_layout()
  return plots.save(fig, path)


@gin.configurable
def evaluate_gan(model, workdir, x_test, x_train, judge_fn=None,
                 feature_extractor="auto", fid_network_path=None,
                 num_samples=None, ddls_steps=None, draws=1, seed=0,
                 calibration_examples=2000, high_quality_stds=4.0,
                 min_mode_share=0.1):
  """G(z) vs DDLS of a trained GAN, on the same z.

  Args:
    model: a restored `ebmkit.GAN`.
    workdir: its workdir (figures/).
    x_test: test examples (FID's reference).
    x_train: training examples (D's calibration, when the GAN needs one).
    judge_fn: a zero-argument function returning the independent
      classifier (`common.train_judge`'s Extractor, trained on demand), for
      images.
    feature_extractor, fid_network_path: as `evaluate`'s (IS/FID network).
    num_samples: samples of each kind per draw; None: 500 for small images
      and 2-D data, 50,000 for 32×32 images and larger.
    ddls_steps: Langevin steps (default: the GAN's latent sampler's).
    draws: independent draws of z (seeds seed, seed + 1000, ...): mean and
      std over them.
    seed: the first draw's seed.
    calibration_examples: training examples D's calibration is fitted on.
    high_quality_stds, min_mode_share: see `mixture_scores`.

  Returns:
    The evaluation dict (kind "gan").
  """
  shape = model.sample_shape
  is_image = len(shape) == 3
  steps = model.latent_sampler.steps if ddls_steps is None else int(ddls_steps)
  n = int(num_samples or (common.default_num_samples(shape) if is_image
                          else 5000))
  out = {"kind": KIND, "loss": model.loss_name, "num_samples": n,
         "draws": int(draws), "ddls_sampler": {
             "steps": steps, "step_size": model.latent_sampler.step_size,
             "noise": model.latent_sampler.noise},
         "figures": {}}
  if model.needs_calibration:
    out["discriminator_calibration"] = model.calibrate_discriminator(
        x_train[:calibration_examples], seed=seed)
  else:
    out["discriminator_calibration"] = {
        "skipped": "the discriminator is trained as a logit (non-saturating "
                   "loss)"}
  extractor = real_features = None
  if is_image:
    judge = judge_fn()
    extractor = common.select_extractor(judge, shape, feature_extractor,
                                        fid_network_path)
    real_features = extractor.features(x_test)
    out["feature_network"] = {"name": extractor.name,
                              "label": extractor.label,
                              "description": extractor.description,
                              "standard": extractor.standard}
    out["test_set"] = {"inception_score": metrics.inception_score(
        extractor.probs(x_test)), "num_samples": int(len(x_test))}
  runs = {"gan": [], "ddls": []}
  for i in range(int(draws)):
    rng = np.random.default_rng(seed + i * common.DRAW_SEED_STRIDE)
    z = rng.standard_normal((n, model.latent_dim)).astype(np.float32)
    x_gan = _in_chunks(lambda c: model.generator(c, training=False), z)
    x_ddls = _in_chunks(lambda c: model.ddls_sample(z0=c, steps=steps), z)
    for kind, x in (("gan", x_gan), ("ddls", x_ddls)):
      runs[kind].append(
          _image_scores(extractor, real_features, x) if is_image
          else mixture_scores(x, high_quality_stds=high_quality_stds,
                              min_mode_share=min_mode_share))
    if i == 0:
      if is_image:
        grid = lambda x: images.make_grid(
            x[:64], scale=images.default_scale(x.shape[1]))
        out["figures"]["side_by_side"] = images.save_png(
            common.figure_path(workdir, "gan_vs_ddls.png"),
            _side_by_side(grid(x_gan), grid(x_ddls)))
      else:
        out["figures"]["scatter"] = scatter_figure(
            x_gan, x_ddls, common.figure_path(workdir, "gan_vs_ddls.png"))
  for kind, results in runs.items():
    mean, std = common.mean_and_std(results)
    if std is not None and int(draws) > 1:
      mean["std"] = std
    out[kind] = mean
  return out
