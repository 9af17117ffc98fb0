"""ebmkit.training.sam: SAM's step against a hand computation on a quadratic,
ASAM's perturbation, the wrapper's delegation, and SAM inside JEM's train
step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ebmkit.training import sam
from ebmkit.training import schedules

from conftest import compiled_digits_model

A = np.array([[3.0, 1.0], [1.0, 2.0]])  # L(w) = ½ wᵀAw, ∇L = Aw.
W0 = np.array([1.0, -2.0])


def quadratic_loss(w):
  a = tf.constant(A, tf.float32)
  return 0.5 * tf.reduce_sum(w * tf.linalg.matvec(a, w))


def sam_step(rho, lr, adaptive=False):
  w = tf.Variable(W0, dtype=tf.float32)
  opt = sam.SAM(keras.optimizers.SGD(lr), rho=rho, adaptive=adaptive)
  with tf.GradientTape() as tape:
    loss = quadratic_loss(w)
  grads = tape.gradient(loss, [w])
  grads = opt.sharpness_aware_gradients(lambda: quadratic_loss(w), grads, [w])
  opt.apply(grads, [w])
  return w.numpy()


def test_sam_step_by_hand_on_a_quadratic():
  rho, lr = 0.5, 0.1
  g = A @ W0                                   # (−1, −3)
  eps = rho * g / np.linalg.norm(g)            # ρ g/‖g‖
  g_sam = A @ (W0 + eps)                       # ∇L(w + ε)
  expected = W0 - lr * g_sam
  np.testing.assert_allclose(sam_step(rho, lr), expected, rtol=1e-5)
  # And not the plain gradient step: SAM makes a difference here.
  assert np.abs(expected - (W0 - lr * g)).max() > 1e-2


def test_adaptive_sam_by_hand():
  rho, lr = 2.0, 0.1
  g = A @ W0
  eps = rho * W0 ** 2 * g / np.linalg.norm(np.abs(W0) * g)  # ASAM
  expected = W0 - lr * (A @ (W0 + eps))
  np.testing.assert_allclose(sam_step(rho, lr, adaptive=True), expected,
                             rtol=1e-5)


def test_the_weights_are_restored_after_the_second_pass():
  w = tf.Variable(W0, dtype=tf.float32)
  opt = sam.SAM(keras.optimizers.SGD(0.1), rho=0.5)
  with tf.GradientTape() as tape:
    loss = quadratic_loss(w)
  opt.sharpness_aware_gradients(lambda: quadratic_loss(w),
                                tape.gradient(loss, [w]), [w])
  np.testing.assert_array_equal(w.numpy(), W0.astype(np.float32))


def test_the_wrapper_hands_rate_schedule_and_steps_to_the_inner_optimizer():
  schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
  assert schedules.schedule_of(sam.SAM(keras.optimizers.SGD(schedule))) is (
      schedule)
  inner = keras.optimizers.SGD(0.1, momentum=0.9)
  opt = sam.SAM(inner, rho=0.05)
  assert schedules.schedule_of(opt) is None
  opt.learning_rate = 0.01
  assert float(inner.learning_rate) == pytest.approx(0.01)
  w = tf.Variable([1.0])
  opt.apply([tf.constant([1.0])], [w])
  assert int(opt.iterations.numpy()) == int(inner.iterations.numpy()) == 1
  assert opt.variables == inner.variables
  clone = sam.SAM.from_config(opt.get_config())
  assert (clone.rho, clone.adaptive) == (0.05, False)
  assert isinstance(clone.inner_optimizer, keras.optimizers.SGD)


@pytest.mark.parametrize("bad, message", [
    ({"rho": 0.0}, "rho must be > 0"), ({"optimizer": None}, "needs the"),
])
def test_bad_sam_settings_are_named(bad, message):
  kwargs = {"optimizer": keras.optimizers.SGD(0.1), "rho": 0.05, **bad}
  with pytest.raises(ValueError, match=message):
    sam.SAM(**kwargs)


def test_jem_trains_a_step_with_sam_and_its_step_differs_from_sgd():
  """One JEM step with SAM(SGD) against one with the same SGD: the train
  step takes SAM's second pass (the weights differ), batch norm's moving
  statistics are as after one pass, and the loss is finite."""
  def one_step(optimizer):
    keras.utils.set_random_seed(0)
    model = compiled_digits_model(["EnergyModel.seed = 0"])
    model.compile(optimizer=optimizer)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    keras.utils.set_random_seed(0)
    logs = model.train_on_batch(x, y, return_dict=True)
    return model, logs

  plain, logs = one_step(keras.optimizers.SGD(0.1))
  sharp, sharp_logs = one_step(sam.SAM(keras.optimizers.SGD(0.1), rho=0.5))
  assert np.isfinite(sharp_logs["loss"])
  assert logs["loss"] == pytest.approx(sharp_logs["loss"], rel=1e-5)
  diff = max(float(np.abs(a - b).max()) for a, b in zip(
      plain.backbone.trainable_variables, sharp.backbone.trainable_variables))
  assert diff > 1e-6


def test_a_gan_refuses_sam_with_what_to_do():
  from ebmkit.gan import model as gan  # pylint: disable=g-import-not-at-top
  from ebmkit.gan import networks  # pylint: disable=g-import-not-at-top
  model = gan.GAN(networks.dcgan_generator(latent_dim=4, width=8),
                  networks.dcgan_discriminator(width=8))
  with pytest.raises(ValueError, match="does not train with SAM"):
    model.compile(optimizer=sam.SAM(keras.optimizers.SGD(0.1)))
