"""Rebuilds the presets shipped in ebmkit/preset_files/ from their commands.

Each preset is a workdir trained and evaluated with the shipped commands
(the ones its card names), written with `--mode=preset` and a card that
says what it is:

  python tools/make_presets.py --runs=ebmkit_runs/presets --out=ebmkit/preset_files
  python tools/make_presets.py --names=jem_digits ...         # only some
  python tools/make_presets.py --workdir=jem_fashion_mnist=W ...  # an
      # existing workdir trained and evaluated by the same commands

A workdir that already holds an evaluation is not trained again. Training
all four takes about 2.5 hours on 2 CPU cores (Fashion-MNIST's need the
data prepared, see the README). Writes each preset folder and prints its
size; `tools/check_wheel.sh` then checks each one against its card from the
installed wheel.
"""

import argparse
import json
import os
import shutil
import subprocess
import time

import claims  # tools/claims.py: runs `python -m ebmkit.run`, knows a finished evaluation

# name -> the training config, the evaluation's extra config, whether the
# buffer is stored at 8 bits, and what the card says beyond what the
# workdir's results give.
PRESETS = {
    "jem_digits": {
        "train": "jem_digits.gin", "eval": None, "buffer_bits": None,
        "card": {
            "family": "JEM",
            "model": "EnergyModel (JEM: small convnet, SGLD 20 steps, replay "
                     "buffer of 2,000)",
            "split": "trained on sklearn_digits train (1,437 images), "
                     "metrics on its test split (360)",
            "is_not": "not a CIFAR-10 model and not the paper's: the "
                      "CPU-scale JEM of ebmkit's quick start, on 8x8 digits"}},
    "jem_fashion_mnist": {
        "train": "jem_fashion_mnist.gin", "eval": None, "buffer_bits": 8,
        "card": {
            "family": "JEM",
            "model": "EnergyModel (JEM: the lean Fashion-MNIST convnet, "
                     "informative start, replay buffer of 10,000)",
            "split": "trained on fashion_mnist train[5000:] (55,000 images; "
                     "train[:5000] held out for validation), metrics on its "
                     "test split (10,000)",
            "is_not": "not a CIFAR-10 model and not the paper's: JEM at CPU "
                      "scale on 28x28 grey clothing (about 20 minutes on 2 "
                      "cores); its replay buffer is stored at 8 bits"}},
    "clf_fashion_mnist": {
        "train": "clf_fashion_mnist.gin", "eval": None, "buffer_bits": 8,
        "card": {
            "family": "classifier",
            "model": "EnergyModel trained as a plain classifier (no p(x) "
                     "term): the same convnet as jem_fashion_mnist",
            "split": "trained on fashion_mnist train[5000:] (55,000 images), "
                     "metrics on its test split (10,000)",
            "is_not": "not an energy model trained for p(x): its log p(x) "
                      "and samples are a classifier's (the baseline JEM is "
                      "compared with)"}},
    "gan_fashion_mnist": {
        "train": "gan_fashion_mnist.gin", "eval": "ddls_fashion_mnist.gin",
        "buffer_bits": None,
        "card": {
            "family": "GAN (DDLS)",
            "model": "GAN (DCGAN-style, spectral norm, non-saturating loss; "
                     "D is a logit, so DDLS needs no calibration)",
            "split": "trained on fashion_mnist train (60,000 images); FID "
                     "and IS against its test split from 5,000 samples",
            "is_not": "not the DDLS paper's CIFAR-10 SN-GAN: a CPU-scale "
                      "GAN on 28x28 grey clothing; sample it with DDLS as "
                      "ddls_fashion_mnist.gin does"}},
}


def commands(name, spec):
  """The commands that make the preset, as its card shows them."""
  train = f"python -m ebmkit.run --gin_file={spec['train']} --workdir=W"
  evaluate = "python -m ebmkit.run --mode=eval --workdir=W" + (
      f" --gin_file={spec['eval']}" if spec["eval"] else "")
  preset = (f"python -m ebmkit.run --mode=preset --workdir=W --output={name}"
            + (f" --buffer_bits={spec['buffer_bits']}"
               if spec["buffer_bits"] else ""))
  return "; ".join([train, evaluate, preset])


def make(name, workdir, out, cwd):
  """Trains and evaluates `workdir` unless done, then writes the preset."""
  import gin  # pylint: disable=g-import-not-at-top
  from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top
  from ebmkit import preset_format  # pylint: disable=g-import-not-at-top
  from ebmkit import presets  # pylint: disable=g-import-not-at-top
  spec = PRESETS[name]
  if not claims.evaluated(workdir):
    claims.run_ebmkit([f"--gin_file={spec['train']}", f"--workdir={workdir}"],
                      cwd)
    claims.run_ebmkit(
        ["--mode=eval", f"--workdir={workdir}"]
        + ([f"--gin_file={spec['eval']}"] if spec["eval"] else []), cwd)
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  evaluation = results["evaluation"]
  card = {
      "name": name, **spec["card"], "dataset": results.get("dataset"),
      "command": commands(name, spec),
      "config": f"{spec['train']} (operative_config.gin in this folder)",
      "seed": 0,
      "machine": (f"written on {presets.machine()}, "
                  f"{time.strftime('%Y-%m-%d')}; training took "
                  f"{results.get('wall_time_s')} s and the evaluation "
                  f"{evaluation.get('wall_time_s')} s (their own timers)"),
      "ebmkit_commit": _commit(),
  }
  if evaluation.get("kind") == "gan":
    card["metrics"] = {part: evaluation.get(part) for part in ("gan", "ddls")}
    card["metrics"]["num_samples"] = evaluation.get("num_samples")
  gin.clear_config()
  gin_utils.parse([os.path.join(workdir, "operative_config.gin")], [])
  target = os.path.join(out, name)
  if os.path.isdir(target):
    shutil.rmtree(target)
  presets.save_workdir_preset(workdir, target, card, spec["buffer_bits"])
  model = presets.from_preset(target)
  if model.generates:  # What the check from the wheel compares.
    card = preset_format.read_json(os.path.join(target, preset_format.CARD),
                                   preset_format.CARD)
    card["sample_statistics"] = presets.sample_statistics(model)
    preset_format.write_card(target, card)
  size = sum(os.path.getsize(os.path.join(target, f))
             for f in os.listdir(target))
  print(f"{target}: {size / 1e6:.1f} MB", flush=True)
  return size


def _commit():
  try:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True,
        text=True, check=True,
        cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--names", default=",".join(PRESETS),
                      help="comma-separated presets to make")
  parser.add_argument("--runs", default="ebmkit_runs/presets",
                      help="folder of the training workdirs")
  parser.add_argument("--out", default="ebmkit/preset_files",
                      help="folder the presets are written to")
  parser.add_argument("--workdir", action="append", default=[],
                      help="NAME=WORKDIR: use this workdir (trained and "
                      "evaluated with the card's commands) for NAME")
  args = parser.parse_args(argv)
  given = dict(w.split("=", 1) for w in args.workdir)
  names = [n for n in args.names.split(",") if n]
  unknown = [n for n in names + list(given) if n not in PRESETS]
  if unknown:
    parser.error(f"unknown presets {unknown}; choose from {', '.join(PRESETS)}")
  os.makedirs(args.out, exist_ok=True)
  total = 0
  for name in names:
    workdir = os.path.abspath(given.get(name) or os.path.join(args.runs, name))
    total += make(name, workdir, os.path.abspath(args.out), os.getcwd())
  print(f"{len(names)} presets, {total / 1e6:.1f} MB in all.")


if __name__ == "__main__":
  main()
