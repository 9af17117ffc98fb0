"""Presets: a trained model in a folder, loadable in one call, with its card.

keras-hub's convention: a folder holding the model's config, its weights
and metadata as JSON; here also the operative gin config (so that a preset
can be fine-tuned with `python -m ebmkit.run --init_from_preset` and
exported like a workdir) and a card saying what the model is. The folder's
format is `ebmkit.preset_format`'s.

`model.save_to_preset(path)` (or `save_to_preset(model, path)`) writes one
from any built model, `save_workdir_preset` from a workdir's newest
checkpoint with its card filled in; `from_preset(name_or_path)` gives the
model back, its weights, buffer and random states as they were;
`list_presets()` names the shipped ones.
"""

import os
import platform

import keras
import numpy as np

from ebmkit import preset_format
from ebmkit import workdir as workdir_lib
from ebmkit.data import pipeline as data
from ebmkit.preset_format import PresetError
from ebmkit.training import experiment

FILES = preset_format.FILES
SHIPPED = preset_format.SHIPPED


def save_to_preset(model, path, card=None, operative_config=None,
                   buffer_bits=None):
  """Writes a built model as a preset folder: `model.save_to_preset`; see
  `preset_format.write` for the arguments. Returns `path`."""
  return preset_format.write(model, path, card, operative_config, buffer_bits)


def save_workdir_preset(workdir, path, card=None, buffer_bits=None):
  """A preset of a trained workdir's newest checkpoint, its card filled
  from the workdir's results.json (training time, the evaluation's
  metrics) and operative config. Needs gin parsed from the workdir's
  operative_config.gin, as `ebmkit.load_model` does it."""
  model = experiment.load_model(workdir)
  results = workdir_lib.read_json(
      workdir_lib.path(workdir, workdir_lib.RESULTS), {})
  with open(workdir_lib.path(workdir, workdir_lib.OPERATIVE_CONFIG)) as f:
    operative = f.read()
  filled = {"dataset": results.get("dataset"),
            "training_steps": results.get("steps"),
            "training_wall_time_s": results.get("wall_time_s"),
            "test_accuracy": results.get("test_accuracy"),
            "machine": machine(),
            "metrics": _headline(results.get("evaluation", {}))}
  filled.update(card or {})
  return save_to_preset(model, path, filled, operative, buffer_bits)


def machine():
  """This machine in words: the CPU model (Linux's /proc/cpuinfo, else what
  `platform` knows) and the number of cores."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      model = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), model)
  except OSError:
    pass
  return f"{model}, {os.cpu_count()} cores"


def _headline(evaluation):
  """The evaluation's headline numbers, with their sample counts."""
  if not evaluation:
    return {}
  out = {"accuracy": evaluation.get("accuracy"),
         "ece": evaluation.get("calibration", {}).get("ece")}
  ood = evaluation.get("ood", {}).get("auroc")
  if ood:
    out["ood_auroc"] = ood
  samples = evaluation.get("samples", {})
  for part in ("fresh", "buffer"):
    s = samples.get(part, {})
    if s.get("fid") is not None:
      out[f"{part}_is_fid"] = {"inception_score": s.get("inception_score"),
                               "fid": s.get("fid"),
                               "num_samples": s.get("num_samples")}
  return {k: v for k, v in out.items() if v is not None}


def from_preset(name_or_path):
  """The model of a preset (a shipped name or a folder), ready to use: its
  weights, replay buffer and random-generator states as saved, compiled
  with the defaults (`model.evaluate` runs at once; compile it again with
  an optimizer to train it).

  Raises:
    PresetError: a missing or corrupt file, or weights that do not match the
      config (naming the first mismatching variable).
  """
  path = preset_format.resolve(name_or_path)
  meta = preset_format.read_metadata(path)
  config = preset_format.read_json(os.path.join(path, preset_format.CONFIG),
                                   preset_format.CONFIG)
  try:
    model = keras.saving.deserialize_keras_object(config)
  except Exception as e:  # pylint: disable=broad-except
    raise PresetError(f"The preset's config.json does not build a model: "
                      f"{e}") from None
  model.build((None,) + tuple(meta["sample_shape"]))
  preset_format.load_weights(model, path, meta)
  # Compiled with the defaults, so that model.evaluate(...) runs at once;
  # compile it again to train it.
  model.compile()
  return model


def _card_headline(card):
  """A card's headline metrics in one line."""
  m = card.get("metrics") or {}
  parts = []
  if m.get("accuracy") is not None:
    parts.append(f"accuracy {m['accuracy']:.2%}")
  if m.get("ece") is not None:
    parts.append(f"ECE {m['ece']:.1%}")
  for part in ("buffer_is_fid", "gan", "ddls"):
    s = m.get(part) or {}
    if s.get("fid") is not None:
      n = s.get("num_samples") or m.get("num_samples")
      parts.append(f"{part.replace('_is_fid', '')} FID {s['fid']:.1f}"
                   + (f" (n={n})" if n else ""))
  return ", ".join(parts)


def list_presets():
  """The shipped presets: name, family, model, data set, test accuracy,
  headline metrics (one line) and size in bytes."""
  out = []
  for name in preset_format.shipped_names():
    folder = os.path.join(SHIPPED, name)
    card = workdir_lib.read_json(os.path.join(folder, "card.json"), {})
    size = sum(os.path.getsize(os.path.join(folder, f))
               for f in os.listdir(folder))
    out.append({"name": name, "family": card.get("family"),
                "model": card.get("model"), "dataset": card.get("dataset"),
                "test_accuracy": card.get("test_accuracy"),
                "headline": _card_headline(card), "size_bytes": size})
  return out


def sample_statistics(model, num=256, seed=0):
  """What a generating model's card checks: for z drawn by NumPy's
  `default_rng(seed)`, the mean and standard deviation of G(z)'s pixels and
  the discriminator's mean output on them. Deterministic, so a preset
  loaded anywhere gives its card's values back (to float tolerance)."""
  if not model.generates:
    raise PresetError(f"sample_statistics is for a generating model (a GAN),"
                      f" not {type(model).__name__}.")
  z = np.random.default_rng(seed).standard_normal(
      (num, model.latent_dim)).astype(np.float32)
  x = model.generator(z, training=False)
  d = model.discriminator(x, training=False)
  x, d = np.asarray(x, np.float64), np.asarray(d, np.float64)
  return {"num": num, "seed": seed, "mean": float(x.mean()),
          "std": float(x.std()), "discriminator_mean": float(d.mean())}


def card_check(model, card):
  """Measures on `model` what its card promises: (what, measured, on the
  card). A classifier's test-split accuracy on the card's data set (the
  whole split, no noise; TFDS prepares the data the first time), a GAN's
  `sample_statistics`."""
  if model.classifies:
    test = data.load_dataset(name=card["dataset"], split="test",
                             training=False)
    model.compile()
    measured = model.evaluate(test, return_dict=True, verbose=0)["accuracy"]
    return "test_accuracy", float(measured), card.get("test_accuracy")
  promised = card.get("sample_statistics") or {}
  measured = sample_statistics(model, promised.get("num", 256),
                               promised.get("seed", 0))
  return "sample_statistics", measured, promised or None
