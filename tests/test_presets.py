"""ebmkit.presets: save_to_preset → from_preset round trips for every model
kind, and the errors of a broken preset."""

import json
import os

import numpy as np
import pytest

import ebmkit
from ebmkit import presets
from ebmkit.gan import model as gan
from ebmkit.gan import networks as gan_networks
from ebmkit.training import checkpoints

from conftest import compiled_digits_model


def energy_model():
  model = compiled_digits_model(["EnergyModel.seed = 3"])
  # A buffer that is not its initial one, and a used random stream.
  model.replay_buffer.samples.assign(np.random.default_rng(0).uniform(
      -1, 1, model.replay_buffer.samples.shape).astype(np.float32))
  model.sample(2, steps=1)
  return model


def small_gan():
  model = gan.GAN(gan_networks.dcgan_generator(latent_dim=4, width=8),
                  gan_networks.dcgan_discriminator(width=8), loss="hinge")
  model.build((None, 8, 8, 1))
  return model


@pytest.mark.parametrize("make", [energy_model, small_gan])
def test_round_trip_keeps_outputs_buffer_and_random_state(make, tmp_path):
  model = make()
  path = ebmkit.save_to_preset(model, str(tmp_path / "p"),
                               card={"dataset": "sklearn_digits"})
  loaded = ebmkit.from_preset(path)
  assert type(loaded) is type(model)
  assert len(loaded.variables) == len(model.variables)
  for a, b in zip(model.variables, loaded.variables):
    # Weights, buffer and RNG states alike.
    np.testing.assert_array_equal(b.numpy(), a.numpy(), a.path)
  names = checkpoints.variables_by_name(model, with_optimizer=False)
  if not model.generates:
    assert any(n.endswith("seed_generator_state") or "seed" in n
               for n in names), sorted(names)
  x = np.random.default_rng(1).uniform(-1, 1, (3, 8, 8, 1)).astype(
      np.float32)
  if model.generates:
    z = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded.generator(z), model.generator(z),
                               rtol=1e-6)
  else:
    np.testing.assert_allclose(loaded(x)["logits"], model(x)["logits"],
                               rtol=1e-6)
    # The same random state: the next draws are the same.
    np.testing.assert_allclose(loaded.sample(2, steps=1),
                               model.sample(2, steps=1), rtol=1e-6)
  with open(os.path.join(path, "card.json")) as f:
    assert json.load(f)["dataset"] == "sklearn_digits"


def test_weights_that_do_not_match_name_the_first_variable(tmp_path):
  path = presets.save_to_preset(energy_model(), str(tmp_path / "p"))
  weights = dict(np.load(os.path.join(path, "model.weights.npz")))
  name = [k for k in weights if k.endswith("replay_buffer/samples")][0]
  weights[name] = weights[name][:10]
  np.savez(os.path.join(path, "model.weights.npz"), **weights)
  with pytest.raises(presets.PresetError,
                     match=r"replay_buffer/samples \(2000, 8, 8, 1\) in the "
                     r"model, is .*samples \(10, 8, 8, 1\)"):
    presets.from_preset(path)
  del weights[name]
  np.savez(os.path.join(path, "model.weights.npz"), **weights)
  with pytest.raises(presets.PresetError, match="holds 11 variables"):
    presets.from_preset(path)


@pytest.mark.parametrize("broken, message", [
    ("metadata.json", "no metadata.json"), ("config.json", "no config.json"),
    ("model.weights.npz", "no model.weights.npz")])
def test_a_missing_file_gets_one_line(broken, message, tmp_path):
  path = presets.save_to_preset(energy_model(), str(tmp_path / "p"))
  os.remove(os.path.join(path, broken))
  with pytest.raises(presets.PresetError, match=message) as e:
    presets.from_preset(path)
  assert "\n" not in str(e.value)


def test_a_corrupt_file_is_named(tmp_path):
  path = presets.save_to_preset(energy_model(), str(tmp_path / "p"))
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write("{not json")
  with pytest.raises(presets.PresetError, match="config.json .* is corrupt"):
    presets.from_preset(path)
  with pytest.raises(presets.PresetError, match="No preset 'no_such'"):
    presets.from_preset("no_such")


@pytest.mark.slow  # Trains two epochs of the digits on the command line.
def test_a_trained_workdir_becomes_a_preset_whose_card_is_true(tmp_path):
  from conftest import SMALL_DIGITS, run_ebmkit  # pylint: disable=g-import-not-at-top
  workdir, out = str(tmp_path / "run"), str(tmp_path / "preset")
  run_ebmkit(["--gin_file=jem_digits.gin", f"--workdir={workdir}",
              "--gin_bindings=EPOCHS = 2"]
             + [f"--gin_bindings={b}" for b in SMALL_DIGITS], str(tmp_path))
  run_ebmkit(["--mode=preset", f"--workdir={workdir}", f"--output={out}"],
             str(tmp_path))
  with open(os.path.join(out, "card.json")) as f:
    card = json.load(f)
  assert card["dataset"] == "sklearn_digits" and card["training_steps"] > 0
  model = ebmkit.from_preset(out)
  model.compile()
  test = ebmkit.load_dataset(split="test", training=False)
  accuracy = model.evaluate(test, return_dict=True, verbose=0)["accuracy"]
  assert accuracy == pytest.approx(card["test_accuracy"], abs=1e-6)
  assert os.path.isfile(os.path.join(out, "operative_config.gin"))


def test_the_shipped_jem_digits_preset_is_what_its_card_says():
  """Loaded by name, no training: its test accuracy is the card's."""
  (entry,) = [p for p in ebmkit.list_presets() if p["name"] == "jem_digits"]
  with open(os.path.join(presets.SHIPPED, "jem_digits", "card.json")) as f:
    card = json.load(f)
  assert entry["test_accuracy"] == card["test_accuracy"] > 0.95
  assert "not the paper's" in card["is_not"] and card["command"]
  model = ebmkit.from_preset("jem_digits")
  model.compile()
  test = ebmkit.load_dataset(split="test", training=False)
  accuracy = model.evaluate(test, return_dict=True, verbose=0)["accuracy"]
  assert accuracy == pytest.approx(card["test_accuracy"], abs=1e-6)
  assert model.replay_buffer.samples.shape == (2000, 8, 8, 1)
