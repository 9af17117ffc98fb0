"""Presets: a trained model in a folder, loadable in one call, with its card.

keras-hub's convention: a folder holding the model's config, its weights
and metadata as JSON; here also the operative gin config (so that a preset
can be fine-tuned with `python -m ebmkit.run` and exported like a workdir)
and a card saying what the model is:

    <preset>/
      metadata.json         format, versions, model kind, input shape
      config.json           the Keras config of the model (EnergyModel, GAN)
      model.weights.npz     every variable of the model, in order, keyed
                            "<index>/<path>": weights, replay buffer,
                            random-generator states
      operative_config.gin  the config that trained it (when known)
      card.json, card.md    data set, command, seed, time, machine, metrics

`save_to_preset(model, path)` writes one from any built model (or from a
workdir's newest checkpoint: `save_workdir_preset`); `from_preset(path)`
gives the model back, its weights, buffer and random states as they were.
"""

import json
import os
import platform

import keras
import numpy as np

from ebmkit import workdir as workdir_lib
from ebmkit.training import experiment

FORMAT = "ebmkit-preset"
FORMAT_VERSION = 1
FILES = ("metadata.json", "config.json", "model.weights.npz")
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "preset_files")


class PresetError(ValueError):
  """A preset folder that cannot be loaded; the message says why."""


def _version():
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  try:
    return importlib.metadata.version("ebmkit-keras")
  except importlib.metadata.PackageNotFoundError:
    return None


def save_to_preset(model, path, card=None, operative_config=None):
  """Writes a built model as a preset folder.

  Args:
    model: a built `EnergyModel` or `GAN` (`ebmkit.models.kind.ModelKind`).
    path: the folder (created; an existing preset there is replaced).
    card: what the card says (data set, command, metrics, ...), a dict.
    operative_config: the gin config that trained it (text).

  Returns:
    `path`.
  """
  if not model.built:
    raise PresetError("save_to_preset needs a built model (call it on a "
                      "batch, or load it with ebmkit.load_model).")
  os.makedirs(path, exist_ok=True)
  variables = model.variables
  np.savez(os.path.join(path, "model.weights.npz"),
           **{_key(i, v): np.asarray(v.numpy())
              for i, v in enumerate(variables)})
  workdir_lib.write_json(os.path.join(path, "config.json"),
                         keras.saving.serialize_keras_object(model))
  workdir_lib.write_json(os.path.join(path, "metadata.json"), {
      "format": FORMAT, "format_version": FORMAT_VERSION,
      "ebmkit_version": _version(), "keras_version": keras.__version__,
      "class_name": type(model).__name__,
      "sample_shape": list(model.sample_shape),
      "classifies": bool(model.classifies),
      "num_variables": len(variables)})
  if operative_config:
    workdir_lib.write_text(os.path.join(path, "operative_config.gin"),
                           operative_config)
  card = dict(card or {})
  card.setdefault("name", os.path.basename(os.path.normpath(path)))
  card.setdefault("model", type(model).__name__)
  workdir_lib.write_json(os.path.join(path, "card.json"), card)
  workdir_lib.write_text(os.path.join(path, "card.md"), card_markdown(card))
  return path


def _key(index, variable):
  """A variable's key in model.weights.npz. By position: a model rebuilt
  from its config names a wrapped layer's variables differently (spectral
  normalisation), but keeps their order."""
  return f"{index:04d}/{variable.path}"


def save_workdir_preset(workdir, path, card=None):
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
            "machine": platform.processor() or platform.machine(),
            "metrics": _headline(results.get("evaluation", {}))}
  filled.update(card or {})
  return save_to_preset(model, path, filled, operative)


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


def card_markdown(card):
  lines = [f"# {card.get('name', 'preset')}", ""]
  for key, value in card.items():
    if key == "name":
      continue
    text = json.dumps(value) if isinstance(value, (dict, list)) else value
    lines.append(f"- **{key}**: {text}")
  return "\n".join(lines) + "\n"


def _resolve(name_or_path):
  if os.path.isdir(name_or_path):
    return name_or_path
  shipped = os.path.join(SHIPPED, name_or_path)
  if os.path.sep not in name_or_path and os.path.isdir(shipped):
    return shipped
  names = [p["name"] for p in list_presets()]
  raise PresetError(
      f"No preset {name_or_path!r}: not a folder, and not a shipped preset "
      f"({', '.join(names) or 'none shipped'}).")


def _read_json(path, what):
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise PresetError(f"The preset has no {what} ({path}): it is incomplete; "
                      f"write it again with save_to_preset.") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise PresetError(f"The preset's {what} ({path}) is corrupt: {e}.") from None


def from_preset(name_or_path):
  """The model of a preset (a shipped name or a folder), ready to use: its
  weights, replay buffer and random-generator states as saved.

  Raises:
    PresetError: a missing or corrupt file, or weights that do not match the
      config (naming the first mismatching variable).
  """
  path = _resolve(name_or_path)
  meta = _read_json(os.path.join(path, "metadata.json"), "metadata.json")
  if meta.get("format") != FORMAT:
    raise PresetError(f"{path} is not an ebmkit preset (metadata.json has "
                      f"format {meta.get('format')!r}).")
  if meta.get("format_version", 0) > FORMAT_VERSION:
    raise PresetError(f"{path} was written by a newer ebmkit (preset format "
                      f"{meta['format_version']}); upgrade ebmkit-keras.")
  config = _read_json(os.path.join(path, "config.json"), "config.json")
  try:
    model = keras.saving.deserialize_keras_object(config)
  except Exception as e:  # pylint: disable=broad-except
    raise PresetError(f"The preset's config.json does not build a model: "
                      f"{e}") from None
  model.build((None,) + tuple(meta["sample_shape"]))
  weights_path = os.path.join(path, "model.weights.npz")
  try:
    with np.load(weights_path) as npz:  # Read once; npz reads lazily.
      stored = {name: npz[name] for name in npz.files}
    names = sorted(stored)
  except FileNotFoundError:
    raise PresetError(f"The preset has no model.weights.npz ({weights_path})"
                      f": it is incomplete.") from None
  except Exception as e:  # pylint: disable=broad-except
    raise PresetError(f"The preset's model.weights.npz is corrupt: {e}.") from (
        None)
  variables = model.variables
  if len(names) != len(variables):
    raise PresetError(
        f"The preset's weights do not match its config: model.weights.npz "
        f"holds {len(names)} variables, the model has {len(variables)} (the "
        f"first: {variables[0].path}).")
  for i, (name, variable) in enumerate(zip(names, variables)):
    value = stored[name]
    same_kind = name.rsplit("/", 1)[-1] == variable.path.rsplit("/", 1)[-1]
    if not same_kind or tuple(value.shape) != tuple(variable.shape):
      raise PresetError(
          f"The preset's weights do not match its config: variable {i}, "
          f"{variable.path} {tuple(variable.shape)} in the model, is {name} "
          f"{tuple(value.shape)} in model.weights.npz.")
  for name, variable in zip(names, variables):
    variable.assign(stored[name].astype(variable.dtype))
  return model


def list_presets():
  """The shipped presets: name, model, data set and headline metrics."""
  out = []
  if not os.path.isdir(SHIPPED):
    return out
  for name in sorted(os.listdir(SHIPPED)):
    folder = os.path.join(SHIPPED, name)
    if not os.path.isfile(os.path.join(folder, "metadata.json")):
      continue
    card = workdir_lib.read_json(os.path.join(folder, "card.json"), {})
    size = sum(os.path.getsize(os.path.join(folder, f))
               for f in os.listdir(folder))
    out.append({"name": name, "model": card.get("model"),
                "dataset": card.get("dataset"),
                "test_accuracy": card.get("test_accuracy"),
                "size_bytes": size})
  return out

