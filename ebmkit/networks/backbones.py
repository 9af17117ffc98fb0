"""Backbone networks: classifiers whose logits become energies."""

import functools

import gin
import keras
import tensorflow as tf


@gin.configurable
def small_convnet(num_classes=10, widths=(32, 64, 128), activation="swish",
                  dropout=0.0, name="small_convnet", strides=None,
                  pool="average", dense_units=()):
  """A small convolutional classifier for small images (8×8 digits, 28×28
  Fashion-MNIST).

  3×3 convolutions (by default the first keeps the resolution and each later
  one halves it), then global average pooling or a flattening of the last
  feature map, optional hidden dense layers, and a dense layer of logits.
  Smooth activations (swish) give SGLD smoother input gradients than ReLU.

  Args:
    num_classes: K, the number of logits (1 for a scalar-energy backbone).
    widths: filters of each 3×3 convolution.
    activation: activation after each convolution and hidden dense layer
      (e.g. "swish", "leaky_relu", "relu").
    dropout: dropout rate before the read-out (0 disables it).
    name: the model's name.
    strides: stride of each convolution (default: 1, then 2 for the rest).
    pool: "average" (global average pooling) or "flatten" (keeps where
      features are: the read-out sees the whole last feature map).
    dense_units: widths of hidden dense layers before the logits.

  Returns:
    An unbuilt `keras.Sequential`; it is built on first use.
  """
  if num_classes < 1:
    raise ValueError(f"small_convnet.num_classes must be >= 1, got "
                     f"{num_classes}.")
  if not widths:
    raise ValueError("small_convnet.widths needs at least one layer width.")
  strides = tuple(strides) if strides is not None else (
      (1,) + (2,) * (len(widths) - 1))
  if len(strides) != len(widths):
    raise ValueError(f"small_convnet.strides {strides} needs one stride per "
                     f"width {tuple(widths)}.")
  if pool not in ("average", "flatten"):
    raise ValueError(f"small_convnet.pool must be 'average' or 'flatten', "
                     f"got {pool!r}.")
  layers = []
  for i, (width, stride) in enumerate(zip(widths, strides)):
    layers.append(keras.layers.Conv2D(
        int(width), 3, strides=int(stride), padding="same", name=f"conv{i}"))
    layers.append(keras.layers.Activation(activation, name=f"act{i}"))
  layers.append(keras.layers.GlobalAveragePooling2D(name="pool")
                if pool == "average" else keras.layers.Flatten(name="flatten"))
  for i, units in enumerate(dense_units):
    layers.append(keras.layers.Dense(int(units), name=f"dense{i}"))
    layers.append(keras.layers.Activation(activation, name=f"dense_act{i}"))
  if dropout:
    layers.append(keras.layers.Dropout(dropout, name="dropout"))
  layers.append(keras.layers.Dense(num_classes, name="logits"))
  return keras.Sequential(layers, name=name)


def _norm_layer(norm, name):
  """The reference's get_norm: None (identity) or "batch"."""
  if norm is None:
    return None
  if norm == "batch":
    # PyTorch BatchNorm2d(momentum=0.9) keeps 0.1 of the old running average;
    # Keras' momentum is that kept fraction.
    return keras.layers.BatchNormalization(momentum=0.1, epsilon=1e-5,
                                           name=name)
  raise ValueError(f"norm must be None or 'batch', got {norm!r}.")


def _conv3x3(filters, stride, name):
  """A 3×3 convolution padded 1 on every side, as PyTorch's padding=1.

  For stride 1 that is Keras' "same" padding. A strided "same" convolution
  pads the bottom/right only, so there the padding is a layer of its own
  ("pad"). (A separate pad on every convolution made an SGLD step of
  WRN-10-2 about 8% slower; explicit padding inside `tf.nn.conv2d` leaves
  oneDNN's fast path and was 1.8× slower: BENCHMARKS.md, "Padding".)
  The one-layer Sequential keeps the variables' paths `<name>/conv/...`.
  """
  if stride == 1:
    return keras.Sequential([keras.layers.Conv2D(filters, 3, padding="same",
                                                 name="conv")], name=name)
  return keras.Sequential([
      keras.layers.ZeroPadding2D(1, name="pad"),
      keras.layers.Conv2D(filters, 3, strides=stride, padding="valid",
                          name="conv"),
  ], name=name)


@functools.lru_cache(maxsize=None)  # One function per slope, built once.
def _leaky_relu_from_output(negative_slope):
  """LeakyReLU whose gradient reads its output instead of its input.

  With a slope >= 0 the output is positive exactly where the input is, so
  `LeakyReluGrad(dy, features=output)` is TensorFlow's own gradient, bit for
  bit. Its point: the pre-activation then feeds the activation alone, so
  Grappler's remapper fuses convolution, bias and activation into one
  oneDNN call, and the pre-activation need not be kept for the backward
  pass (BENCHMARKS.md, "Where an SGLD step's time goes").
  """
  @tf.custom_gradient
  def leaky_relu(x):
    y = tf.nn.leaky_relu(x, negative_slope)

    def grad(dy):
      return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y,
                                      alpha=negative_slope)
    return y, grad
  return leaky_relu


@keras.saving.register_keras_serializable(package="ebmkit")
class OutputGradLeakyReLU(keras.layers.LeakyReLU):
  """`keras.layers.LeakyReLU` with the same values and gradients, whose
  gradient is computed from its output (`_leaky_relu_from_output`)."""

  def call(self, inputs):
    return _leaky_relu_from_output(self.negative_slope)(inputs)


@keras.saving.register_keras_serializable(package="ebmkit")
class WideBasicBlock(keras.layers.Layer):
  """Pre-activation wide residual block of the JEM reference network.

  out = conv2(act(norm2(dropout(conv1(act(norm1(x))))))) + shortcut(x), the
  stride on conv2, a 1×1 strided convolution as shortcut when the shape
  changes.

  Args:
    in_filters: channels of the block's input.
    filters: channels of its output.
    stride: stride of the second convolution (and of the shortcut).
    dropout: dropout rate between the convolutions.
    norm: None or "batch".
    leak: negative slope of the LeakyReLU.
  """

  def __init__(self, in_filters, filters, stride=1, dropout=0.0, norm=None,
               leak=0.2, **kwargs):
    super().__init__(**kwargs)
    self.in_filters, self.filters, self.stride = in_filters, filters, stride
    self.dropout_rate, self.norm, self.leak = dropout, norm, leak
    self.bn1 = _norm_layer(norm, "bn1")
    self.conv1 = _conv3x3(filters, 1, "conv1")
    self.dropout = keras.layers.Dropout(dropout) if dropout else None
    self.bn2 = _norm_layer(norm, "bn2")
    self.conv2 = _conv3x3(filters, stride, "conv2")
    self.shortcut = None
    if stride != 1 or in_filters != filters:
      self.shortcut = keras.layers.Conv2D(filters, 1, strides=stride,
                                          name="shortcut")
    self.act = OutputGradLeakyReLU(negative_slope=leak)

  def build(self, input_shape):
    shape = tuple(input_shape)
    if self.bn1:
      self.bn1.build(shape)
    self.conv1.build(shape)
    mid = self.conv1.compute_output_shape(shape)
    if self.bn2:
      self.bn2.build(mid)
    self.conv2.build(mid)
    if self.shortcut:
      self.shortcut.build(shape)

  def call(self, x, training=False):
    out = self.bn1(x, training=training) if self.bn1 else x
    out = self.conv1(self.act(out))
    if self.dropout:
      out = self.dropout(out, training=training)
    out = self.bn2(out, training=training) if self.bn2 else out
    out = self.conv2(self.act(out))
    return out + (self.shortcut(x) if self.shortcut else x)

  def compute_output_shape(self, input_shape):
    return self.conv2.compute_output_shape(
        self.conv1.compute_output_shape(input_shape))

  def get_config(self):
    return {**super().get_config(), "in_filters": self.in_filters,
            "filters": self.filters, "stride": self.stride,
            "dropout": self.dropout_rate, "norm": self.norm, "leak": self.leak}


@keras.saving.register_keras_serializable(package="ebmkit")
class WideResNet(keras.layers.Layer):
  """WRN-depth-width as in the JEM reference implementation.

  conv1 (16 filters) → 3 stages of (depth − 4) / 6 `WideBasicBlock`s with
  16·width, 32·width, 64·width filters (strides 1, 2, 2) → norm → LeakyReLU
  → global average pool (the reference's 8×8 average pool on 32×32 inputs)
  → `class_output` dense layer (the logits f(x)). No normalisation by default.
  Layer names follow the reference's parameter names (layer1_0 for
  f.layer1.0), which `ebmkit.convert` relies on.

  Args:
    depth: total depth; (depth − 4) must be divisible by 6 (28 → 4 blocks
      per stage).
    width: widening factor k.
    num_classes: logits; None or 0 returns the pooled features instead.
    norm: None or "batch".
    dropout: dropout rate inside each block.
    leak: negative slope of the LeakyReLU (0.2 in JEM).
    init: "keras" (Keras' defaults: Glorot-uniform kernels, zero biases) or
      "torch" (PyTorch's defaults for nn.Conv2d and nn.Linear, which the JEM
      reference trains from: kernels and biases uniform in ±1/√fan_in; see
      `torch_default_init`).
  """

  def __init__(self, depth=28, width=10, num_classes=10, norm=None,
               dropout=0.0, leak=0.2, init="keras", **kwargs):
    super().__init__(**kwargs)
    if depth < 10 or (depth - 4) % 6:
      raise ValueError(f"WideResNet.depth must be 6n + 4 (10, 16, 22, 28, ...)"
                       f", got {depth}.")
    if width < 1:
      raise ValueError(f"WideResNet.width must be >= 1, got {width}.")
    _norm_layer(norm, "check")  # Validates `norm` early.
    if init not in INITS:
      raise ValueError(f"WideResNet.init must be one of {INITS}, got "
                       f"{init!r}.")
    self.init = init
    self.depth, self.width, self.num_classes = depth, width, num_classes
    self.norm, self.dropout, self.leak = norm, dropout, leak
    blocks_per_stage = (depth - 4) // 6
    stages = [16 * width, 32 * width, 64 * width]
    self.conv1 = _conv3x3(16, 1, "conv1")
    self.blocks = []
    in_filters = 16
    for s, (filters, stride) in enumerate(zip(stages, (1, 2, 2))):
      for i in range(blocks_per_stage):
        self.blocks.append(WideBasicBlock(
            in_filters, filters, stride if i == 0 else 1, dropout, norm, leak,
            name=f"layer{s + 1}_{i}"))
        in_filters = filters
    self.bn1 = _norm_layer(norm, "bn1")
    self.act = OutputGradLeakyReLU(negative_slope=leak)
    self.pool = keras.layers.GlobalAveragePooling2D()
    self.class_output = (keras.layers.Dense(num_classes, name="class_output")
                         if num_classes else None)
    self.feature_dim = stages[-1]

  def build(self, input_shape):
    shape = tuple(input_shape)
    self.conv1.build(shape)
    shape = self.conv1.compute_output_shape(shape)
    for block in self.blocks:
      block.build(shape)
      shape = block.compute_output_shape(shape)
    if self.bn1:
      self.bn1.build(shape)
    if self.class_output:
      self.class_output.build((shape[0], self.feature_dim))
    if self.init == "torch":
      torch_default_init(self)

  def call(self, x, training=False):
    out = self.conv1(x)
    for block in self.blocks:
      out = block(out, training=training)
    if self.bn1:
      out = self.bn1(out, training=training)
    out = self.pool(self.act(out))
    return self.class_output(out) if self.class_output else out

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_classes or self.feature_dim)

  def get_config(self):
    return {**super().get_config(), "depth": self.depth, "width": self.width,
            "num_classes": self.num_classes, "norm": self.norm,
            "dropout": self.dropout, "leak": self.leak, "init": self.init}


INITS = ("keras", "torch")


def torch_default_init(layer):
  """Re-draws every convolution's and dense layer's kernel and bias in
  `layer` (built) as PyTorch initialises nn.Conv2d and nn.Linear: kernel
  kaiming_uniform(a=√5), i.e. U(−1/√fan_in, 1/√fan_in), and bias
  U(−1/√fan_in, 1/√fan_in), fan_in = the kernel's inputs per output
  (kh·kw·in_channels, or in_features). Batch norm keeps scale 1 and offset
  0, as both libraries start it. Random numbers come from Keras' global
  seed (`keras.utils.set_random_seed`)."""
  kernels = {v.path.rsplit("/", 1)[0]: v for v in layer.weights
             if v.path.endswith("/kernel")}
  biases = {v.path.rsplit("/", 1)[0]: v for v in layer.weights
            if v.path.endswith("/bias")}
  for owner, kernel in kernels.items():
    shape = tuple(kernel.shape)
    fan_in = 1
    for d in shape[:-1]:
      fan_in *= int(d)
    bound = fan_in ** -0.5
    kernel.assign(keras.random.uniform(shape, -bound, bound,
                                       dtype=kernel.dtype))
    if owner in biases:
      bias = biases[owner]
      bias.assign(keras.random.uniform(tuple(bias.shape), -bound, bound,
                                       dtype=bias.dtype))


@gin.configurable
def wide_resnet(depth=28, width=10, num_classes=10, norm=None, dropout=0.0,
                leak=0.2, init="keras"):
  """The JEM paper's backbone, WRN-depth-width (see `WideResNet`)."""
  return WideResNet(depth, width, num_classes, norm, dropout, leak, init,
                    name=f"wrn_{depth}_{width}")


def _maybe_spectral(layer, spectral_norm):
  return keras.layers.SpectralNormalization(layer) if spectral_norm else layer


@keras.saving.register_keras_serializable(package="ebmkit")
class IGEBMBlock(keras.layers.Layer):
  """Residual block of the IGEBM network: act(conv2(act(conv1(x))) + skip(x)),
  then a 2×2 average pool when `downsample`. Spectral norm on every conv."""

  def __init__(self, in_filters, filters, downsample=False, spectral_norm=True,
               activation="swish", **kwargs):
    super().__init__(**kwargs)
    self.in_filters, self.filters, self.downsample = in_filters, filters, \
        downsample
    self.spectral_norm, self.activation = spectral_norm, activation
    conv = lambda f, k, name: _maybe_spectral(
        keras.layers.Conv2D(f, k, padding="same", name=name), spectral_norm)
    self.conv1 = conv(filters, 3, "conv1")
    self.conv2 = conv(filters, 3, "conv2")
    self.skip = conv(filters, 1, "skip") if in_filters != filters else None
    self.act = keras.layers.Activation(activation)
    self.pool = keras.layers.AveragePooling2D(2) if downsample else None

  def build(self, input_shape):
    shape = tuple(input_shape)
    self.conv1.build(shape)
    self.conv2.build(shape[:-1] + (self.filters,))
    if self.skip:
      self.skip.build(shape)

  def call(self, x, training=False):
    h = self.act(self.conv1(x, training=training))
    h = self.conv2(h, training=training)
    skip = self.skip(x, training=training) if self.skip else x
    out = self.act(h + skip)
    return self.pool(out) if self.pool else out

  def compute_output_shape(self, input_shape):
    b, h, w, _ = input_shape
    if self.downsample:
      h, w = (None if h is None else h // 2), (None if w is None else w // 2)
    return (b, h, w, self.filters)

  def get_config(self):
    return {**super().get_config(), "in_filters": self.in_filters,
            "filters": self.filters, "downsample": self.downsample,
            "spectral_norm": self.spectral_norm,
            "activation": self.activation}


@keras.saving.register_keras_serializable(package="ebmkit")
class IGEBMResNet(keras.layers.Layer):
  """The IGEBM network (Du & Mordatch 2019) up to its pooled features.

  A 3×3 convolution, then residual `IGEBMBlock`s with spectral normalisation
  and swish, then a global sum pool. Pair it with `ScalarEnergyHead`
  (spectral_norm=True) for one scalar energy per example.

  Args:
    filters: filters of the first convolution and of each block.
    downsample: per block, whether it ends with a 2×2 average pool.
    spectral_norm: wrap every convolution in `keras.layers.SpectralNormalization`.
    activation: activation (swish in IGEBM).
  """

  def __init__(self, filters=(128, 128, 256, 256, 256, 256),
               downsample=(True, False, True, False, True, False),
               spectral_norm=True, activation="swish", **kwargs):
    super().__init__(**kwargs)
    filters, downsample = tuple(filters), tuple(downsample)
    if len(filters) != len(downsample) or not filters:
      raise ValueError(f"IGEBMResNet needs one downsample flag per block, got "
                       f"{len(filters)} filters and {len(downsample)} flags.")
    self.filters, self.downsample = filters, downsample
    self.spectral_norm, self.activation = spectral_norm, activation
    self.conv0 = _maybe_spectral(
        keras.layers.Conv2D(filters[0], 3, padding="same", name="conv0"),
        spectral_norm)
    self.blocks = []
    in_filters = filters[0]
    for i, (f, down) in enumerate(zip(filters, downsample)):
      self.blocks.append(IGEBMBlock(in_filters, f, down, spectral_norm,
                                    activation, name=f"block{i}"))
      in_filters = f

  def build(self, input_shape):
    shape = tuple(input_shape)
    self.conv0.build(shape)
    shape = shape[:-1] + (self.filters[0],)
    for block in self.blocks:
      block.build(shape)
      shape = block.compute_output_shape(shape)

  def call(self, x, training=False):
    out = self.conv0(x, training=training)
    for block in self.blocks:
      out = block(out, training=training)
    return keras.ops.sum(out, axis=(1, 2))  # Global sum pool.

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.filters[-1])

  def get_config(self):
    return {**super().get_config(), "filters": self.filters,
            "downsample": self.downsample,
            "spectral_norm": self.spectral_norm, "activation": self.activation}


@gin.configurable
def igebm_resnet(filters=(128, 128, 256, 256, 256, 256),
                 downsample=(True, False, True, False, True, False),
                 spectral_norm=True, activation="swish"):
  """The IGEBM network (see `IGEBMResNet`)."""
  return IGEBMResNet(filters, downsample, spectral_norm, activation,
                     name="igebm_resnet")
