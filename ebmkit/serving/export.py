"""SavedModel export with named signatures, for serving without ebmkit."""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from ebmkit import gin_utils
from ebmkit import workdir as workdir_lib
from ebmkit.data import pipeline as data
from ebmkit.evaluation import ood
from ebmkit.gan import model as gan
from ebmkit.models import inference
from ebmkit.models import sampling
from ebmkit.models import validation
from ebmkit.training import experiment

MAX_SAMPLE_COUNT = 1024  # Default largest `num_samples` of `sample`.


def _nonempty(t, n, fill):
  """`t`, or one placeholder row of `fill` when its batch size `n` is 0.

  An empty batch gives empty outputs, but convolutions fail on zero
  examples (on CPU), so the network runs on one placeholder row, which
  `_cut` drops again.
  """
  return tf.cond(n > 0, lambda: t,
                 lambda: tf.fill(tf.concat([[1], tf.shape(t)[1:]], 0),
                                 tf.cast(fill, t.dtype)))


def _cut(outputs, n):
  return {k: v if v.shape.rank == 0 else v[:n] for k, v in outputs.items()}


def _sample_checks(num_samples, steps, max_sample_count, max_sample_steps):
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


GAN_SIGNATURES = ("generate", "ddls_sample")


def export_gan(model, export_dir, max_sample_steps=10000,
               max_sample_count=MAX_SAMPLE_COUNT):
  """Writes a trained `ebmkit.GAN` as a SavedModel with named signatures.

  Signatures:
    generate(z) → samples: G(z) for z float32 [n, latent_dim] (n >= 0),
      checked by `validation.check_tensor` (rank, shape, finite values);
    ddls_sample(num_samples, steps) → samples, z: DDLS (Che et al. 2020):
      z₀ ~ N(0, I), `steps` Langevin steps on E(z) = −log p₀(z) − d(G(z))
      with the GAN's latent sampler (α, σ) and calibration, then G; with
      `sample`'s checks of num_samples and steps.

  Returns:
    The list of exported signature names.
  """
  if int(max_sample_count) < 1:
    raise ValueError(f"max_sample_count must be >= 1, got {max_sample_count}.")
  k = model.latent_dim
  archive = keras.export.ExportArchive()
  # The parts, not the GAN: Keras' default signature of a model calls it on
  # its build shape (the data's), but the GAN is called on z.
  for part in (model.generator, model.discriminator, model.latent_energy,
               model.latent_sampler):
    archive.track(part)

  def generate(z):
    z = validation.check_tensor(z, (k,), None)
    n = tf.shape(z)[0]
    return _cut({"samples": model.generator(_nonempty(z, n, 0.0),
                                            training=False)}, n)

  def ddls_sample(num_samples, steps):
    with tf.control_dependencies(_sample_checks(
        num_samples, steps, max_sample_count, max_sample_steps)):
      z0 = tf.random.normal([num_samples, k])
    z = model.latent_sampler(z0, energy_fn=model.latent_energy, steps=steps)
    return {"samples": model.generator(z, training=False), "z": z}

  scalar = lambda name: tf.TensorSpec([], tf.int32, name=name)
  archive.add_endpoint(name="generate", fn=generate, input_signature=[
      tf.TensorSpec([None, k], tf.float32, name="z")])
  archive.add_endpoint(name="ddls_sample", fn=ddls_sample, input_signature=[
      scalar("num_samples"), scalar("steps")])
  archive.write_out(export_dir, verbose=False)
  meta = {"kind": "gan", "signatures": list(GAN_SIGNATURES),
          "latent_dim": k, "output_shape": list(model.sample_shape),
          "max_sample_count": int(max_sample_count),
          "max_sample_steps": int(max_sample_steps)}
  workdir_lib.write_json(os.path.join(export_dir, workdir_lib.EXPORT_META),
                         meta)
  return list(GAN_SIGNATURES)


def export(model, export_dir, detection=None, data_range=None,
           max_sample_steps=10000, max_sample_count=MAX_SAMPLE_COUNT):
  """Writes `model` as a SavedModel with named signatures.

  Signatures (inputs → outputs; x is float32 [n, H, W, C] in the data range,
  n >= 0: an empty batch gives empty outputs):
    classify(x) → logits, probabilities, predicted_class;
    energy(x) → energy E(x) and class_energy E(x, y) [n, K];
    log_px(x) → log_px (unnormalised);
    ood_score(x) → log_px, max_prob, neg_grad_norm (higher = in-distribution);
    sample(num_samples, steps, class_id) → samples: fresh SGLD chains from
      U(low, high), class-conditional if class_id >= 0 (−1: unconditional);
    conditional_density(x, beta) → probabilities p(y|x) ∝ exp(−β E(x, y)),
      β finite and >= 0;
    detect(x, y) → compatible (E(x, y) <= threshold), energy, threshold; y
      int32 [n], one class index per input.
  Unconditional (scalar-energy) models get energy, log_px, ood_score and
  sample only.

  Args:
    model: a built, trained `EnergyModel`.
    export_dir: output folder.
    detection: optional dict from `inference.calibrate_detection`; its
      threshold is saved in the model (else `detect` is not exported) and
      the dict in `export_dir/detection.json`.
    data_range: the data range (default: the model's,
      `replay_buffer.data_range`); inputs are checked against it by
      `validation.check_tensor` (InvalidArgument errors), and fresh chains
      start uniform in it.
    max_sample_steps: largest `steps` the sample signature accepts.
    max_sample_count: largest `num_samples` the sample signature accepts:
      the chains are held in memory at once (2^26 digits exhausted 8 GB).

  Returns:
    The list of exported signature names.
  """
  shape = (None,) + tuple(model.replay_buffer.sample_shape)
  x_spec = tf.TensorSpec(shape, tf.float32, name="x")
  archive = keras.export.ExportArchive()
  archive.track(model)
  classifies = model.classifies
  data_range = tuple(data_range or model.replay_buffer.data_range)
  if int(max_sample_count) < 1:
    raise ValueError(f"max_sample_count must be >= 1, got {max_sample_count}.")
  # The signature's TensorSpec alone does not stop other image sizes: the
  # convolutional backbones accept them and would answer silently.
  check = lambda x: validation.check_tensor(x, shape[1:], data_range)
  filler = sum(data_range) / 2
  names = []

  nonempty, cut = _nonempty, _cut

  def checked(x):
    """x validated, padded to >= 1 row, and its true batch size."""
    x = check(x)
    n = tf.shape(x)[0]
    return nonempty(x, n, filler), n

  def add(name, fn, signature):
    archive.add_endpoint(name=name, fn=fn, input_signature=signature)
    names.append(name)

  if classifies:
    def classify(x):
      x, n = checked(x)
      logits = model(x)["logits"]
      return cut({"logits": logits, "probabilities": tf.nn.softmax(logits),
                  "predicted_class": tf.argmax(logits, -1,
                                               output_type=tf.int32)}, n)
    add("classify", classify, [x_spec])

  def energy(x):
    x, n = checked(x)
    out = model(x)
    result = {"energy": out["energy"]}
    if classifies:
      result["class_energy"] = out["class_energy"]
    return cut(result, n)
  add("energy", energy, [x_spec])

  def log_px(x):
    x, n = checked(x)
    return cut({"log_px": model(x)["log_px"]}, n)
  add("log_px", log_px, [x_spec])

  def ood_score(x):
    x, n = checked(x)
    return cut(ood.score_batch(model, x), n)
  add("ood_score", ood_score, [x_spec])

  def sample(num_samples, steps, class_id):
    checks = _sample_checks(num_samples, steps, max_sample_count,
                            max_sample_steps)
    if classifies:
      checks.append(tf.debugging.assert_less(
          class_id, model.num_classes,
          f"ebmkit: class_id must be -1 or in [0, {model.num_classes})."))
    checks.append(tf.debugging.assert_greater_equal(
        class_id, -1, "ebmkit: class_id must be -1 or a class index."))
    with tf.control_dependencies(checks):
      # Fresh chains start where the model's own fresh chains do (U(low,
      # high), or the informative initialisation).
      starts = model.replay_buffer.fresh(num_samples)
    # class_id −1 is a label < 0: E(x) (see `EnergyModel.class_energy`).
    labels = tf.fill([num_samples], class_id) if classifies else None
    return {"samples": model.sampler(
        starts, energy_fn=sampling.chain_energy(model, labels), steps=steps)}
  scalar = lambda name: tf.TensorSpec([], tf.int32, name=name)
  add("sample", sample, [scalar("num_samples"), scalar("steps"),
                         scalar("class_id")])

  if classifies:
    def conditional_density(x, beta):
      beta_check = tf.debugging.Assert(
          tf.logical_and(tf.math.is_finite(beta), beta >= 0),
          ["ebmkit: beta (the inverse temperature β) must be a finite number "
           ">= 0, got", beta])
      x, n = checked(x)
      with tf.control_dependencies([beta_check]):
        return cut({"probabilities": tf.nn.softmax(
            -beta * model(x)["class_energy"], -1)}, n)
    add("conditional_density", conditional_density,
        [x_spec, tf.TensorSpec([], tf.float32, name="beta")])
    if detection is not None:
      threshold = tf.Variable(float(detection["threshold"]), trainable=False,
                              name="detection_threshold")
      archive.track(threshold)

      def detect(x, y):
        x, n = checked(x)
        y_rank = tf.debugging.assert_equal(
            validation.runtime_rank(y), 1,
            "ebmkit: y must be int32 of shape [n], one class index per "
            "input.")
        with tf.control_dependencies([y_rank]):
          checks = [
              tf.debugging.assert_equal(
                  tf.shape(y)[0], n,
                  "ebmkit: y must have shape [n], one class index per input "
                  "of x ([n, ...]); its length differs from x's batch size."),
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
      add("detect", detect, [x_spec, tf.TensorSpec([None], tf.int32,
                                                    name="y")])
  archive.write_out(export_dir, verbose=False)
  meta = {"signatures": names, "input_shape": list(shape[1:]),
          "data_range": list(data_range), "detection": detection,
          "max_sample_count": int(max_sample_count),
          "max_sample_steps": int(max_sample_steps)}
  with open(os.path.join(export_dir, workdir_lib.EXPORT_META), "w") as f:
    json.dump(meta, f, indent=2)
  if detection is not None:
    workdir_lib.write_json(os.path.join(export_dir, workdir_lib.DETECTION),
                           detection)
  return names


def export_workdir(workdir, export_dir, detection_fpr=0.05,
                   calibration_split=None, max_sample_count=MAX_SAMPLE_COUNT):
  """Restores a trained workdir's newest checkpoint and exports it.

  For classifiers, the detection threshold is calibrated first on held-out
  data (`calibration_split`, default: the bound train.validation_split, else
  the test split) for `detection_fpr`, saved in the SavedModel (`detect`
  signature) and written to `export_dir/detection.json`. Nothing is written
  into the workdir (unless `export_dir` is inside it), so a read-only
  workdir can be exported.

  Returns:
    The export's metadata (signatures, input shape, detection).
  """
  split = calibration_split or gin_utils.bound(
      "train.validation_split", None) or gin_utils.bound(
          "train.test_split", "test")
  ds, info = data.load_dataset(split=split, training=False, with_info=True)
  model = experiment.build_model(info)
  experiment.restore(model, workdir)
  if isinstance(model, gan.GAN):
    if model.needs_calibration:  # DDLS needs d as a logit (see ebmkit.ddls).
      train = data.load_dataset(split=gin_utils.bound(
          "train.train_split", "train"), training=False)
      model.calibrate_discriminator(np.concatenate(
          [x.numpy() for x, _ in train])[:2000])
    export_gan(model, export_dir, max_sample_count=max_sample_count)
    return workdir_lib.read_json(os.path.join(export_dir,
                                              workdir_lib.EXPORT_META))
  detection = None
  if model.classifies and detection_fpr:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    detection = inference.calibrate_detection(
        model, np.concatenate(xs), np.concatenate(ys), detection_fpr)
    detection["calibration_split"] = split
  export(model, export_dir, detection=detection,
         max_sample_count=max_sample_count)
  with open(os.path.join(export_dir, workdir_lib.EXPORT_META)) as f:
    return json.load(f)
