"""SavedModel export with named signatures, for serving without ebmkit."""

import os

import keras
import numpy as np

from ebmkit import gin_utils
from ebmkit import workdir as workdir_lib
from ebmkit.data import pipeline as data
from ebmkit.models import inference
from ebmkit.serving import signatures
from ebmkit.training import experiment

MAX_SAMPLE_COUNT = signatures.MAX_SAMPLE_COUNT


def export(model, export_dir, detection=None, data_range=None,
           max_sample_steps=10000, max_sample_count=MAX_SAMPLE_COUNT):
  """Writes a trained model as a SavedModel with named signatures.

  The signatures are those the model kind lists (`serving_signatures`), each
  built by `ebmkit.serving.signatures.<name>`. An `EnergyModel` with classes
  gets classify, energy, log_px, ood_score, sample, conditional_density and,
  with `detection`, detect; one with a scalar energy (IGEBM) energy, log_px,
  ood_score and sample; a `GAN` generate and ddls_sample.

  Args:
    model: a built, trained model (`EnergyModel` or `GAN`).
    export_dir: output folder.
    detection: optional dict from `inference.calibrate_detection`; its
      threshold is saved in the model (else `detect` is not exported) and
      the dict in `export_dir/detection.json`.
    data_range: the data range (default: the model's); inputs are checked
      against it by `validation.check_tensor` (InvalidArgument errors), and
      fresh chains start in it.
    max_sample_steps: largest `steps` the sampling signatures accept.
    max_sample_count: largest `num_samples` the sampling signatures accept:
      the chains are held in memory at once (2^26 digits exhausted 8 GB).

  Returns:
    The list of exported signature names.
  """
  if int(max_sample_count) < 1:
    raise ValueError(f"max_sample_count must be >= 1, got {max_sample_count}.")
  if detection is not None and not model.classifies:
    raise ValueError("detection needs a model with classes; this one has "
                     "none: export without it.")
  archive = keras.export.ExportArchive()
  for part in model.export_parts():
    archive.track(part)
  data_range = data_range or model.data_range
  ctx = signatures.Context(
      model=model, archive=archive,
      data_range=None if data_range is None else tuple(data_range),
      detection=detection, max_sample_steps=int(max_sample_steps),
      max_sample_count=int(max_sample_count))
  names = list(model.serving_signatures(detection is not None))
  for name in names:
    fn, input_signature = signatures.BUILDERS[name](ctx)
    archive.add_endpoint(name=name, fn=fn, input_signature=input_signature)
  archive.write_out(export_dir, verbose=False)
  meta = {"signatures": names,
          **model.export_metadata(ctx.data_range, detection),
          "max_sample_count": int(max_sample_count),
          "max_sample_steps": int(max_sample_steps)}
  workdir_lib.write_json(os.path.join(export_dir, workdir_lib.EXPORT_META),
                         meta)
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
  if model.needs_calibration:  # DDLS needs d as a logit (see gan.ddls).
    train = data.load_dataset(split=gin_utils.bound(
        "train.train_split", "train"), training=False)
    model.calibrate_discriminator(np.concatenate(
        [x.numpy() for x, _ in train])[:2000])
  detection = None
  if model.classifies and detection_fpr:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    detection = inference.calibrate_detection(
        model, np.concatenate(xs), np.concatenate(ys), detection_fpr)
    detection["calibration_split"] = split
  export(model, export_dir, detection=detection,
         max_sample_count=max_sample_count)
  return workdir_lib.read_json(os.path.join(export_dir,
                                            workdir_lib.EXPORT_META))
