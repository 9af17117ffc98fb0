"""Shipped .gin files: found by bare name, each trains; the command line."""

import json
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ebmkit import gin_utils
from ebmkit.data import pipeline as data
from ebmkit.gan import model as gan
from ebmkit.training import experiment
from ebmkit.training import train as train_lib

from conftest import TINY_EVAL, run_ebmkit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Bindings that shrink any shipped config to two steps on the CPU.
SHRINK = ["train.epochs = 1", "train.train_split = 'train[:128]'",
          "BUFFER_SIZE = 100", "train.jit_compile = False",
          "train.checkpoint_every_steps = 0"]
# Two XLA-compiled steps at batch 8 on tiny networks, for every config
# (CIFAR/SVHN on tfds.testing.mock_data).
TINY = ["EPOCHS = 1", "train.epochs = 1", "BATCH_SIZE = 8",
        "train.train_split = 'train[:16]'",
        "train.validation_split = 'train[:8]'", "train.test_split = 'test[:8]'",
        "SGLD_STEPS = 2", "BUFFER_SIZE = 200", "DEPTH = 10", "WIDTH = 1",
        "IGEBM_FILTERS = (8, 8)", "IGEBM_DOWNSAMPLE = (True, False)",
        "WARMUP_STEPS = 1", "train.checkpoint_every_steps = 0",
        "train.jit_compile = True", "CLASSIFIER_BATCH_SIZE = 8"]
EXPERIMENTS = [c for c in gin_utils.shipped_configs() if "/" not in c]
# The CIFAR/SVHN configs (on mock data) compile a wide ResNet with XLA, about
# 12 s each on 2 CPU cores: slow. The digits configs cover every family fast
# The ddls_*.gin files are their GAN's config plus DDLS settings: training
# them trains that GAN again, so they are checked below by building the GAN
# and running DDLS instead.
EXPERIMENT_PARAMS = [name if "digits" in name
                     else pytest.param(name, marks=pytest.mark.slow)
                     for name in EXPERIMENTS if not name.startswith("ddls")]
DDLS_CONFIGS = [name for name in EXPERIMENTS if name.startswith("ddls")]


def test_configs_are_shipped():
  for name in ("jem_digits.gin", "igebm_digits.gin", "jem_factored_digits.gin",
               "clf_digits.gin", "jem_cifar10.gin", "igebm_cifar10.gin",
               "jem_factored_cifar10.gin", "jem_cifar100.gin", "jem_svhn.gin",
               "wrn_cifar10.gin", "jem_fashion_mnist.gin",
               "clf_fashion_mnist.gin", "jem_factored_fashion_mnist.gin",
               "igebm_fashion_mnist.gin", "gan_fashion_mnist.gin",
               "ddls_fashion_mnist.gin"):
    assert name in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENT_PARAMS)
def test_every_shipped_config_builds_and_trains_two_steps(name, tmp_path):
  gin_utils.parse([name], TINY)
  dataset = gin.query_parameter("load_dataset.name")
  if gin_utils.bound("ReplayBuffer.init", "uniform") == "informative":
    # 16 images leave classes without the two images a per-class Gaussian
    # needs (tests/test_families.py tests the initialisation itself).
    gin.clear_config()
    gin_utils.parse([name], TINY + ["ReplayBuffer.init = 'uniform'"])
  if dataset in data.embedded_datasets.EMBEDDED:
    results = train_lib.train(workdir=str(tmp_path))
  else:
    with tfds.testing.mock_data(num_examples=16):
      results = train_lib.train(workdir=str(tmp_path))
  assert results["steps"] == 2  # 16 examples, batch 8, one epoch.
  metrics = results["train_metrics_last_epoch"]
  assert "loss" in metrics
  for key, value in metrics.items():
    assert np.isfinite(value), key  # Neither NaN nor Inf.
  # Unconditional models (IGEBM, GANs) have no test accuracy.
  assert ("test_accuracy" in results) == (
      not name.startswith(("igebm", "gan", "sngan", "ddls")))


@pytest.mark.parametrize("name", DDLS_CONFIGS)
def test_ddls_configs_build_their_gan_and_run_ddls(name):
  gin_utils.parse([name], TINY)
  dataset = gin.query_parameter("load_dataset.name")
  if dataset in data.embedded_datasets.EMBEDDED:
    model = experiment.configured_model()
  else:
    with tfds.testing.mock_data(num_examples=16):
      model = experiment.configured_model()
  assert isinstance(model, gan.GAN)
  # Each file's DDLS chain length reaches the sampler: the paper's 1,000
  # steps on CIFAR-10, the README's 100 on the digits, 500 on the mixture.
  assert model.latent_sampler.steps == {
      "ddls_cifar10.gin": 1000, "ddls_digits.gin": 100,
      "ddls_mog25.gin": 500, "ddls_fashion_mnist.gin": 100}[name]
  z = np.random.default_rng(0).normal(
      size=(3, model.latent_dim)).astype(np.float32)
  x = model.ddls_sample(z0=z, steps=2).numpy()
  assert x.shape == (3,) + tuple(model.sample_shape)
  assert np.isfinite(x).all()
  # Two Langevin steps moved the chains: G of the moved z differs from G(z).
  assert not np.allclose(x, model.generator(z, training=False).numpy())


@pytest.mark.parametrize("name, extra", [
    # Semi-supervised: 3 labels per class of 128 images, two pipelines.
    ("jem_digits.gin", ["load_dataset.labels_per_class = 3",
                        "train.train_split = 'train[:128]'"]),
    ("jem_factored_digits.gin", ["load_dataset.labels_per_class = 3",
                                 "train.train_split = 'train[:128]'"]),
    # Batch norm: separate forward passes for data and samples.
    pytest.param("jem_cifar10.gin", ["NORM = 'batch'"],
                 marks=pytest.mark.slow)])
def test_semi_supervised_and_batch_norm_variants_train(name, extra, tmp_path):
  gin_utils.parse([name], TINY + extra)
  if "cifar" in name:
    with tfds.testing.mock_data(num_examples=16):
      results = train_lib.train(workdir=str(tmp_path))
  else:
    results = train_lib.train(workdir=str(tmp_path))
  split = gin.query_parameter("train.train_split")
  assert results["steps"] == (16 if split == "train[:128]" else 2)
  for key, value in results["train_metrics_last_epoch"].items():
    assert np.isfinite(value), key
  model = experiment.build_model(data.dataset_info(
      gin.query_parameter("load_dataset.name")))
  assert model.passes_apart == ("NORM = 'batch'" in extra)


def test_bare_names_resolve_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = gin_utils.find_gin_file("jem_digits.gin")
  assert os.path.isfile(path)
  assert gin_utils.find_gin_file("jem_digits") == path
  with pytest.raises(FileNotFoundError, match="jem_digits.gin"):
    gin_utils.find_gin_file("no_such_config.gin")


def run_cli(args, cwd):
  proc = run_ebmkit(args, cwd)
  return proc.stdout + proc.stderr


@pytest.mark.slow
def test_command_line_trains_resumes_and_evaluates(tmp_path):
  workdir = str(tmp_path / "run")
  bindings = [f"--gin_bindings={b}" for b in SHRINK]
  out = run_cli(["--gin_file=jem_digits.gin", f"--workdir={workdir}"]
                + bindings, cwd=str(tmp_path))
  assert "Test accuracy on sklearn_digits/test" in out
  with open(os.path.join(workdir, "results.json")) as f:
    first = json.load(f)
  assert first["steps"] == 2
  assert os.path.isfile(os.path.join(workdir, "samples", "buffer_latest.png"))
  assert os.path.isfile(os.path.join(workdir, "operative_config.gin"))

  # The same command with more epochs resumes from step 2.
  out = run_cli(["--gin_file=jem_digits.gin", f"--workdir={workdir}",
                 "--gin_bindings=train.epochs = 2"] + bindings[1:],
                cwd=str(tmp_path))
  assert "Resuming from" in out and "at step 2 of 4" in out
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["steps"] == 4

  out = run_cli(["--mode=eval", f"--workdir={workdir}"]
                + [f"--gin_bindings={b}" for b in TINY_EVAL], cwd=str(tmp_path))
  assert "report.md" in out
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  # The evaluation restores the trained model: same test accuracy.
  assert abs(results["evaluation"]["accuracy"] - results["test_accuracy"]) \
      < 1e-6
  out = run_cli(["--mode=compare", f"--workdirs={workdir},{workdir}",
                 f"--workdir={tmp_path}"], cwd=str(tmp_path))
  assert out.count("| run |") >= 2
  assert os.path.isfile(os.path.join(tmp_path, "comparison.md"))


@pytest.mark.slow
def test_unknown_gin_file_is_explained(tmp_path):
  env = dict(os.environ)
  proc = subprocess.run([sys.executable, "-m", "ebmkit.run",
                         "--gin_file=jem_digitz.gin"], cwd=str(tmp_path),
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "No gin file 'jem_digitz.gin'" in proc.stderr
  assert "jem_digits.gin" in proc.stderr  # Lists the shipped configs.
