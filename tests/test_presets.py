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
  assert card["machine"].endswith(f", {os.cpu_count()} cores")
  model = ebmkit.from_preset(out)
  model.compile()
  test = ebmkit.load_dataset(split="test", training=False)
  accuracy = model.evaluate(test, return_dict=True, verbose=0)["accuracy"]
  assert accuracy == pytest.approx(card["test_accuracy"], abs=1e-6)
  assert os.path.isfile(os.path.join(out, "operative_config.gin"))


@pytest.mark.parametrize("name", ["jem_digits", "jem_fashion_mnist",
                                  "clf_fashion_mnist", "gan_fashion_mnist"])
def test_each_shipped_preset_is_what_its_card_says(name):
  """Loaded by name, no training: a classifier's test accuracy (the whole
  test split) is its card's, a GAN's sample statistics are."""
  with open(os.path.join(presets.SHIPPED, name, "card.json")) as f:
    card = json.load(f)
  (entry,) = [p for p in ebmkit.list_presets() if p["name"] == name]
  assert entry["dataset"] == card["dataset"]
  assert entry["family"] == card["family"] and entry["size_bytes"] > 1e5
  # The headline is the card's metrics, rounded.
  m = card["metrics"]
  assert (f"accuracy {m['accuracy']:.2%}" if "accuracy" in m
          else f"ddls FID {m['ddls']['fid']:.1f}") in entry["headline"]
  assert "not" in card["is_not"] and card["command"].startswith(
      "python -m ebmkit.run --gin_file=")
  if card["dataset"] == "fashion_mnist":
    from test_fashion_mnist import real_files_or_skip  # pylint: disable=g-import-not-at-top
    real_files_or_skip()
  model = ebmkit.from_preset(name)
  what, measured, promised = presets.card_check(model, card)
  if what == "test_accuracy":
    assert entry["test_accuracy"] == promised > 0.88
    assert measured == pytest.approx(promised, abs=1e-6)
    assert model.replay_buffer.samples.shape[1:] == tuple(model.sample_shape)
  else:
    assert model.generates and promised["num"] == 256
    for key in ("mean", "std", "discriminator_mean"):
      assert measured[key] == pytest.approx(promised[key], abs=1e-5), key
    assert card["metrics"]["ddls"]["fid"] > 0


@pytest.mark.parametrize("make", [energy_model, small_gan])
def test_every_model_kind_saves_itself_as_a_preset(make, tmp_path):
  model = make()
  path = model.save_to_preset(str(tmp_path / "p"), card={"seed": 3})
  loaded = ebmkit.from_preset(path)
  for a, b in zip(model.variables, loaded.variables):
    np.testing.assert_array_equal(b.numpy(), a.numpy(), a.path)
  with open(os.path.join(path, "card.json")) as f:
    assert json.load(f) == {"seed": 3, "name": "p",
                            "model": type(model).__name__}


def test_an_8_bit_buffer_is_within_half_a_step_and_the_rest_exact(tmp_path):
  model = energy_model()
  exact = model.save_to_preset(str(tmp_path / "exact"))
  small = model.save_to_preset(str(tmp_path / "small"), buffer_bits=8)
  loaded = ebmkit.from_preset(small)
  buffer = model.replay_buffer.samples.numpy()
  got = loaded.replay_buffer.samples.numpy()
  # Codes over [min, max] in 255 steps: every value within half a step.
  step = (buffer.max() - buffer.min()) / 255
  assert np.abs(got - buffer).max() <= step / 2 + 1e-6
  assert np.abs(got - buffer).max() > 0  # It is quantised.
  for a, b in zip(model.variables, loaded.variables):
    if a is not model.replay_buffer.samples:
      np.testing.assert_array_equal(b.numpy(), a.numpy(), a.path)
  size = lambda p: os.path.getsize(os.path.join(p, "model.weights.npz"))
  # The buffer is 2000·64 floats of 4 bytes; codes take 1 byte.
  assert size(exact) - size(small) > 0.7 * buffer.size * 3
  with open(os.path.join(small, "card.json")) as f:
    assert "8-bit" in json.load(f)["replay_buffer_stored"]
  with pytest.raises(presets.PresetError, match="buffer_bits must be 8"):
    model.save_to_preset(str(tmp_path / "bad"), buffer_bits=4)
  model.replay_buffer.samples[0, 0, 0, 0].assign(np.nan)
  with pytest.raises(presets.PresetError, match="NaN or Inf.*buffer_bits="
                     "None"):
    model.save_to_preset(str(tmp_path / "nan"), buffer_bits=8)


def test_fine_tuning_starts_from_the_preset(tmp_path, monkeypatch):
  """train(init_from=...) takes the preset's weights, buffer and random
  states: its first step's loss on a batch is the preset's own on it."""
  import gin  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top
  from ebmkit.training import train as train_lib  # pylint: disable=g-import-not-at-top
  source = os.path.join(presets.SHIPPED, "jem_digits")  # A trained model.
  config = [os.path.join(source, "operative_config.gin")]
  first = {}

  class Stop(Exception):
    pass

  def first_step(runner):
    batch = next(iter(runner.train_ds))
    preset = ebmkit.from_preset(source)
    preset.compile(optimizer=keras.optimizers.Adam(1e-3))
    first["tuned"] = float(runner.model.train_step(batch)["loss"])
    first["preset"] = float(preset.train_step(batch)["loss"])
    raise Stop

  monkeypatch.setattr(train_lib.Runner, "_fit_with_recovery", first_step)
  gin.clear_config()
  gin_utils.parse(config, [])
  with pytest.raises(Stop):
    train_lib.train(workdir=str(tmp_path / "w"), init_from=source,
                    verbose=0)
  assert first["tuned"] == pytest.approx(first["preset"], rel=1e-5)
  # Without the preset the same first step is another model's.
  gin.clear_config()
  gin_utils.parse(config, [])
  with pytest.raises(Stop):
    train_lib.train(workdir=str(tmp_path / "w2"), verbose=0)
  assert abs(first["tuned"] - first["preset"]) > 0.5
  # A preset of another model is refused, naming the variable.
  gin.clear_config()
  gin_utils.parse(config, ["BUFFER_SIZE = 100"])
  with pytest.raises(presets.PresetError,
                     match=r"init_from=.*samples \(100, 8, 8, 1\) in the "
                     r"model.*--init_from_preset"):
    train_lib.train(workdir=str(tmp_path / "w3"), init_from=source,
                    verbose=0)
  with pytest.raises(presets.PresetError, match="No preset 'nope'"):
    train_lib.train(workdir=str(tmp_path / "w4"), init_from="nope")
  assert not os.path.exists(tmp_path / "w4")


@pytest.mark.slow  # One epoch of the digits on the command line.
def test_the_command_line_fine_tunes_a_shipped_preset(tmp_path):
  """`--init_from_preset=jem_digits` with no --gin_file trains the preset's
  own config from its weights: one epoch ends at the preset's accuracy
  (one epoch from scratch: 41% on the idle Xeon, 2026-12-05); the preset
  mode writes it back with an 8-bit buffer; wrong uses get one line."""
  from conftest import run_ebmkit, run_module  # pylint: disable=g-import-not-at-top
  workdir, out = str(tmp_path / "tuned"), str(tmp_path / "preset")
  run_ebmkit(["--init_from_preset=jem_digits", f"--workdir={workdir}",
              "--gin_bindings=EPOCHS = 1", "--gin_bindings=train.verbose = 0"],
             str(tmp_path))
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["initialised_from"] == os.path.join(presets.SHIPPED,
                                                     "jem_digits")
  assert results["test_accuracy"] > 0.95 and results["steps"] == 22  # 1,437 // 64
  # Run again: it resumes its own checkpoint and says the preset is not
  # applied.
  proc = run_ebmkit(["--init_from_preset=jem_digits", f"--workdir={workdir}",
                     "--gin_bindings=EPOCHS = 1"], str(tmp_path))
  assert "is not applied: this run resumes its own checkpoint" in proc.stdout
  run_ebmkit(["--mode=preset", f"--workdir={workdir}", f"--output={out}",
              "--buffer_bits=8"], str(tmp_path))
  with open(os.path.join(out, "metadata.json")) as f:
    (name,) = json.load(f)["quantized"]
  assert name.endswith("/replay_buffer/samples")
  for args, message in (
      (["--init_from_preset=nope"], "No preset 'nope'"),
      (["--mode=eval", "--init_from_preset=jem_digits"],
       "fine-tunes (--mode=train), not --mode=eval")):
    proc = run_module(["ebmkit.run", f"--workdir={tmp_path / 'x'}"] + args,
                      str(tmp_path))
    assert proc.returncode != 0
    (line,) = [l for l in proc.stderr.splitlines() if "ebmkit: error" in l]
    assert message in line, proc.stderr[-2000:]
