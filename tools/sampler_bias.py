"""How far a sampler's chains are from the distribution they should sample.

On energies whose distribution is known exactly:
  - mog25: the 25-Gaussian mixture (std 0.05 on the 5x5 grid {-4..4}^2, the
    embedded data set) as an energy, E(x) = -log sum_k exp(-|x - mu_k|^2 /
    (2 s^2));
  - gauss256: a correlated Gaussian in 256 dimensions, covariance
    Q diag(lambda) Q^T with lambda log-spaced in [0.1, 1] (condition number
    10), E(x) = x^T Sigma^-1 x / 2;
chains from uniform starts are run with
  - JEM's SGLD settings (alpha = 1, sigma = 0.01) as they are;
  - "SGLD, JEM's noise": alpha = eps/2 with JEM's noise-to-step ratio,
    sigma = sqrt(2 alpha) / 141 (stable on these targets);
  - calibrated unadjusted Langevin (ULA): alpha = eps/2, sigma = sqrt(eps);
  - MALA and HMC (tfp.mcmc, ebmkit.MCMCSampler) with step-size adaptation;
and compared with exact draws: the sliced Wasserstein distance (SWD, 128
random directions; its floor is the SWD between two exact draws of the same
size), and on mog25 the per-mode mass (total variation from uniform 1/25)
and the share of points more than 4 std from every mode. Each figure at
10, 100 and 1,000 steps, with the wall time of the steps so far.

On a trained workdir (--workdir), where no exact sampler exists: MALA
chains started from the replay buffer; how far they drift (mean energy, the
model's predicted-class histogram, and the judge classifier's if the
workdir was evaluated) says how far the buffer is from a sample of p(x).

  python tools/sampler_bias.py --output=sampler_bias.json
  python tools/sampler_bias.py --workdir=ebmkit_runs/jem_digits --steps=200
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

from ebmkit.data.datasets import mixture
from ebmkit.models import mcmc
from ebmkit.models import sampling

CHECKPOINTS = (10, 100, 1000)
JEM_NOISE_RATIO = 0.01 / np.sqrt(2.0)  # JEM's sigma / sqrt(2 alpha), alpha = 1


def sliced_wasserstein(a, b, directions=128, seed=0):
  """Mean over random unit directions of the 1-D Wasserstein-1 distance
  between the projections of two equal-size point sets."""
  rng = np.random.default_rng(seed)
  d = rng.standard_normal((a.shape[1], directions))
  d /= np.linalg.norm(d, axis=0, keepdims=True)
  pa, pb = np.sort(a @ d, axis=0), np.sort(b @ d, axis=0)
  return float(np.mean(np.abs(pa - pb)))


def mode_stats(x, means, std):
  """(total variation of the per-mode mass from uniform, share of points
  more than 4 std from every mode, the spread around the nearest mode as a
  share of the true std: sqrt(mean squared distance / 2) / std, 1 for exact
  draws)."""
  dist = np.linalg.norm(x[:, None, :] - means[None], axis=-1)
  nearest = dist.argmin(1)
  mass = np.bincount(nearest, minlength=len(means)) / len(x)
  near = dist.min(1)
  off = float(np.mean(near > 4 * std))
  spread = float(np.sqrt(np.mean(np.square(near[near <= 4 * std])) / 2) / std
                 ) if np.any(near <= 4 * std) else None
  return float(0.5 * np.abs(mass - 1 / len(means)).sum()), off, spread


class Target:
  """An energy with exact draws."""

  def __init__(self, name, seed=0):
    self.name = name
    rng = np.random.default_rng(seed)
    if name == "mog25":
      self.means = mixture.means()
      self.std = mixture.STD
      self.dim, self.low, self.high = 2, -5.0, 5.0
      self.eps = 2e-4  # calibrated step: well below 2 s^2 = 5e-3
      mu = tf.constant(self.means)
      self.energy = lambda x: -tf.reduce_logsumexp(
          -tf.reduce_sum(tf.square(x[:, None, :] - mu), -1)
          / (2 * self.std ** 2), -1)
    elif name == "gauss256":
      self.dim, self.low, self.high = 256, -3.0, 3.0
      q, _ = np.linalg.qr(rng.standard_normal((self.dim, self.dim)))
      lam = np.logspace(-1, 0, self.dim)
      self.cov_sqrt = (q * np.sqrt(lam)).astype(np.float32)
      precision = tf.constant((q / lam) @ q.T, tf.float32)
      self.eps = 0.02  # curvature <= 10: ULA's bias is O(eps)
      self.energy = lambda x: 0.5 * tf.reduce_sum(
          x * tf.linalg.matmul(x, precision), -1)
    else:
      raise ValueError(f"Unknown target {name!r}: mog25 or gauss256.")

  def exact(self, n, seed):
    rng = np.random.default_rng(seed)
    if self.name == "mog25":
      return mixture.draw(n, seed)[0]
    return (rng.standard_normal((n, self.dim)) @ self.cov_sqrt.T).astype(
        np.float32)

  def starts(self, n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(self.low, self.high, (n, self.dim)).astype(np.float32)


def samplers(target):
  eps = target.eps
  return {
      "SGLD, JEM's settings (α = 1, σ = 0.01)": sampling.LangevinSampler(
          step_size=1.0, noise=0.01, seed=0),
      "SGLD, JEM's noise ratio (α = ε/2, σ = √(2α)/141)":
          sampling.LangevinSampler(step_size=eps / 2,
                                   noise=JEM_NOISE_RATIO * np.sqrt(eps),
                                   seed=0),
      "ULA, calibrated (α = ε/2, σ = √ε)": sampling.LangevinSampler(
          step_size=eps / 2, noise=float(np.sqrt(eps)), seed=0),
      "MALA (ε adapted)": mcmc.MCMCSampler(
          kernel="mala", step_size=eps, adapt_step_size=True, seed=0),
      "HMC, 5 leapfrog steps (ε adapted)": mcmc.MCMCSampler(
          kernel="hmc", step_size=eps, adapt_step_size=True, seed=0),
  }


def measure(target, n=2000, seed=0):
  """Rows of {sampler, steps, seconds, swd, (tv, off_mode), acceptance}."""
  exact = target.exact(n, seed + 1)
  rows = [{"sampler": "exact draws (the floor: a second draw)", "steps": 0,
           "seconds": 0.0,
           "swd": sliced_wasserstein(target.exact(n, seed + 2), exact)}]
  if target.name == "mog25":
    rows[0]["mode_tv"], rows[0]["off_mode"], rows[0]["spread"] = mode_stats(
        target.exact(n, seed + 2), target.means, target.std)
  for name, sampler in samplers(target).items():
    run = tf.function(lambda x, k, s=sampler: s(
        x, energy_fn=target.energy, steps=k), reduce_retracing=True)
    x = tf.constant(target.starts(n, seed))
    done, seconds = 0, 0.0
    for k in CHECKPOINTS:
      start = time.perf_counter()
      x = run(x, tf.constant(k - done))
      x.numpy()
      seconds += time.perf_counter() - start
      done = k
      points = x.numpy()
      finite = np.isfinite(points).all()
      row = {"sampler": name, "steps": k, "seconds": round(seconds, 3),
             "swd": sliced_wasserstein(points, exact) if finite else None}
      if target.name == "mog25" and finite:
        row["mode_tv"], row["off_mode"], row["spread"] = mode_stats(
            points, target.means, target.std)
      if hasattr(sampler, "acceptance_rate"):
        row["acceptance"] = round(float(sampler.acceptance_rate), 3)
        row["step_size"] = float(sampler.current_step_size)
      rows.append(row)
  return rows


def markdown(results):
  out = []
  for name, rows in results.items():
    out += [f"**{name}** (SWD to exact draws; lower is closer)", "",
            "| sampler | steps | SWD | mode mass TV | off-mode share | "
            "spread / true std | acceptance | time (s) |",
            "|---|---|---|---|---|---|---|---|"]
    for r in rows:
      fmt = lambda v, f: "–" if v is None else format(v, f)
      out.append(
          f"| {r['sampler']} | {r['steps']} | "
          f"{fmt(r.get('swd'), '.4f') if r.get('swd') is not None else 'diverged'} | "
          f"{fmt(r.get('mode_tv'), '.3f')} | {fmt(r.get('off_mode'), '.3f')} "
          f"| {fmt(r.get('spread'), '.3f')} | {fmt(r.get('acceptance'), '.2f')}"
          f" | {r['seconds']:.2f} |")
    out.append("")
  return "\n".join(out)


def buffer_drift(workdir, steps=200, n=500, seed=0):
  """MALA chains from the replay buffer of a trained workdir: how far they
  drift in energy and in predicted classes."""
  import ebmkit  # pylint: disable=g-import-not-at-top
  model = ebmkit.load_model(workdir)
  buf = model.replay_buffer
  idx = np.random.default_rng(seed).choice(buf.size, min(n, buf.size),
                                           replace=False)
  x0 = tf.gather(buf.samples.value, idx)
  sampler = mcmc.MCMCSampler(kernel="mala", step_size=1e-4,
                             adapt_step_size=True, seed=seed)
  energy = lambda x: -model(x, training=False)["log_px"]
  run = tf.function(lambda x, k: sampler(x, energy_fn=energy, steps=k),
                    reduce_retracing=True)
  x = x0
  report = {"workdir": workdir, "chains": int(len(idx)), "steps": []}
  judge_path = os.path.join(workdir, "eval", "judge.keras")
  judge = None
  if os.path.exists(judge_path):
    import keras  # pylint: disable=g-import-not-at-top
    judge = keras.saving.load_model(judge_path)

  def stats(points, k):
    out = model(points, training=False)
    row = {"steps": k, "mean_energy": float(tf.reduce_mean(-out["log_px"]))}
    if "logits" in out:
      hist = np.bincount(np.argmax(out["logits"], -1),
                         minlength=out["logits"].shape[-1])
      row["model_classes"] = (hist / len(points)).round(3).tolist()
    if judge is not None:
      hist = np.bincount(np.argmax(judge(points, training=False)[0], -1),
                         minlength=model.num_classes)
      row["judge_classes"] = (hist / len(points)).round(3).tolist()
    row["mean_l2_from_start"] = float(tf.reduce_mean(tf.norm(
        tf.reshape(points - x0, [len(idx), -1]), axis=-1)))
    return row

  report["steps"].append(stats(x, 0))
  done = 0
  for k in (10, steps // 2, steps):
    if k <= done:
      continue
    x = run(x, tf.constant(k - done))
    done = k
    row = stats(x, k)
    row["acceptance"] = round(float(sampler.acceptance_rate), 3)
    row["step_size"] = float(sampler.current_step_size)
    report["steps"].append(row)
  return report


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--targets", default="mog25,gauss256")
  parser.add_argument("--chains", type=int, default=2000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", help="a trained EnergyModel workdir: "
                      "measure its buffer's drift under MALA instead")
  parser.add_argument("--steps", type=int, default=200,
                      help="MALA steps from the buffer (--workdir)")
  parser.add_argument("--output", help="write the results as JSON here")
  args = parser.parse_args(argv)
  if args.workdir:
    if not os.path.isdir(args.workdir):
      sys.exit(f"sampler_bias: error: no workdir at {args.workdir}.")
    result = buffer_drift(args.workdir, args.steps, seed=args.seed)
    print(json.dumps(result, indent=1))
  else:
    result = {}
    for name in args.targets.split(","):
      result[name] = measure(Target(name.strip(), args.seed), args.chains,
                             args.seed)
    print(markdown(result))
  if args.output:
    with open(args.output, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
