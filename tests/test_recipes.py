"""The JEM++ and SADA-JEM recipes: JEM++'s proximal SGLD as its code runs it
against ebmkit's clamped sampler, by hand; the classifier term's own batch;
the recipes' settings as the papers' code has them."""

import gin
import numpy as np
import pytest
import tensorflow as tf

from ebmkit import gin_utils
from ebmkit.data import pipeline as data
from ebmkit.models import energy_model as models
from ebmkit.training import experiment

# A quadratic energy E(x) = ½ Σ (x − c)² / s²: the gradient ascent on
# −E moves x towards c, far enough that clamps bite.
C = np.array([[0.9, -3.0, 0.1, 2.5]], np.float32)
S = 0.3


def grad_log_p(x):
  return -(x - C) / S ** 2


def jempp_pyld(x, n_steps=10, in_steps=5, pyld_lr=0.2, eps=1.0):
  """JEM++'s sampler as train_jempp.py runs it (sgld_lr = 0, sgld_std = 0):
  per outer step, the gradient eta at x (p, the first layer's gradient, is
  fixed there, and the first layer is linear, so the inner loop's gradient
  is eta), then `in_steps` steps of pyld_lr along clamp(eta, −eps, eps),
  clamping x to [−1, 1] after each."""
  x = x.copy()
  for _ in range(n_steps):
    eta = grad_log_p(x)
    z = x
    for _ in range(in_steps):
      z = np.clip(z + pyld_lr * np.clip(eta, -eps, eps), -1, 1)
    x = z
  return x


X0 = np.array([[0.5, 0.5, -0.99, -0.2]], np.float32)


def quadratic(x):
  return 0.5 * tf.reduce_sum(tf.square(x - C), -1) / S ** 2


def recipe_chain(config):
  """The sampler `config` wires into its model, run from X0 on the
  quadratic energy."""
  gin_utils.parse([config])
  sampler = experiment.configured_model().sampler
  return sampler(tf.constant(X0), energy_fn=quadratic).numpy()


def test_jempp_proximal_sgld_is_the_clamped_sampler_of_its_recipe():
  got = recipe_chain("jempp_digits.gin")
  np.testing.assert_allclose(got, jempp_pyld(X0), atol=1e-6)
  # The clamps act: without them the chain would leave [−1, 1].
  assert got.min() == -1.0 and got.max() == 1.0


def test_sadajem_step_by_hand():
  """5 steps of x + 1·clamp(∇log p, −1, 1), no noise, clamped to [−1, 1]."""
  want = X0.copy()
  for _ in range(5):
    want = np.clip(want + np.clip(grad_log_p(want), -1, 1), -1, 1)
  np.testing.assert_allclose(recipe_chain("sadajem_digits.gin"), want,
                             atol=1e-6)


@pytest.mark.parametrize("config, settings", [
    ("jempp_cifar10.gin", {
        "%SGLD_STEPS": 10, "%SGLD_STEP_SIZE": 1.0, "%SGLD_NOISE": 0.0,
        "%SGLD_GRAD_CLIP": 1.0, "%BUFFER_SIZE": 10000, "%REINIT_PROB": 0.05,
        "%EPOCHS": 150, "%DECAY_EPOCHS": (50, 100, 125), "%DECAY_RATE": 0.2,
        "%LEARNING_RATE": 0.1, "%MOMENTUM": 0.9, "%WARMUP_STEPS": 1000,
        "%BATCH_SIZE": 64, "%DATA_NOISE": 0.03, "%NORM": "batch",
        "ReplayBuffer.init": "informative",
        "ReplayBuffer.init_covariance": "full"}),
    ("sadajem_cifar10.gin", {
        "%SGLD_STEPS": 5, "%SGLD_STEP_SIZE": 1.0, "%SGLD_NOISE": 0.0,
        "%SGLD_GRAD_CLIP": 1.0, "%EPOCHS": 200,
        "%DECAY_EPOCHS": (60, 120, 180), "%LEARNING_RATE": 0.1,
        "%SAM_RHO": 2.0, "%SAM_ADAPTIVE": True, "%BATCH_SIZE": 64,
        "%CLASSIFIER_BATCH_SIZE": 128, "%DATA_NOISE": 0.0,
        "load_dataset.augment": False, "load_dataset.classifier_augment": True,
        "train.train_split": "train", "ReplayBuffer.init": "informative"}),
])
def test_the_cifar10_recipes_hold_the_papers_settings(config, settings):
  """The values read from the papers' code (see the configs' comments)."""
  gin_utils.parse([config])
  for name, value in settings.items():
    assert gin.query_parameter(name) == value, name


def test_the_classifier_term_gets_its_own_augmented_batch():
  ds = data.load_dataset(split="train[:256]", batch_size=16, data_noise=0.0,
                         classifier_batch_size=32, classifier_augment=True,
                         augment=False, flip=False, seed=0)
  plain = data.load_dataset(split="train[:256]", batch_size=256,
                            training=False)
  originals = next(iter(plain))[0].numpy().reshape(256, -1)
  x, y = next(iter(ds))
  px, clf = x[models.IMAGES].numpy(), x[models.LABELLED_IMAGES].numpy()
  assert px.shape == (16, 8, 8, 1) and clf.shape == (32, 8, 8, 1)
  assert y.shape == (32,)
  # p(x) images are training images as they are; the classifier's are
  # shifted by the pad-and-crop (most of them).
  def is_original(batch):
    d = np.abs(batch.reshape(len(batch), 1, -1) - originals[None]).max(-1)
    return d.min(1) < 1e-6
  assert is_original(px).all()
  assert is_original(clf).mean() < 0.5
  # An epoch is one pass of the classifier's batches: 256 // 32.
  assert int(ds.cardinality()) == 8


def test_both_ways_of_a_separate_classifier_batch_are_refused_together():
  with pytest.raises(ValueError, match="set one of them"):
    data.load_dataset(split="train[:256]", classifier_batch_size=32,
                      labels_per_class=5)


@pytest.mark.parametrize("config", ["jem_reference_cifar10.gin",
                                    "jem_reference_digits.gin"])
def test_the_reference_recipe_sets_what_the_reference_does(config):
  gin_utils.parse([config])
  assert gin.query_parameter("wide_resnet.init") == "torch"
  assert gin.query_parameter("keras.optimizers.Adam.epsilon") == 1e-8
  assert gin_utils.bound("load_dataset.classifier_batch_size", None) == (
      gin.query_parameter("%BATCH_SIZE"))
  assert gin_utils.bound("load_dataset.eval_data_noise", None) == (
      gin.query_parameter("%DATA_NOISE")) == 0.03
