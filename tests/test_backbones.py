"""ebmkit.networks.backbones: PyTorch's default initialisation, by hand."""

import keras
import numpy as np
import pytest

from ebmkit.networks import backbones


def wrn(init):
  keras.utils.set_random_seed(0)
  model = backbones.wide_resnet(depth=10, width=4, init=init)
  model.build((None, 32, 32, 3))
  return model


def test_torch_init_draws_kernels_and_biases_within_one_over_root_fan_in():
  """nn.Conv2d / nn.Linear: kaiming_uniform(a=√5) for the kernel is
  U(±gain·√(3/fan_in)) with gain √(2/(1+5)), i.e. U(±1/√fan_in); the bias
  is U(±1/√fan_in). A uniform on ±b has std b/√3."""
  model = wrn("torch")
  checked = 0
  for v in model.weights:
    if not v.path.endswith(("/kernel", "/bias")):
      continue
    owner = v.path.rsplit("/", 1)[0]
    kernel = [w for w in model.weights if w.path == owner + "/kernel"][0]
    fan_in = int(np.prod(kernel.shape[:-1]))
    bound = 1 / np.sqrt(fan_in)
    values = v.numpy().ravel()
    assert np.abs(values).max() <= bound * (1 + 1e-6), v.path
    if values.size >= 2000:  # std within 5% (its standard error is < 2%).
      assert values.std() == pytest.approx(bound / np.sqrt(3), rel=0.05)
      checked += 1
  assert checked >= 5


def test_keras_defaults_differ_as_measured_against_the_reference():
  """Glorot-uniform kernels are wider than PyTorch's (the class layer
  ~2.3×, a 3×3 convolution of equal fan-in and fan-out 1/√(1/3 · 2/(1+9))…)
  and Keras' biases are zero: what recipes/jem_reference.gin changes."""
  keras_model, torch_model = wrn("keras"), wrn("torch")
  std = lambda m, path: float(np.std([w for w in m.weights
                                      if w.path.endswith(path)][0].numpy()))
  ratio = std(keras_model, "class_output/kernel") / std(
      torch_model, "class_output/kernel")
  # Glorot: √(6/(256 + 10))/√3 against 1/√256/√3: ratio √(6·256/266) = 2.40.
  assert ratio == pytest.approx(np.sqrt(6 * 256 / 266), rel=0.1)
  assert std(keras_model, "class_output/bias") == 0.0
  assert std(torch_model, "class_output/bias") > 0.0


def test_an_unknown_init_is_named():
  with pytest.raises(ValueError, match="init must be one of"):
    backbones.wide_resnet(depth=10, width=1, init="pytorch")
