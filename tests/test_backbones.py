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


@pytest.mark.parametrize("slope", [0.0, 0.2, 1.0])
def test_output_grad_leaky_relu_equals_keras_in_value_and_derivatives(slope):
  """The gradient read from the output is TensorFlow's own, bit for bit,
  including at 0 and for a slope of 0 (ReLU); the second derivative (which
  is 0 almost everywhere) too, so nested tapes see the same function."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = tf.constant(np.concatenate([
      np.random.default_rng(0).normal(size=200), [0.0, -0.0, 1e-30, -1e-30]]),
      tf.float32)
  dy = tf.constant(np.random.default_rng(1).normal(size=x.shape[0]),
                   tf.float32)
  ours = backbones.OutputGradLeakyReLU(negative_slope=slope)
  theirs = keras.layers.LeakyReLU(negative_slope=slope)
  results = []
  for layer in (ours, theirs):
    with tf.GradientTape() as outer:
      outer.watch(x)
      with tf.GradientTape() as inner:
        inner.watch(x)
        y = layer(x)
      g = inner.gradient(y, x, output_gradients=dy)
      gsum = tf.reduce_sum(g * g)
    results.append((y.numpy(), g.numpy(), outer.gradient(gsum, x)))
  (y0, g0, h0), (y1, g1, h1) = results
  np.testing.assert_array_equal(y0, y1)
  np.testing.assert_array_equal(g0, g1)
  # By hand: dy where x > 0, slope·dy elsewhere.
  np.testing.assert_allclose(
      g0, np.where(x.numpy() > 0, 1.0, slope) * dy.numpy(), rtol=1e-6)
  for h in (h0, h1):
    assert h is None or not np.any(h.numpy())


def test_wide_resnet_input_gradient_equals_keras_layers():
  """The whole WRN with its own activation gives the same energy gradient
  as the same weights run through Keras' LeakyReLU."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = wrn("torch")
  x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)),
                  tf.float32)

  def keras_forward(v):
    act = keras.layers.LeakyReLU(negative_slope=model.leak)
    out = model.conv1(v)
    for block in model.blocks:
      h = block.conv2(act(block.conv1(act(out))))
      out = h + (block.shortcut(out) if block.shortcut else out)
    return model.class_output(model.pool(act(out)))

  grads = []
  for forward in (model, keras_forward):
    with tf.GradientTape() as tape:
      tape.watch(x)
      lse = tf.reduce_sum(tf.reduce_logsumexp(forward(x), axis=-1))
    grads.append(tape.gradient(lse, x).numpy())
  assert np.abs(grads[0]).max() > 0
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5,
                             atol=1e-6 * np.abs(grads[1]).max())
