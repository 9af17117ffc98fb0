"""The GAN networks (`ebmkit.gan_networks`): shapes, and the round trip of
every one through get_config → from_config, `.keras` and SavedModel."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ebmkit.gan import networks as gan_networks

# Small versions of every shipped network: (factory, kwargs, input shape).
NETWORKS = {
    "mlp_generator": (gan_networks.mlp_generator,
                      {"latent_dim": 3, "width": 8, "depth": 2}, (3,)),
    "mlp_discriminator": (gan_networks.mlp_discriminator,
                          {"width": 8, "depth": 2, "spectral_norm": True},
                          (2,)),
    "dcgan_generator": (gan_networks.dcgan_generator,
                        {"latent_dim": 4, "width": 4}, (4,)),
    "dcgan_discriminator": (gan_networks.dcgan_discriminator, {"width": 4},
                            (8, 8, 1)),
    "sngan_generator": (gan_networks.sngan_generator,
                        {"latent_dim": 4, "filters": 4}, (4,)),
    "sngan_discriminator": (gan_networks.sngan_discriminator,
                            {"filters": 4}, (32, 32, 3)),
}
OUTPUT_SHAPES = {"mlp_generator": (2,), "mlp_discriminator": (1,),
                 "dcgan_generator": (8, 8, 1), "dcgan_discriminator": (1,),
                 "sngan_generator": (32, 32, 3), "sngan_discriminator": (1,)}


def _perturb_batch_norm(model, rng):
  """Moves every BatchNormalization's moving statistics off their initial
  (0, 1), so a round trip that lost them would show."""
  for layer in model._flatten_layers():  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
      layer.moving_variance.assign(rng.uniform(
          0.5, 2.0, size=layer.moving_variance.shape))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_round_trips_through_config_and_keras_file(name, tmp_path):
  factory, kwargs, shape = NETWORKS[name]
  keras.utils.set_random_seed(0)
  model = factory(**kwargs)
  rng = np.random.default_rng(0)
  _perturb_batch_norm(model, rng)
  x = rng.standard_normal((2,) + shape).astype(np.float32)
  expected = model(x, training=False).numpy()
  assert expected.shape == (2,) + OUTPUT_SHAPES[name]
  # The config rebuilds the same architecture (fresh weights).
  rebuilt = keras.Model.from_config(model.get_config())
  assert [w.shape for w in rebuilt.weights] == [w.shape for w in
                                                model.weights]
  rebuilt.set_weights(model.get_weights())
  np.testing.assert_allclose(rebuilt(x, training=False), expected,
                             rtol=1e-5, atol=1e-5)
  # .keras: config and weights (spectral norm's u, batch norm's statistics).
  path = os.path.join(tmp_path, f"{name}.keras")
  model.save(path)
  loaded = keras.saving.load_model(path)
  np.testing.assert_allclose(loaded(x, training=False), expected,
                             rtol=1e-5, atol=1e-5)


def test_sngan_blocks_round_trip_and_keep_their_settings(tmp_path):
  block = gan_networks.DiscriminatorBlock(4, downsample=False, first=False,
                                          spectral_norm=False, name="b")
  again = gan_networks.DiscriminatorBlock.from_config(block.get_config())
  assert (again.filters, again.downsample, again.first,
          again.spectral_norm) == (4, False, False, False)
  assert not isinstance(again.conv1, keras.layers.SpectralNormalization)
  up = gan_networks.GeneratorBlock.from_config(
      gan_networks.GeneratorBlock(6).get_config())
  assert up.filters == 6
  assert up.compute_output_shape((None, 4, 4, 3)) == (None, 8, 8, 6)
  # The SavedModel of the discriminator (custom blocks, sum pooling) runs
  # as the model does.
  keras.utils.set_random_seed(1)
  model = gan_networks.sngan_discriminator(filters=4)
  x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(
      np.float32)
  path = str(tmp_path / "saved_model")
  model.export(path, verbose=False)
  loaded = tf.saved_model.load(path)
  np.testing.assert_allclose(loaded.serve(tf.constant(x)), model(x),
                             rtol=1e-5, atol=1e-5)
