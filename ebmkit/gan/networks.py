"""Generator/discriminator pairs for `ebmkit.GAN`.

A generator maps latent codes z [batch, latent_dim] to examples; a
discriminator maps examples to one raw score per example [batch, 1] (the
logit d(x) for the non-saturating loss; a hinge or Wasserstein critic's
score otherwise). Three pairs:

  * `dcgan_generator` / `dcgan_discriminator`: a small DCGAN-style pair
    (Radford et al. 2016) for the embedded 8×8 digits;
  * `sngan_generator` / `sngan_discriminator`: the ResNet pair of SN-GAN
    (Miyato et al. 2018, appendix B.4, CIFAR-10 32×32), the GAN DDLS
    improves in Che et al. 2020;
  * `mlp_generator` / `mlp_discriminator`: MLPs for 2-D toy data.

Discriminators take `spectral_norm` (Miyato et al. 2018): every weight layer
wrapped in `keras.layers.SpectralNormalization`.
"""

import gin
import keras


def _sn(layer, spectral_norm):
  return keras.layers.SpectralNormalization(layer) if spectral_norm else layer


# -- 8×8 digits ----------------------------------------------------------------


@gin.configurable
def dcgan_generator(latent_dim=32, width=64, channels=1,
                    name="dcgan_generator", start_size=4, upsamples=1):
  """DCGAN-style generator: dense to start_size², then `upsamples`
  transposed convolutions that each double the size, batch norm and ReLU
  between, tanh output in [−1, 1]. The defaults make 8×8 images (digits);
  start_size=7, upsamples=2 make 28×28 (Fashion-MNIST).

  Args:
    latent_dim: size of z.
    width: filters of the last (full-size) layer; each smaller layer has
      twice as many as the next.
    channels: channels of the images.
    name: the model's name.
    start_size: side of the first feature map.
    upsamples: transposed convolutions (each doubles the side).

  Returns:
    A functional `keras.Model` z [b, latent_dim] ->
    x [b, start_size·2^upsamples, start_size·2^upsamples, channels].
  """
  start_size, upsamples = int(start_size), int(upsamples)
  z = keras.Input((int(latent_dim),), name="z")
  filters = width * 2 ** upsamples
  h = keras.layers.Dense(start_size * start_size * filters, use_bias=False,
                         name="project")(z)
  h = keras.layers.BatchNormalization(name="bn0")(h)
  h = keras.layers.ReLU()(h)
  h = keras.layers.Reshape((start_size, start_size, filters))(h)
  for i in range(1, upsamples + 1):
    h = keras.layers.Conv2DTranspose(width * 2 ** (upsamples - i), 4,
                                     strides=2, padding="same",
                                     use_bias=False, name=f"up{i}")(h)
    h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
    h = keras.layers.ReLU()(h)
  x = keras.layers.Conv2D(channels, 3, padding="same", activation="tanh",
                          name="to_image")(h)
  return keras.Model(z, x, name=name)


@gin.configurable
def dcgan_discriminator(image_shape=(8, 8, 1), width=64, spectral_norm=True,
                        name="dcgan_discriminator"):
  """DCGAN-style discriminator for 8×8 images: two stride-2 convolutions
  with leaky ReLU (0.2), a dense read-out of one score.

  Args:
    image_shape: (H, W, C) of the images.
    width: filters of the first convolution (the second has twice as many).
    spectral_norm: spectral normalisation of every weight layer.
    name: the model's name.

  Returns:
    A functional `keras.Model` x -> score [b, 1].
  """
  x = keras.Input(tuple(image_shape), name="x")
  h = _sn(keras.layers.Conv2D(width, 3, strides=2, padding="same",
                              name="conv1"), spectral_norm)(x)
  h = keras.layers.LeakyReLU(0.2)(h)
  h = _sn(keras.layers.Conv2D(2 * width, 3, strides=2, padding="same",
                              name="conv2"), spectral_norm)(h)
  h = keras.layers.LeakyReLU(0.2)(h)
  h = keras.layers.Flatten()(h)
  score = _sn(keras.layers.Dense(1, name="score"), spectral_norm)(h)
  return keras.Model(x, score, name=name)


# -- SN-GAN ResNets (CIFAR-10) -------------------------------------------------


@keras.saving.register_keras_serializable(package="ebmkit")
class GeneratorBlock(keras.layers.Layer):
  """SN-GAN's generator block: BN-ReLU-upsample-conv3×3-BN-ReLU-conv3×3,
  plus upsample-conv1×1 as the shortcut (×2 resolution)."""

  def __init__(self, filters=256, **kwargs):
    super().__init__(**kwargs)
    self.filters = int(filters)
    self.bn1 = keras.layers.BatchNormalization(name="bn1")
    self.bn2 = keras.layers.BatchNormalization(name="bn2")
    self.up = keras.layers.UpSampling2D(2)
    self.conv1 = keras.layers.Conv2D(self.filters, 3, padding="same",
                                     name="conv1")
    self.conv2 = keras.layers.Conv2D(self.filters, 3, padding="same",
                                     name="conv2")
    self.shortcut = keras.layers.Conv2D(self.filters, 1, name="shortcut")

  def build(self, input_shape):
    up = (input_shape[0], input_shape[1] * 2, input_shape[2] * 2,
          input_shape[3])
    self.bn1.build(input_shape)
    self.conv1.build(up)
    self.bn2.build(up[:3] + (self.filters,))
    self.conv2.build(up[:3] + (self.filters,))
    self.shortcut.build(up)
    self.built = True

  def call(self, x, training=False):
    h = self.up(keras.ops.relu(self.bn1(x, training=training)))
    h = self.conv1(h)
    h = self.conv2(keras.ops.relu(self.bn2(h, training=training)))
    return h + self.shortcut(self.up(x))

  def compute_output_shape(self, input_shape):
    return (input_shape[0], input_shape[1] * 2, input_shape[2] * 2,
            self.filters)

  def get_config(self):
    return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="ebmkit")
class DiscriminatorBlock(keras.layers.Layer):
  """SN-GAN's discriminator block: (ReLU)-conv3×3-ReLU-conv3×3-(avg-pool),
  plus (conv1×1, avg-pool) as the shortcut when the shape changes. The first
  block (`first`) skips the leading ReLU and pools before its shortcut
  convolution, as SN-GAN's "optimized block"."""

  def __init__(self, filters=128, downsample=True, first=False,
               spectral_norm=True, **kwargs):
    super().__init__(**kwargs)
    self.filters = int(filters)
    self.downsample = bool(downsample)
    self.first = bool(first)
    self.spectral_norm = bool(spectral_norm)
    conv = lambda k, n: _sn(keras.layers.Conv2D(self.filters, k,
                                                padding="same", name=n),
                            self.spectral_norm)
    self.conv1 = conv(3, "conv1")
    self.conv2 = conv(3, "conv2")
    self.shortcut = conv(1, "shortcut")
    self.pool = keras.layers.AveragePooling2D(2)

  def build(self, input_shape):
    inner = tuple(input_shape[:3]) + (self.filters,)
    self.conv1.build(input_shape)
    self.conv2.build(inner)
    if self.first and self.downsample:
      pooled = (input_shape[0], input_shape[1] // 2, input_shape[2] // 2,
                input_shape[3])
      self.shortcut.build(pooled)
    else:
      self.shortcut.build(input_shape)
    self.built = True

  def call(self, x, training=False):
    h = x if self.first else keras.ops.relu(x)
    h = self.conv1(h, training=training)
    h = self.conv2(keras.ops.relu(h), training=training)
    if self.downsample:
      h = self.pool(h)
    if self.first and self.downsample:
      s = self.shortcut(self.pool(x), training=training)
    else:
      s = self.shortcut(x, training=training)
      if self.downsample:
        s = self.pool(s)
    return h + s

  def compute_output_shape(self, input_shape):
    if self.downsample:
      return (input_shape[0], input_shape[1] // 2, input_shape[2] // 2,
              self.filters)
    return tuple(input_shape[:3]) + (self.filters,)

  def get_config(self):
    return {**super().get_config(), "filters": self.filters,
            "downsample": self.downsample, "first": self.first,
            "spectral_norm": self.spectral_norm}


@keras.saving.register_keras_serializable(package="ebmkit")
class GlobalSumPooling2D(keras.layers.Layer):
  """Sums over height and width (SN-GAN's read-out pooling)."""

  def call(self, x):
    return keras.ops.sum(x, axis=(1, 2))

  def compute_output_shape(self, input_shape):
    return (input_shape[0], input_shape[-1])


@gin.configurable
def sngan_generator(latent_dim=128, filters=256, channels=3,
                    name="sngan_generator"):
  """SN-GAN's CIFAR-10 ResNet generator: dense to 4×4×filters, three
  up-sampling blocks to 32×32, BN-ReLU-conv3×3 to the image, tanh.

  Returns:
    A functional `keras.Model` z [b, latent_dim] -> x [b, 32, 32, channels].
  """
  z = keras.Input((int(latent_dim),), name="z")
  h = keras.layers.Dense(4 * 4 * filters, name="project")(z)
  h = keras.layers.Reshape((4, 4, filters))(h)
  for i in range(3):
    h = GeneratorBlock(filters, name=f"block{i + 1}")(h)
  h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(h))
  x = keras.layers.Conv2D(channels, 3, padding="same", activation="tanh",
                          name="to_image")(h)
  return keras.Model(z, x, name=name)


@gin.configurable
def sngan_discriminator(image_shape=(32, 32, 3), filters=128,
                        spectral_norm=True, name="sngan_discriminator"):
  """SN-GAN's CIFAR-10 ResNet discriminator: two down-sampling blocks, two
  more at 8×8, ReLU, global sum pooling, a dense read-out of one score.

  Returns:
    A functional `keras.Model` x -> score [b, 1].
  """
  x = keras.Input(tuple(image_shape), name="x")
  h = DiscriminatorBlock(filters, first=True, spectral_norm=spectral_norm,
                         name="block1")(x)
  h = DiscriminatorBlock(filters, spectral_norm=spectral_norm,
                         name="block2")(h)
  for i in (3, 4):
    h = DiscriminatorBlock(filters, downsample=False,
                           spectral_norm=spectral_norm, name=f"block{i}")(h)
  h = keras.layers.ReLU()(h)
  h = GlobalSumPooling2D(name="sum_pool")(h)
  score = _sn(keras.layers.Dense(1, name="score"), spectral_norm)(h)
  return keras.Model(x, score, name=name)


# -- 2-D toy data --------------------------------------------------------------


@gin.configurable
def mlp_generator(latent_dim=2, width=128, depth=3, output_dim=2,
                  name="mlp_generator"):
  """An MLP generator for low-dimensional data: `depth` ReLU layers of
  `width` units and a linear output (unbounded, for data such as the 2-D
  mixture on [−4, 4]²).

  Returns:
    A functional `keras.Model` z [b, latent_dim] -> x [b, output_dim].
  """
  z = keras.Input((int(latent_dim),), name="z")
  h = z
  for i in range(depth):
    h = keras.layers.Dense(width, activation="relu", name=f"dense{i}")(h)
  x = keras.layers.Dense(output_dim, name="out")(h)
  return keras.Model(z, x, name=name)


@gin.configurable
def mlp_discriminator(input_dim=2, width=128, depth=3, spectral_norm=False,
                      name="mlp_discriminator"):
  """An MLP discriminator: `depth` leaky-ReLU (0.2) layers of `width` units
  and a linear read-out of one score.

  Returns:
    A functional `keras.Model` x [b, input_dim] -> score [b, 1].
  """
  x = keras.Input((int(input_dim),), name="x")
  h = x
  for i in range(depth):
    h = _sn(keras.layers.Dense(width, name=f"dense{i}"), spectral_norm)(h)
    h = keras.layers.LeakyReLU(0.2)(h)
  score = _sn(keras.layers.Dense(1, name="score"), spectral_norm)(h)
  return keras.Model(x, score, name=name)
