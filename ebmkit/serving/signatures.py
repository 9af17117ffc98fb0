"""The SavedModel's signatures, one function each.

Each `<name>(ctx)` returns (fn, input_signature) for the signature `name`;
`export.export` adds those a model kind lists in its `serving_signatures`.
x is float32 [n, H, W, C] in the data range, n >= 0 (an empty batch gives
empty outputs); every input is checked by `validation.check_tensor` or an
in-graph assertion whose message starts "ebmkit:".
"""

import dataclasses

import tensorflow as tf

from ebmkit.evaluation import ood
from ebmkit.models import sampling
from ebmkit.models import validation

MAX_SAMPLE_COUNT = 1024  # Default largest `num_samples` of `sample`.


@dataclasses.dataclass
class Context:
  """What the signatures of one export share.

  Attributes:
    model: the trained model (an `ebmkit.models.kind.ModelKind`).
    archive: the `keras.export.ExportArchive` being written (a signature
      that needs a variable of its own tracks it there).
    data_range: the range inputs are checked against; fresh chains start in
      it.
    detection: `inference.calibrate_detection`'s dict, or None.
    max_sample_steps, max_sample_count: the sampling signatures' limits.
  """
  model: object
  archive: object
  data_range: tuple = None
  detection: dict = None
  max_sample_steps: int = 10000
  max_sample_count: int = MAX_SAMPLE_COUNT

  @property
  def x_spec(self):
    return tf.TensorSpec((None,) + tuple(self.model.sample_shape), tf.float32,
                         name="x")

  def checked(self, x):
    """x validated, padded to >= 1 row, and its true batch size."""
    x = validation.check_tensor(x, tuple(self.model.sample_shape),
                                self.data_range)
    n = tf.shape(x)[0]
    return nonempty(x, n, sum(self.data_range) / 2), n


def nonempty(t, n, fill):
  """`t`, or one placeholder row of `fill` when its batch size `n` is 0.

  An empty batch gives empty outputs, but convolutions fail on zero
  examples (on CPU), so the network runs on one placeholder row, which
  `cut` drops again.
  """
  return tf.cond(n > 0, lambda: t,
                 lambda: tf.fill(tf.concat([[1], tf.shape(t)[1:]], 0),
                                 tf.cast(fill, t.dtype)))


def cut(outputs, n):
  return {k: v if v.shape.rank == 0 else v[:n] for k, v in outputs.items()}


def _scalar(name, dtype=tf.int32):
  return tf.TensorSpec([], dtype, name=name)


def sample_checks(num_samples, steps, max_sample_count, max_sample_steps):
  """The in-graph checks of a sampling signature's num_samples and steps."""
  return [
      tf.debugging.assert_positive(num_samples,
                                   "ebmkit: num_samples must be >= 1."),
      tf.debugging.assert_less_equal(
          num_samples, int(max_sample_count),
          f"ebmkit: num_samples must be <= {int(max_sample_count)}, the "
          f"max_sample_count set at export (all chains are held in memory "
          f"at once): ask for more in several calls, or export with a "
          f"larger --max_sample_count."),
      tf.debugging.assert_non_negative(steps, "ebmkit: steps must be >= 0."),
      tf.debugging.assert_less_equal(
          steps, max_sample_steps,
          f"ebmkit: steps must be <= {max_sample_steps}."),
  ]


def classify(ctx):
  """classify(x) → logits, probabilities, predicted_class."""
  model = ctx.model

  def fn(x):
    x, n = ctx.checked(x)
    logits = model(x)["logits"]
    return cut({"logits": logits, "probabilities": tf.nn.softmax(logits),
                "predicted_class": tf.argmax(logits, -1,
                                             output_type=tf.int32)}, n)
  return fn, [ctx.x_spec]


def energy(ctx):
  """energy(x) → energy E(x), and class_energy E(x, y) [n, K] when the
  model classifies."""
  model = ctx.model

  def fn(x):
    x, n = ctx.checked(x)
    out = model(x)
    result = {"energy": out["energy"]}
    if model.classifies:
      result["class_energy"] = out["class_energy"]
    return cut(result, n)
  return fn, [ctx.x_spec]


def log_px(ctx):
  """log_px(x) → log_px (unnormalised)."""
  model = ctx.model

  def fn(x):
    x, n = ctx.checked(x)
    return cut({"log_px": model(x)["log_px"]}, n)
  return fn, [ctx.x_spec]


def ood_score(ctx):
  """ood_score(x) → log_px, max_prob, neg_grad_norm (higher =
  in-distribution)."""
  model = ctx.model

  def fn(x):
    x, n = ctx.checked(x)
    return cut(ood.score_batch(model, x), n)
  return fn, [ctx.x_spec]


def sample(ctx):
  """sample(num_samples, steps, class_id) → samples: fresh SGLD chains from
  where the model's own fresh chains start, class-conditional if class_id
  >= 0 (−1: unconditional)."""
  model = ctx.model

  def fn(num_samples, steps, class_id):
    checks = sample_checks(num_samples, steps, ctx.max_sample_count,
                           ctx.max_sample_steps)
    if model.classifies:
      checks.append(tf.debugging.assert_less(
          class_id, model.num_classes,
          f"ebmkit: class_id must be -1 or in [0, {model.num_classes})."))
    checks.append(tf.debugging.assert_greater_equal(
        class_id, -1, "ebmkit: class_id must be -1 or a class index."))
    with tf.control_dependencies(checks):
      starts = model.replay_buffer.fresh(num_samples)
    # class_id −1 is a label < 0: E(x) (see `EnergyModel.class_energy`).
    labels = tf.fill([num_samples], class_id) if model.classifies else None
    return {"samples": model.sampler(
        starts, energy_fn=sampling.chain_energy(model, labels), steps=steps)}
  return fn, [_scalar("num_samples"), _scalar("steps"), _scalar("class_id")]


def conditional_density(ctx):
  """conditional_density(x, beta) → probabilities p(y|x) ∝ exp(−β E(x, y)),
  β finite and >= 0."""
  model = ctx.model

  def fn(x, beta):
    beta_check = tf.debugging.Assert(
        tf.logical_and(tf.math.is_finite(beta), beta >= 0),
        ["ebmkit: beta (the inverse temperature β) must be a finite number "
         ">= 0, got", beta])
    x, n = ctx.checked(x)
    with tf.control_dependencies([beta_check]):
      return cut({"probabilities": tf.nn.softmax(
          -beta * model(x)["class_energy"], -1)}, n)
  return fn, [ctx.x_spec, _scalar("beta", tf.float32)]


def detect(ctx):
  """detect(x, y) → compatible (E(x, y) <= threshold), energy, threshold; y
  int32 [n], one class index per input. The threshold is the calibrated
  one, saved in the model."""
  model = ctx.model
  threshold = tf.Variable(float(ctx.detection["threshold"]), trainable=False,
                          name="detection_threshold")
  ctx.archive.track(threshold)

  def fn(x, y):
    x, n = ctx.checked(x)
    y_rank = tf.debugging.assert_equal(
        validation.runtime_rank(y), 1,
        "ebmkit: y must be int32 of shape [n], one class index per input.")
    with tf.control_dependencies([y_rank]):
      checks = [
          tf.debugging.assert_equal(
              tf.shape(y)[0], n,
              "ebmkit: y must have shape [n], one class index per input of "
              "x ([n, ...]); its length differs from x's batch size."),
          tf.debugging.assert_non_negative(
              y, "ebmkit: y must be class indices >= 0."),
          tf.debugging.assert_less(
              y, model.num_classes,
              f"ebmkit: y must be < {model.num_classes}.")]
    with tf.control_dependencies(checks):
      y = nonempty(y, n, 0)
      e = -tf.gather(model(x)["logits"], y, batch_dims=1)
    return cut({"compatible": e <= threshold, "energy": e,
                "threshold": tf.identity(threshold)}, n)
  return fn, [ctx.x_spec, tf.TensorSpec([None], tf.int32, name="y")]


def generate(ctx):
  """generate(z) → samples: G(z) for z float32 [n, latent_dim] (n >= 0),
  checked by `validation.check_tensor` (rank, shape, finite values)."""
  model = ctx.model
  k = model.latent_dim

  def fn(z):
    z = validation.check_tensor(z, (k,), None)
    n = tf.shape(z)[0]
    return cut({"samples": model.generator(nonempty(z, n, 0.0),
                                           training=False)}, n)
  return fn, [tf.TensorSpec([None, k], tf.float32, name="z")]


def ddls_sample(ctx):
  """ddls_sample(num_samples, steps) → samples, z: DDLS (Che et al. 2020):
  z₀ ~ N(0, I), `steps` Langevin steps on E(z) = −log p₀(z) − d(G(z)) with
  the GAN's latent sampler (α, σ) and calibration, then G; with `sample`'s
  checks of num_samples and steps."""
  model = ctx.model

  def fn(num_samples, steps):
    with tf.control_dependencies(sample_checks(
        num_samples, steps, ctx.max_sample_count, ctx.max_sample_steps)):
      z0 = tf.random.normal([num_samples, model.latent_dim])
    z = model.latent_sampler(z0, energy_fn=model.latent_energy, steps=steps)
    return {"samples": model.generator(z, training=False), "z": z}
  return fn, [_scalar("num_samples"), _scalar("steps")]


BUILDERS = {f.__name__: f for f in (
    classify, energy, log_px, ood_score, sample, conditional_density, detect,
    generate, ddls_sample)}
