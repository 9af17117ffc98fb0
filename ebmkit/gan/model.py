"""GAN: a generator and a discriminator trained adversarially, read as an
energy-based model on the latent space and sampled with DDLS."""

import keras
import numpy as np
import tensorflow as tf

from ebmkit import images
from ebmkit.gan import ddls
from ebmkit.models import kind
from ebmkit.models import metrics as model_metrics
from ebmkit.models import sampling
from ebmkit.models import validation

LOSSES = ("non_saturating", "hinge", "wasserstein")


def discriminator_loss(loss, d_real, d_fake):
  """The discriminator's loss on raw scores of real and generated batches.

  non_saturating (Goodfellow et al. 2014): −log σ(d(x)) − log(1 − σ(d(G(z))));
  hinge (Lim & Ye 2017; Miyato et al. 2018): max(0, 1 − D(x)) +
  max(0, 1 + D(G(z))); wasserstein (Arjovsky et al. 2017): D(G(z)) − D(x),
  the critic's Lipschitz constraint being the spectral normalisation of its
  layers (Miyato et al. 2018), not weight clipping. All are batch means.
  """
  if loss == "hinge":
    return (tf.reduce_mean(tf.nn.relu(1.0 - d_real))
            + tf.reduce_mean(tf.nn.relu(1.0 + d_fake)))
  if loss == "wasserstein":
    return tf.reduce_mean(d_fake) - tf.reduce_mean(d_real)
  return (tf.reduce_mean(tf.nn.softplus(-d_real))
          + tf.reduce_mean(tf.nn.softplus(d_fake)))


def generator_loss(loss, d_fake):
  """The generator's loss: −log σ(d(G(z))) (non-saturating) or −D(G(z))
  (hinge, wasserstein), batch means."""
  if loss in ("hinge", "wasserstein"):
    return -tf.reduce_mean(d_fake)
  return tf.reduce_mean(tf.nn.softplus(-d_fake))


@keras.saving.register_keras_serializable(package="ebmkit")
class GAN(keras.Model, kind.ModelKind):
  """A GAN whose generator and discriminator define a latent EBM (DDLS).

  Each training step (one batch of real data) updates the discriminator
  once; every `n_critic`-th step also updates the generator once, on a
  fresh batch of z ~ p₀ = N(0, I). The model's optimizer (`compile`)
  updates the discriminator, so its `iterations` count training steps; the
  generator has its own optimizer (by default a copy of the same class and
  settings), whose learning rate follows the discriminator's times
  `generator_learning_rate_ratio` (so a schedule, or a divergence
  recovery's cut, applies to both).

  Read as an EBM (Che et al. 2020), the energy of an example is −d(x): the
  metrics `energy_data` and `energy_samples` are the mean −D(x) of the real
  batch and of G(z), and `l2_weight` > 0 adds w·mean(D(x)² + D(G(z))²) to
  the discriminator's loss (the L2 energy penalty of the pixel-space EBMs;
  a divergence recovery raises it).

  Calling the model maps latent codes to examples: `gan(z)` = G(z).
  `ddls_sample` draws with DDLS: Langevin chains on the latent energy
  (`latent_energy`, `latent_sampler`), then G.

  Args:
    generator: G, a functional Keras model z [b, k] -> x.
    discriminator: D, a Keras model x -> raw score [b, 1].
    loss: "non_saturating" (D is a logit), "hinge" or "wasserstein" (D is
      a critic; give it spectral normalisation as its Lipschitz bound).
    n_critic: discriminator steps per generator step.
    generator_learning_rate_ratio: the generator's learning rate over the
      discriminator's.
    l2_weight: w, weight of the penalty on the discriminator's scores.
    latent_sampler: the `LangevinSampler` of DDLS (default: the paper's
      ε = 0.01, i.e. α = ε/2 = 0.005, σ = √ε = 0.1, and 100 steps).
    calibrate: whether DDLS calibrates D into a logit first
      (`calibrate_discriminator`); "auto": for the hinge and wasserstein
      losses (every loss but the non-saturating one).
    data_range: the data's (low, high) for input checks
      (`validation.check_tensor`), or None for unbounded data (2-D points).
    seed: int seed of the model's own draws of z.
  """

  def __init__(self, generator=None, discriminator=None,
               loss="non_saturating", n_critic=1,
               generator_learning_rate_ratio=1.0, l2_weight=0.0,
               latent_sampler=None, calibrate="auto",
               data_range=(-1.0, 1.0), seed=None, **kwargs):
    super().__init__(**kwargs)
    if generator is None or discriminator is None:
      raise ValueError("GAN needs a `generator` (z -> x) and a "
                       "`discriminator` (x -> score).")
    if loss not in LOSSES:
      raise ValueError(f"GAN.loss must be one of {LOSSES}, got {loss!r}.")
    if int(n_critic) < 1:
      raise ValueError(f"GAN.n_critic must be >= 1, got {n_critic}.")
    if not generator_learning_rate_ratio > 0:
      raise ValueError(f"GAN.generator_learning_rate_ratio must be > 0, got "
                       f"{generator_learning_rate_ratio}.")
    if l2_weight < 0:
      raise ValueError(f"GAN.l2_weight must be >= 0, got {l2_weight}.")
    if calibrate not in ("auto", True, False):
      raise ValueError(f"GAN.calibrate must be 'auto', True or False, got "
                       f"{calibrate!r}.")
    shape = getattr(generator, "input_shape", None)
    if not shape or shape[-1] is None:
      raise ValueError("GAN.generator must be a Keras model with a known "
                       "input shape [batch, latent_dim] (a functional "
                       "model, as ebmkit.gan_networks builds).")
    self.generator = generator
    self.discriminator = discriminator
    self.latent_dim = int(shape[-1])
    self.loss_name = loss
    self.n_critic = int(n_critic)
    self.generator_learning_rate_ratio = float(generator_learning_rate_ratio)
    self.l2_weight = float(l2_weight)
    self.latent_sampler = (latent_sampler if latent_sampler is not None
                           else sampling.LangevinSampler(
                               steps=100, step_size=0.005, noise=0.1))
    self.calibrate = calibrate
    self.data_range = None if data_range is None else tuple(
        float(v) for v in data_range)
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)
    self.latent_energy = ddls.LatentEnergy(self.latent_dim, generator,
                                           discriminator)
    self.sample_shape = None
    self._trackers = {n: keras.metrics.Mean(n) for n in (
        "loss", "d_loss", "g_loss", "energy_data", "energy_samples")}
    model_metrics.set_untracked(self, "generator_optimizer", None)
    model_metrics.set_untracked(self, "_samplers", {})

  # -- structure -------------------------------------------------------------

  classifies = False  # No classes: the evaluation's classifier parts skip.
  draws_samples = False  # No replay buffer.
  generates = True  # G(z), and DDLS on the latent energy.

  def serving_signatures(self, detection=False):
    del detection  # No classes to detect.
    return ("generate", "ddls_sample")

  def export_parts(self):
    # The parts, not the GAN: Keras' default signature of a model calls it
    # on its build shape (the data's), but the GAN is called on z.
    return [self.generator, self.discriminator, self.latent_energy,
            self.latent_sampler]

  def export_metadata(self, data_range=None, detection=None):
    del data_range, detection  # Its inputs are latent codes; no classes.
    return {"kind": "gan", "latent_dim": self.latent_dim,
            "output_shape": list(self.sample_shape)}

  @property
  def needs_calibration(self):
    """Whether DDLS calibrates D first (see `calibrate`)."""
    if self.calibrate == "auto":
      return self.loss_name != "non_saturating"
    return bool(self.calibrate)

  @property
  def other_optimizers(self):
    """Optimizers besides `optimizer` whose state a checkpoint keeps."""
    return [self.generator_optimizer] if self.generator_optimizer else []

  @property
  def metrics(self):
    return list(self._trackers.values())

  def build(self, input_shape):
    """Builds for data of shape `input_shape` ([batch, *example_shape])."""
    self.sample_shape = tuple(int(d) for d in input_shape[1:])
    out = self.generator.compute_output_shape((None, self.latent_dim))
    if tuple(out[1:]) != self.sample_shape:
      raise ValueError(
          f"The generator makes examples of shape {tuple(out[1:])} but the "
          f"data's are {self.sample_shape}: set the networks' shapes to the "
          f"data set's.")
    if not self.discriminator.built:
      self.discriminator.build((None,) + self.sample_shape)
    self.latent_sampler.build((None, self.latent_dim))
    self.built = True
    self._build_generator_optimizer()

  def call(self, z, training=False):
    """G(z)."""
    return self.generator(z, training=training)

  def compute_output_spec(self, z, training=False):
    return self.generator.compute_output_spec(z)

  # -- Keras API -------------------------------------------------------------

  def compile(self, optimizer="adam", generator_optimizer=None, **kwargs):
    """Configures training: `optimizer` updates the discriminator,
    `generator_optimizer` (default: a copy of `optimizer`'s class and
    settings) the generator. A `loss` is refused: the GAN's is `loss`."""
    if kwargs.get("loss") is not None:
      raise ValueError("GAN computes its own losses (GAN.loss = "
                       "'non_saturating', 'hinge' or 'wasserstein'); leave "
                       "compile(loss=...) out.")
    for opt in (optimizer, generator_optimizer):
      if getattr(opt, "sharpness_aware", False):
        raise ValueError(
            "A GAN does not train with SAM (ebmkit.SAM): its train step "
            "updates two networks with two optimizers and has no second "
            "pass. Use a plain Keras optimizer (train.optimizer).")
    super().compile(optimizer=optimizer, **kwargs)
    if generator_optimizer is None:
      config = self.optimizer.get_config()
      config["learning_rate"] = float(keras.ops.convert_to_numpy(
          self.optimizer.learning_rate)) * self.generator_learning_rate_ratio
      config["name"] = "generator_" + config.get("name", "optimizer")
      generator_optimizer = type(self.optimizer).from_config(config)
    else:
      generator_optimizer = keras.optimizers.get(generator_optimizer)
    model_metrics.set_untracked(self, "generator_optimizer",
                                generator_optimizer)
    self._build_generator_optimizer()

  def _build_generator_optimizer(self):
    # Built ahead: the generator's update runs inside a tf.cond, where no
    # variable may be created.
    opt = self.generator_optimizer
    if self.built and opt is not None and not opt.built:
      opt.build(self.generator.trainable_variables)

  # -- the latent EBM ----------------------------------------------------------

  def prior_sample(self, n):
    """z ~ p₀ = N(0, I), [n, latent_dim], from the model's seed generator."""
    return keras.random.normal((n, self.latent_dim),
                               seed=self.seed_generator)

  def score(self, x, training=False):
    """D(x), the discriminator's raw score, float32 [batch]."""
    return tf.reshape(tf.cast(self.discriminator(x, training=training),
                              tf.float32), [-1])

  def latent_chain(self, z0, steps=None, jit_compile="auto"):
    """DDLS in latent space: Langevin chains on E(z) from `z0`.

    Returns:
      The chains' final z, float32 [n, latent_dim].
    """
    if not self.built:
      raise ValueError("Build the GAN (train it, or call build) before "
                       "sampling.")
    steps = self.latent_sampler.steps if steps is None else int(steps)
    xla = sampling.resolve_jit_compile(jit_compile)
    if xla not in self._samplers:
      self._samplers[xla] = sampling.compiled_sampler(
          self.latent_sampler, lambda z: self.latent_energy(z), xla)
    return self._samplers[xla](tf.convert_to_tensor(z0, tf.float32),
                               tf.constant(steps, tf.int32))

  def ddls_sample(self, num_samples=64, steps=None, z0=None,
                  jit_compile="auto"):
    """Samples with DDLS: z from p₀ (or `z0`), Langevin on E(z), then G.

    Args:
      num_samples: chains (ignored when `z0` is given).
      steps: Langevin steps (default: the latent sampler's).
      z0: chain starts [n, latent_dim] (e.g. the same z as a G(z) batch).
      jit_compile: compile the chain with XLA ("auto": on a GPU/TPU).

    Returns:
      G(z_T), float32 [n, *sample_shape].
    """
    if z0 is None:
      z0 = self.prior_sample(int(num_samples))
    z = self.latent_chain(z0, steps, jit_compile)
    return self.generator(z, training=False)

  def calibrate_discriminator(self, x_real, seed=0):
    """Fits D's calibration d = a·D + b on real data vs as many G(z)
    (`ddls.fit_calibration`) and stores it in the latent energy.

    Returns:
      The fit's dict (scale, shift, log losses) plus "examples".
    """
    x_real = np.asarray(x_real, np.float32)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((len(x_real), self.latent_dim)).astype(np.float32)
    real, fake = [], []
    for i in range(0, len(x_real), 500):
      real.append(self.score(x_real[i:i + 500]).numpy())
      fake.append(self.score(self.generator(z[i:i + 500])).numpy())
    fit = ddls.fit_calibration(np.concatenate(real), np.concatenate(fake))
    self.latent_energy.set_calibration(fit["scale"], fit["shift"])
    fit["examples"] = int(len(x_real))
    return fit

  # -- training --------------------------------------------------------------

  def _check_batch(self, x):
    return validation.check_tensor(x, self.sample_shape, self.data_range)

  def _penalty(self, d_real, d_fake):
    return self.l2_weight * (tf.reduce_mean(tf.square(d_real))
                             + tf.reduce_mean(tf.square(d_fake)))

  def _generator_step(self, n):
    opt = self.generator_optimizer
    opt.learning_rate = (self.optimizer.learning_rate
                         * self.generator_learning_rate_ratio)
    z = self.prior_sample(n)
    variables = self.generator.trainable_variables
    with tf.GradientTape() as tape:
      g_loss = generator_loss(self.loss_name, self.score(
          self.generator(z, training=True), training=True))
    opt.apply(tape.gradient(g_loss, variables), variables)
    return g_loss

  def train_step(self, data):
    """One discriminator step; a generator step every `n_critic` steps."""
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    if not self.built:
      self.build(tuple(x.shape))
    x = self._check_batch(x)
    n = tf.shape(x)[0]
    fake = self.generator(self.prior_sample(n), training=True)
    variables = self.discriminator.trainable_variables
    with tf.GradientTape() as tape:
      d_real = self.score(x, training=True)
      d_fake = self.score(tf.stop_gradient(fake), training=True)
      d_loss = discriminator_loss(self.loss_name, d_real, d_fake)
      total = d_loss + self._penalty(d_real, d_fake) if self.l2_weight else (
          d_loss)
    self.optimizer.apply(tape.gradient(total, variables), variables)
    if self.n_critic == 1:
      g_loss, stepped = self._generator_step(n), 1.0
    else:
      due = tf.equal(self.optimizer.iterations % self.n_critic, 0)
      g_loss, stepped = tf.cond(
          due, lambda: (self._generator_step(n), tf.constant(1.0)),
          lambda: (tf.constant(0.0), tf.constant(0.0)))
    return self._update_metrics(total, d_loss, g_loss, d_real, d_fake,
                                stepped)

  def test_step(self, data):
    """The training's metrics on a batch of real data and as many G(z),
    without updates (g_loss: the generator's loss on those G(z))."""
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    if not self.built:
      self.build(tuple(x.shape))
    x = self._check_batch(x)
    d_real = self.score(x)
    d_fake = self.score(self.generator(self.prior_sample(tf.shape(x)[0])))
    d_loss = discriminator_loss(self.loss_name, d_real, d_fake)
    total = d_loss + self._penalty(d_real, d_fake) if self.l2_weight else (
        d_loss)
    return self._update_metrics(total, d_loss,
                                generator_loss(self.loss_name, d_fake),
                                d_real, d_fake, 1.0)

  def _update_metrics(self, loss, d_loss, g_loss, d_real, d_fake, stepped):
    t = self._trackers
    t["loss"].update_state(loss)
    t["d_loss"].update_state(d_loss)
    t["g_loss"].update_state(g_loss, sample_weight=stepped)
    t["energy_data"].update_state(-tf.reduce_mean(d_real))
    t["energy_samples"].update_state(-tf.reduce_mean(d_fake))
    return {m.name: m.result() for m in self.metrics}

  # -- pictures ----------------------------------------------------------------

  def sample_grid(self, num_images=64, seed=0):
    """A picture of G(z) for fixed z (the same every epoch): a grid of
    images, or for 2-D data a 2-D histogram of 2,000 points on the data's
    square. uint8 [H, W, C]."""
    rng = np.random.RandomState(seed)
    if len(self.sample_shape) == 3:
      z = rng.standard_normal((num_images, self.latent_dim)).astype(
          np.float32)
      x = self.generator(z, training=False).numpy()
      return images.make_grid(x, scale=images.default_scale(x.shape[1]))
    z = rng.standard_normal((2000, self.latent_dim)).astype(np.float32)
    return histogram_picture(self.generator(z, training=False).numpy())

  # -- serialization ---------------------------------------------------------

  def get_config(self):
    ser = keras.saving.serialize_keras_object
    return {
        **super().get_config(),
        "generator": ser(self.generator),
        "discriminator": ser(self.discriminator),
        "latent_sampler": ser(self.latent_sampler),
        "loss": self.loss_name,
        "n_critic": self.n_critic,
        "generator_learning_rate_ratio": self.generator_learning_rate_ratio,
        "l2_weight": self.l2_weight,
        "calibrate": self.calibrate,
        "data_range": self.data_range,
        "seed": self.seed,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in ("generator", "discriminator", "latent_sampler"):
      config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)


def histogram_picture(points, extent=5.0, size=128):
  """2-D points as a grey picture: a log-scaled histogram on
  [−extent, extent]², dark where points are dense. uint8 [size, size, 1]."""
  counts, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=size,
                                range=[[-extent, extent], [-extent, extent]])
  shade = np.log1p(counts[::-1])  # y up.
  shade = shade / max(shade.max(), 1e-12)
  return np.round(255 * (1.0 - shade))[..., None].astype(np.uint8)
