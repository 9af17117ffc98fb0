"""Round trips of every registered class (keras-hub `test_case.py` style).

Each class registered with `@keras.saving.register_keras_serializable(
package="ebmkit")` is built with non-default constructor arguments and goes
through `get_config` → `from_config` (via JSON, as a .keras file stores it),
weights copied with `set_weights`, and a `.keras` save/load. A registered
class without a case here fails `test_every_registered_class_has_a_case`.
"""

import dataclasses
import importlib
import inspect
import json
import os
import pkgutil
from typing import Any, Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

import ebmkit
from ebmkit.gan import ddls
from ebmkit.gan import model as gan
from ebmkit.gan import networks as gan_networks
from ebmkit.models import buffer
from ebmkit.models import energy_model as models
from ebmkit.models import heads as energy
from ebmkit.models import mcmc
from ebmkit.models import replicas
from ebmkit.models import sampling
from ebmkit.networks import backbones
from ebmkit.training import sam
from ebmkit.training import schedules

IMAGE_SHAPE = (4, 4, 1)  # Samples of the tiny models below.


def jsonify(value):
  """`value` as a .keras file stores it (tuples become lists)."""
  return json.loads(json.dumps(value))


def config_clone(obj):
  """`type(obj).from_config` of `obj.get_config()` after a trip through JSON."""
  return type(obj).from_config(jsonify(obj.get_config()))


def randomise_weights(layer, seed=0):
  """Every weight (kernels, biases, batch-norm statistics, spectral-norm
  vectors, buffer contents) set to ±U(0.5, 1.5) / fan-in, random signs
  (variances positive), so that a weight that is not copied changes the
  outputs (a fresh layer's batch-norm statistics are 0 and 1, its biases 0),
  and so that activations see negative inputs (a forgotten LeakyReLU slope
  shows)."""
  rng = np.random.default_rng(seed)
  values = []
  for w in layer.weights:
    value = rng.uniform(0.5, 1.5, w.shape) / max(1, int(np.prod(
        w.shape[:-1])))
    if "variance" not in w.path:
      value *= rng.choice([-1.0, 1.0], w.shape)
    values.append(value.astype(np.float32))
  layer.set_weights(values)


def assert_outputs_equal(got, want):
  if isinstance(want, dict):
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_array_equal(np.asarray(got[key]),
                                    np.asarray(want[key]), err_msg=key)
  else:
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def tiny_backbone(classes=3):
  return keras.Sequential([
      keras.layers.Conv2D(4, 3, padding="same", name="conv"),
      keras.layers.GlobalAveragePooling2D(name="pool"),
      keras.layers.Dense(classes, name="logits")], name="tiny_backbone")


def container(replay_buffer=None, sampler=None):
  """A tiny EnergyModel that carries a buffer or a sampler into a .keras
  file (neither is a tensor-to-tensor layer a Sequential could hold)."""
  model = models.EnergyModel(
      tiny_backbone(3),
      replay_buffer=replay_buffer or buffer.ReplayBuffer(size=6, seed=0),
      sampler=sampler or sampling.LangevinSampler(steps=1, noise=0.0))
  model.build((None,) + IMAGE_SHAPE)
  return model


def save_and_load(model, tmp_path):
  path = os.path.join(tmp_path, "model.keras")
  keras.saving.save_model(model, path)
  return keras.saving.load_model(path)


def quadratic_energy(x):
  """E(x) = ½‖x‖², ∂E/∂x = x."""
  return 0.5 * tf.reduce_sum(tf.reshape(x, (tf.shape(x)[0], -1)) ** 2, -1)


# -- the cases -----------------------------------------------------------------

SAMPLER_KWARGS = dict(steps=4, step_size=0.05, noise=0.0, grad_clip=2.0,
                      clip_range=(-3.0, 3.0), seed=7, loop="partial",
                      unroll=3, name="sgld")
# 3.5 is clamped to 3 after its first step, 2.5 has its gradient clipped to
# 2, -0.5 takes plain gradient steps.
CHAIN_START = np.array([[3.5, 2.5, -0.5]], np.float32)


def hand_chain(x, steps=4, step_size=0.05, grad_clip=2.0, low=-3.0, high=3.0):
  """SAMPLER_KWARGS' chain on E(x) = ½‖x‖², by hand."""
  x = x.astype(np.float64)
  for _ in range(steps):
    x = np.clip(x - step_size * np.clip(x, -grad_clip, grad_clip), low, high)
  return x


def informative_buffer_kwargs():
  return dict(size=6, reinit_prob=0.5, num_classes=3, data_range=(-2.0, 2.0),
              seed=11, init="informative", init_components=3,
              init_covariance="diagonal", name="buffer")


def fit_buffer(b):
  """Builds `b` and fits its informative initialisation to synthetic data
  (class c around c − 1): its samples, means and scales all differ from a
  fresh buffer's."""
  b.build(IMAGE_SHAPE)
  labels = np.repeat(np.arange(3), 4)
  noise = np.random.default_rng(2).normal(size=(12,) + IMAGE_SHAPE)
  images = (labels[:, None, None, None] - 1.0 + 0.3 * noise).clip(-2, 2)
  b.fit_informative_init(images.astype(np.float32), labels)


def energy_model_kwargs():
  return dict(
      backbone=tiny_backbone(3), head=energy.EnergyHead(name="jem_head"),
      replay_buffer=buffer.ReplayBuffer(size=6, reinit_prob=0.2, num_classes=3,
                                        seed=4),
      sampler=sampling.LangevinSampler(steps=2, step_size=0.5, noise=0.0,
                                       clip_range=(-1.0, 1.0)),
      clf_weight=0.5, px_weight=0.25, pxy_weight=0.75, l2_weight=0.1,
      px_conditional_chains=True, seed=3, separate_passes=True,
      name="jem")


def gan_kwargs():
  """A tiny MLP GAN with every argument away from its default."""
  return dict(
      generator=gan_networks.mlp_generator(latent_dim=3, width=4, depth=1),
      discriminator=gan_networks.mlp_discriminator(width=4, depth=1),
      loss="hinge", n_critic=2, generator_learning_rate_ratio=0.5,
      l2_weight=0.1, latent_sampler=sampling.LangevinSampler(steps=3),
      calibrate=True, data_range=(-2.0, 2.0), seed=3, name="gan")


@dataclasses.dataclass
class Case:
  cls: type
  kwargs: Callable[[], dict]  # Fresh objects for each instance.
  kind: str  # "layer", "model", "buffer", "sampler" or "schedule".
  input_shape: tuple = ()  # Of a layer's or model's input, batch first.
  extra: Any = None


CASES = {
    "EnergyHead": Case(energy.EnergyHead, lambda: dict(name="head"), "layer",
                       (3, 4)),
    "ScalarEnergyHead": Case(
        energy.ScalarEnergyHead,
        lambda: dict(use_bias=False, spectral_norm=True, name="scalar_head"),
        "layer", (3, 2, 2, 3)),
    "OutputGradLeakyReLU": Case(
        backbones.OutputGradLeakyReLU,
        lambda: dict(negative_slope=0.1, name="act"), "layer", (2, 3)),
    "WideBasicBlock": Case(
        backbones.WideBasicBlock,
        lambda: dict(in_filters=3, filters=5, stride=2, dropout=0.1,
                     norm="batch", leak=0.1, name="block"),
        "layer", (2, 4, 4, 3)),
    "WideResNet": Case(
        backbones.WideResNet,
        lambda: dict(depth=10, width=1, num_classes=4, norm="batch",
                     dropout=0.1, leak=0.1, init="torch", name="wrn"),
        "layer", (2, 8, 8, 3)),
    "IGEBMBlock": Case(
        backbones.IGEBMBlock,
        lambda: dict(in_filters=3, filters=4, downsample=True,
                     spectral_norm=False, activation="elu", name="igebm_block"),
        "layer", (2, 4, 4, 3)),
    "IGEBMResNet": Case(
        backbones.IGEBMResNet,
        lambda: dict(filters=(8, 8), downsample=(True, False),
                     spectral_norm=False, activation="elu", name="igebm"),
        "layer", (2, 4, 4, 1)),
    "ReplayBuffer": Case(buffer.ReplayBuffer, informative_buffer_kwargs,
                         "buffer"),
    "LangevinSampler": Case(sampling.LangevinSampler,
                            lambda: dict(SAMPLER_KWARGS), "sampler"),
    "WarmupStepDecay": Case(
        schedules.WarmupStepDecay,
        lambda: dict(learning_rate=2e-3, warmup_steps=5, decay_epochs=(1, 3),
                     decay_rate=0.5, steps_per_epoch=10),
        "schedule",
        # (step, rate by hand): warm-up (s + 1)/5, × 0.5 from step 10 and 30.
        extra=[(0, 4e-4), (3, 1.6e-3), (4, 2e-3), (9, 2e-3), (10, 1e-3),
               (29, 1e-3), (30, 5e-4), (1000, 5e-4)]),
    "EnergyModel": Case(models.EnergyModel, energy_model_kwargs, "model",
                        (2,) + IMAGE_SHAPE),
    # GAN networks (their .keras round trips with outputs: test_gan_networks).
    "GeneratorBlock": Case(gan_networks.GeneratorBlock,
                           lambda: dict(filters=5, name="gblock"), "layer",
                           (2, 4, 4, 3)),
    "DiscriminatorBlock": Case(
        gan_networks.DiscriminatorBlock,
        lambda: dict(filters=5, downsample=False, first=True,
                     spectral_norm=False, name="dblock"),
        "layer", (2, 4, 4, 3)),
    "GlobalSumPooling2D": Case(gan_networks.GlobalSumPooling2D,
                               lambda: dict(name="sum_pool"), "layer",
                               (2, 4, 4, 3)),
    # The GAN owns G and D, so LatentEnergy and GAN have their output round
    # trips in test_gan.py; here their configs.
    "LatentEnergy": Case(
        ddls.LatentEnergy,
        lambda: dict(latent_dim=3, generator=gan_networks.mlp_generator(
            latent_dim=3, width=4, depth=1),
                     discriminator=gan_networks.mlp_discriminator(
                         width=4, depth=1), name="latent_energy"),
        "latent_energy"),
    "GAN": Case(gan.GAN, gan_kwargs, "gan"),
    # Per-replica random numbers (test_distribute); its config is Keras'.
    "SeedGenerator": Case(replicas.SeedGenerator,
                          lambda: dict(seed=5, name="noise"), "seed"),
    # MALA/HMC (their chains: test_mcmc) and SAM (its steps: test_sam).
    "MCMCSampler": Case(
        mcmc.MCMCSampler,
        lambda: dict(kernel="hmc", steps=3, step_size=0.2, leapfrog_steps=2,
                     adapt_step_size=True, target_accept=0.7, seed=5,
                     name="mcmc"), "mcmc"),
    "SAM": Case(
        sam.SAM,
        lambda: dict(optimizer=keras.optimizers.SGD(0.2, momentum=0.5),
                     rho=0.3, adaptive=True, name="sharp"), "optimizer"),
}
# Besides the all-non-default cases: the IGEBM network as shipped (spectral
# norm on every convolution) and the IGEBM family's model (scalar head).
EXTRA_CASES = {
    "IGEBMResNet-spectral": Case(
        backbones.IGEBMResNet,
        lambda: dict(filters=(8, 8), downsample=(True, False), name="igebm"),
        "layer", (2, 4, 4, 1)),
    "EnergyModel-igebm": Case(
        models.EnergyModel,
        lambda: dict(
            backbone=backbones.igebm_resnet((8, 8), (True, False)),
            head=energy.ScalarEnergyHead(spectral_norm=True),
            replay_buffer=buffer.ReplayBuffer(size=6, seed=4),
            sampler=sampling.LangevinSampler(steps=2, noise=0.0,
                                             grad_clip=0.01),
            clf_weight=0.0, l2_weight=1.0),
        "model", (2,) + IMAGE_SHAPE),
}
ALL_CASES = {**CASES, **EXTRA_CASES}


def names(*kinds):
  return sorted(n for n, c in ALL_CASES.items() if c.kind in kinds)


def registered():
  """Every class registered under package "ebmkit", after importing every
  ebmkit module (a class in a module the package does not import counts)."""
  for module in pkgutil.walk_packages(ebmkit.__path__, "ebmkit."):
    importlib.import_module(module.name)
  return {key[len("ebmkit>"):]: cls
          for key, cls in keras.saving.get_custom_objects().items()
          if key.startswith("ebmkit>")}


def build(case, obj):
  """Builds a fresh instance as its case uses it."""
  if case.kind in ("layer", "model"):
    obj.build((None,) + case.input_shape[1:])
  elif case.kind == "buffer":
    obj.build(IMAGE_SHAPE)
  return obj


def fixed_input(case):
  return np.random.default_rng(1).uniform(
      -1, 1, case.input_shape).astype(np.float32)


# -- the tests -----------------------------------------------------------------

def test_every_registered_class_has_a_case():
  found = registered()
  assert set(found) == set(CASES)
  for name, case in CASES.items():
    assert found[name] is case.cls, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_case_sets_every_argument_to_a_non_default_value(name):
  # So that a get_config that forgets an argument fails the tests below.
  case = CASES[name]
  params = {p.name: p for p in inspect.signature(case.cls.__init__).parameters
            .values() if p.kind == p.POSITIONAL_OR_KEYWORD and p.name != "self"}
  kwargs = case.kwargs()
  assert set(params) <= set(kwargs), set(params) - set(kwargs)
  for key, param in params.items():
    value, default = kwargs[key], param.default
    if default is param.empty:  # A required argument.
      continue
    if isinstance(value, (keras.layers.Layer, keras.optimizers.Optimizer)):
      assert default is None, key  # An object for the built-in default.
    else:
      assert jsonify(value) != jsonify(default), key


@pytest.mark.parametrize("name", sorted(CASES))
def test_get_config_holds_every_argument_and_from_config_restores_it(name):
  case = CASES[name]
  kwargs = case.kwargs()
  obj = case.cls(**kwargs)
  config = obj.get_config()
  # Each constructor argument, as given (nested objects serialised).
  for key, value in kwargs.items():
    if isinstance(value, (keras.layers.Layer, keras.Model,
                          keras.optimizers.Optimizer)):
      value = keras.saving.serialize_keras_object(value)
    assert jsonify(config[key]) == jsonify(value), key
  clone = config_clone(obj)
  assert type(clone) is case.cls
  assert jsonify(clone.get_config()) == jsonify(config)
  # And through Keras' own (de)serialisation, by registered name.
  serialised = keras.saving.serialize_keras_object(obj)
  assert serialised["registered_name"] == f"ebmkit>{name}"
  again = keras.saving.deserialize_keras_object(jsonify(serialised))
  assert type(again) is case.cls
  assert jsonify(again.get_config()) == jsonify(config)


@pytest.mark.parametrize("name", names("layer", "model"))
def test_layer_from_config_with_copied_weights_gives_the_same_outputs(name):
  case = ALL_CASES[name]
  obj = build(case, case.cls(**case.kwargs()))
  randomise_weights(obj)
  clone = build(case, config_clone(obj))
  assert [w.shape for w in clone.weights] == [w.shape for w in obj.weights]
  clone.set_weights(obj.get_weights())
  x = fixed_input(case)
  want = obj(x)
  assert_outputs_equal(clone(x), want)
  # The copy is what makes them equal: a fresh clone differs.
  if obj.weights:
    fresh = build(case, config_clone(obj))
    out, ref = fresh(x), want
    if isinstance(ref, dict):
      out, ref = out["energy"], ref["energy"]
    assert not np.array_equal(np.asarray(out), np.asarray(ref))


@pytest.mark.parametrize("name", names("layer"))
def test_layer_in_a_keras_file_gives_the_same_outputs(name, tmp_path):
  case = ALL_CASES[name]
  layer = build(case, case.cls(**case.kwargs()))
  randomise_weights(layer)
  inputs = keras.Input(shape=case.input_shape[1:])
  model = keras.Model(inputs, layer(inputs))
  x = fixed_input(case)
  loaded = save_and_load(model, tmp_path)
  restored = loaded.layers[-1]
  assert type(restored) is case.cls
  assert jsonify(restored.get_config()) == jsonify(layer.get_config())
  assert_outputs_equal(loaded(x), layer(x))
  assert_outputs_equal(restored(x), layer(x))


@pytest.mark.parametrize("name", names("model"))
def test_energy_model_in_a_keras_file_gives_the_same_outputs(name, tmp_path):
  case = ALL_CASES[name]
  model = build(case, models.EnergyModel(**case.kwargs()))
  randomise_weights(model)
  x = fixed_input(case)
  loaded = save_and_load(model, tmp_path)
  assert type(loaded) is models.EnergyModel
  assert jsonify(loaded.get_config()) == jsonify(model.get_config())
  assert_outputs_equal(loaded(x), model(x))
  np.testing.assert_array_equal(loaded.replay_buffer.samples.numpy(),
                                model.replay_buffer.samples.numpy())
  y = np.array([0, 2]) if model.classifies else None
  if model.classifies:
    np.testing.assert_array_equal(loaded.class_energy(x, y),
                                  model.class_energy(x, y))
  # The noise-free sampler runs the same chain.
  np.testing.assert_array_equal(
      sampling.run_chain(loaded, x, y), sampling.run_chain(model, x, y))


def test_a_model_that_trained_and_sampled_round_trips_with_its_optimizer(
    tmp_path):
  # Sampling stores compiled samplers on the model; training builds the
  # optimizer. Neither may stop the save, and the step count travels.
  case = CASES["EnergyModel"]
  model = build(case, models.EnergyModel(**case.kwargs()))
  model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
  x, y = fixed_input(case), np.array([0, 2])
  model.train_on_batch(x, y)
  model.sample(4, steps=2)
  model.sample(y=[0, 1], steps=2)
  loaded = save_and_load(model, tmp_path)
  assert_outputs_equal(loaded(x), model(x))
  assert int(loaded.optimizer.iterations.numpy()) == 1
  for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.path)


def test_replay_buffer_from_config_with_copied_weights_has_the_same_samples():
  b = buffer.ReplayBuffer(**informative_buffer_kwargs())
  fit_buffer(b)
  clone = config_clone(b)
  clone.build(IMAGE_SHAPE)
  clone.set_weights(b.get_weights())
  for attr in ("samples", "init_mean", "init_scale"):
    np.testing.assert_array_equal(getattr(clone, attr).numpy(),
                                  getattr(b, attr).numpy(), err_msg=attr)
  # Means by hand: class c was drawn around c − 1.
  np.testing.assert_allclose(b.init_mean.numpy().mean(1), [-1, 0, 1],
                             atol=0.3)
  # Seeds travel too: a new buffer and its config clone draw alike
  # (slots, re-initialisations and informative starts).
  first = buffer.ReplayBuffer(**informative_buffer_kwargs())
  second = config_clone(first)
  for one in (first, second):
    one.build(IMAGE_SHAPE)
  y = tf.constant([0, 1, 2, 2, 1, 0, 0, 1])
  (s1, i1), (s2, i2) = first.draw(8, y=y), second.draw(8, y=y)
  np.testing.assert_array_equal(i1, i2)
  np.testing.assert_array_equal(s1, s2)
  np.testing.assert_array_equal(i1.numpy() // 2, y.numpy())  # Slices of 2.


def test_replay_buffer_in_a_keras_file_keeps_its_samples(tmp_path):
  b = buffer.ReplayBuffer(**informative_buffer_kwargs())
  fit_buffer(b)
  model = container(replay_buffer=b)
  loaded = save_and_load(model, tmp_path).replay_buffer
  assert type(loaded) is buffer.ReplayBuffer
  assert jsonify(loaded.get_config()) == jsonify(b.get_config())
  assert loaded.sample_shape == IMAGE_SHAPE
  for attr in ("samples", "init_mean", "init_scale"):
    np.testing.assert_array_equal(getattr(loaded, attr).numpy(),
                                  getattr(b, attr).numpy(), err_msg=attr)


def test_langevin_sampler_from_config_runs_the_same_chain():
  sampler = sampling.LangevinSampler(**SAMPLER_KWARGS)
  clone = config_clone(sampler)
  clone.set_weights(sampler.get_weights())
  want = hand_chain(CHAIN_START)
  got = sampler(CHAIN_START, energy_fn=quadratic_energy)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_array_equal(clone(CHAIN_START, energy_fn=quadratic_energy),
                                got)


def test_langevin_sampler_in_a_keras_file_runs_the_same_chain(tmp_path):
  sampler = sampling.LangevinSampler(**SAMPLER_KWARGS)
  loaded = save_and_load(container(sampler=sampler), tmp_path).sampler
  assert type(loaded) is sampling.LangevinSampler
  assert jsonify(loaded.get_config()) == jsonify(sampler.get_config())
  np.testing.assert_allclose(
      loaded(CHAIN_START, energy_fn=quadratic_energy), hand_chain(CHAIN_START),
      rtol=1e-6)


def test_warmup_step_decay_from_config_gives_the_same_rates():
  case = CASES["WarmupStepDecay"]
  schedule = case.cls(**case.kwargs())
  clone = config_clone(schedule)
  for step, rate in case.extra:
    np.testing.assert_allclose(float(schedule(step)), rate, rtol=1e-6)
    assert float(clone(step)) == float(schedule(step)), step


def test_warmup_step_decay_in_a_keras_file_gives_the_same_rates(tmp_path):
  case = CASES["WarmupStepDecay"]
  model = container()
  model.compile(optimizer=keras.optimizers.Adam(case.cls(**case.kwargs())),
                jit_compile=False)
  model.optimizer.build(model.trainable_variables)
  model.optimizer.iterations.assign(10)
  loaded = save_and_load(model, tmp_path)
  # The optimizer's schedule object (`learning_rate` is its current value).
  schedule = loaded.optimizer._learning_rate  # pylint: disable=protected-access
  assert type(schedule) is case.cls
  assert jsonify(schedule.get_config()) == jsonify(case.kwargs())
  assert int(loaded.optimizer.iterations.numpy()) == 10
  np.testing.assert_allclose(float(loaded.optimizer.learning_rate), 1e-3,
                             rtol=1e-6)  # Step 10: 2e-3 · 0.5.
  for step, rate in case.extra:
    np.testing.assert_allclose(float(schedule(step)), rate, rtol=1e-6)
