"""ebmkit.models.kind: each model kind answers the interface for itself, and
no caller in ebmkit asks which class a model is; the recovery policy as one
gin configurable."""

import ast
import os

import gin
import numpy as np
import pytest

import ebmkit
from ebmkit import gin_utils
from ebmkit.gan import model as gan
from ebmkit.gan import networks as gan_networks
from ebmkit.models import kind
from ebmkit.serving import signatures
from ebmkit.training import recovery

from conftest import compiled_digits_model

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "ebmkit")
KIND_CLASSES = ("EnergyModel", "GAN")


def small_gan():
  model = gan.GAN(gan_networks.dcgan_generator(latent_dim=4, width=8),
                  gan_networks.dcgan_discriminator(width=8), loss="hinge")
  model.build((None, 8, 8, 1))
  return model


def test_an_energy_model_answers_for_itself():
  model = compiled_digits_model()
  assert isinstance(model, kind.ModelKind)
  assert (model.classifies, model.draws_samples, model.generates) == (
      True, True, False)
  assert model.replay_buffer is not None and model.trains_distributed
  assert model.sample_shape == (8, 8, 1) and model.data_range == (-1.0, 1.0)
  assert list(model.other_optimizers) == []
  assert not model.needs_informative_init()  # jem_digits.gin: uniform.
  grid = model.sample_grid(16)
  # 16 buffer images of 8×8 in a 4×4 grid (scaled up for small images).
  assert grid.dtype == np.uint8 and grid.ndim == 3
  assert model.serving_signatures() == (
      "classify", "energy", "log_px", "ood_score", "sample",
      "conditional_density")
  assert model.serving_signatures(detection=True)[-1] == "detect"
  assert model.export_metadata() == {"input_shape": [8, 8, 1],
                                     "data_range": [-1.0, 1.0],
                                     "detection": None}
  # The export's own range and threshold win over the model's.
  assert model.export_metadata((0.0, 1.0), {"threshold": 2.0}) == {
      "input_shape": [8, 8, 1], "data_range": [0.0, 1.0],
      "detection": {"threshold": 2.0}}


def test_a_gan_answers_for_itself():
  model = small_gan()
  assert (model.classifies, model.draws_samples, model.generates) == (
      False, False, True)
  assert model.replay_buffer is None and not model.trains_distributed
  assert model.sample_shape == (8, 8, 1)
  assert model.serving_signatures(detection=True) == ("generate",
                                                      "ddls_sample")
  assert model.export_metadata() == {"kind": "gan", "latent_dim": 4,
                                     "output_shape": [8, 8, 1]}
  assert model.generator in model.export_parts()
  assert model.sample_grid(4).dtype == np.uint8


def test_every_exported_signature_has_a_builder():
  """What a kind lists, `ebmkit.serving.signatures` builds, one function
  each; nothing is built that no kind lists."""
  listed = set(compiled_digits_model().serving_signatures(True)) | set(
      small_gan().serving_signatures())
  assert listed == set(signatures.BUILDERS)


def test_a_model_that_is_no_kind_is_refused_with_what_to_bind():
  from ebmkit.data import pipeline as data  # pylint: disable=g-import-not-at-top
  from ebmkit.training import experiment  # pylint: disable=g-import-not-at-top
  gin_utils.parse(["jem_digits.gin"],
                  ["get_model.model = @keras.optimizers.Adam()"])
  _, info = data.load_dataset(split="test", with_info=True)
  with pytest.raises(TypeError, match="ModelKind"):
    experiment.build_model(info)


def kind_questions(source):
  """Lines where code asks which class a model is: isinstance(…, …GAN or
  …EnergyModel), hasattr(model, …), getattr(model, "replay_buffer", …)."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
      continue
    args = node.args
    if node.func.id == "isinstance" and len(args) == 2:
      names = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "")
               for n in ast.walk(args[1])}
      if names & set(KIND_CLASSES):
        found.append(node.lineno)
    elif node.func.id in ("hasattr", "getattr") and args and ast.unparse(
        args[0]) in ("model", "self.model"):
      if node.func.id == "hasattr" or (
          isinstance(args[1], ast.Constant) and args[1].value in (
              "replay_buffer", "sample_grid", "other_optimizers")):
        found.append(node.lineno)
  return found


def test_no_caller_asks_which_class_a_model_is():
  asked = {}
  for root, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(root, f)
        with open(path) as fh:
          lines = kind_questions(fh.read())
        if lines:
          asked[os.path.relpath(path, PACKAGE)] = lines
  assert not asked, (f"Ask the model (ebmkit.models.kind.ModelKind) instead "
                     f"of its class: {asked}")


def test_the_class_question_check_can_fail():
  source = ("if isinstance(model, gan_lib.GAN): pass\n"
            "buf = getattr(model, 'replay_buffer', None)\n"
            "if hasattr(model, 'sample_grid'): pass\n"
            "ok = isinstance(model, kind.ModelKind)\n")
  assert kind_questions(source) == [1, 2, 3]


# -- the recovery policy ---------------------------------------------------------


@pytest.mark.parametrize("binding, message", [
    ("RecoveryPolicy.max_recoveries = -1", "max_recoveries must be a whole"),
    ("RecoveryPolicy.max_recoveries = 1.5", "max_recoveries must be a whole"),
    ("RecoveryPolicy.lr_factor = 0.0", r"lr_factor must be in \(0, 1\]"),
    ("RecoveryPolicy.lr_factor = 2.0", r"lr_factor must be in \(0, 1\]"),
    ("RecoveryPolicy.l2_increase = -0.1", "l2_increase must be >= 0"),
    ("RecoveryPolicy.gap_bound = 0", "gap_bound must be > 0"),
])
def test_a_bad_recovery_setting_is_named(binding, message):
  gin_utils.parse([], [binding])
  with pytest.raises(ValueError, match=message):
    recovery.policy_of(True)


def test_the_policy_reads_its_gin_bindings():
  gin_utils.parse([], ["RecoveryPolicy.max_recoveries = 7",
                       "RecoveryPolicy.lr_factor = 0.25",
                       "RecoveryPolicy.gap_bound = 50.0"])
  policy = recovery.policy_of(True)
  assert (policy.max_recoveries, policy.lr_factor) == (7, 0.25)
  guard = policy.guard()
  assert (guard.gap_bound, guard.loss_bound) == (50.0, 1e4)
  assert recovery.policy_of(False) is None
  with pytest.raises(ValueError, match="train.recovery must be"):
    recovery.policy_of("yes")


@pytest.mark.parametrize("old, new", sorted(gin_utils.MOVED.items()))
def test_an_old_recovery_binding_names_its_new_home(old, new):
  with pytest.raises(ValueError, match=f"{old} is now {new}"):
    gin_utils.parse(["jem_digits.gin"], [f"{old} = 1"])
  gin.clear_config()


def test_ebmkit_exports_the_training_entry_points():
  from ebmkit.training import train as train_lib  # pylint: disable=g-import-not-at-top
  assert ebmkit.train is train_lib.train
  assert ebmkit.load_dataset.__name__ == "load_dataset"
