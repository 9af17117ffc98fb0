"""The preset folder's format: writing a built model into one, and reading
its weights back into a model of the same config.

Low in the layering (numpy, Keras and the workdir's JSON helpers only), so
that every model kind can offer `model.save_to_preset(path)` and training
can start from a preset (`train.init_from`). `ebmkit.presets` builds on it:
`from_preset`, the shipped presets, a workdir's preset with its card.

    <preset>/
      metadata.json         format, versions, model kind, input shape, and
                            which arrays are stored quantised
      config.json           the Keras config of the model (EnergyModel, GAN)
      model.weights.npz     every variable of the model, in order, keyed
                            "<index>/<path>": weights, replay buffer,
                            random-generator states (compressed)
      operative_config.gin  the config that trained it (when known)
      card.json, card.md    data set, command, seed, time, machine, metrics
"""

import importlib.metadata
import json
import os

import keras
import numpy as np

from ebmkit import workdir as workdir_lib

FORMAT = "ebmkit-preset"
FORMAT_VERSION = 1
METADATA = "metadata.json"
CONFIG = "config.json"
WEIGHTS = "model.weights.npz"
OPERATIVE_CONFIG = "operative_config.gin"
CARD = "card.json"
FILES = (METADATA, CONFIG, WEIGHTS)
# The presets shipped inside the package.
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "preset_files")


class PresetError(ValueError):
  """A preset folder that cannot be written or loaded; the message says
  why."""


def _version():
  try:
    return importlib.metadata.version("ebmkit-keras")
  except importlib.metadata.PackageNotFoundError:
    return None


def key(index, variable):
  """A variable's key in model.weights.npz. By position: a model rebuilt
  from its config names a wrapped layer's variables differently (spectral
  normalisation), but keeps their order."""
  return f"{index:04d}/{variable.path}"


def quantize(values, bits=8):
  """`values` as unsigned integers over their own min–max range: (codes,
  {"low", "high", "bits"}). The step is (high − low) / (2**bits − 1)."""
  if bits != 8:
    raise PresetError(f"buffer_bits must be 8 or None (exact), got {bits!r}.")
  if not np.isfinite(values).all():
    raise PresetError("The replay buffer holds NaN or Inf values, which 8 "
                      "bits cannot store: save it exact (buffer_bits=None), "
                      "or re-initialise those chains first.")
  low, high = float(values.min()), float(values.max())
  span = (high - low) or 1.0
  codes = np.rint((values - low) / span * 255).astype(np.uint8)
  return codes, {"low": low, "high": high, "bits": bits}


def dequantize(codes, how):
  if how.get("dtype") == "float16":
    return codes.astype(np.float32)
  span = (how["high"] - how["low"]) or 1.0
  return (how["low"] + codes.astype(np.float64) * span / 255).astype(
      np.float32)


def write(model, path, card=None, operative_config=None, buffer_bits=None):
  """Writes a built model as a preset folder (what `model.save_to_preset`
  does).

  Args:
    model: a built `EnergyModel` or `GAN` (`ebmkit.models.kind.ModelKind`).
    path: the folder (created; an existing preset there is replaced).
    card: what the card says (data set, command, metrics, ...), a dict.
    operative_config: the gin config that trained it (text).
    buffer_bits: None keeps the replay buffer exact (float32); 8 stores
      its samples as 8-bit codes over their min–max range, a quarter of the
      size (for data in [−1, 1] a step of 2/255 ≈ 0.008, under JEM's SGLD
      noise), and its start distribution (an informative start's class
      means and Cholesky factors) at float16, half the size. The weights
      and random states are always exact.

  Returns:
    `path`.
  """
  if not model.built:
    raise PresetError("save_to_preset needs a built model (call it on a "
                      "batch, or load it with ebmkit.load_model).")
  buffer = model.replay_buffer
  compact = buffer is not None and buffer_bits
  os.makedirs(path, exist_ok=True)
  arrays, quantized = {}, {}
  variables = model.variables
  for i, v in enumerate(variables):
    value = np.asarray(v.numpy())
    if compact and v is buffer.samples:
      value, quantized[key(i, v)] = quantize(value, buffer_bits)
    elif compact and value.dtype == np.float32 and any(
        v is w for w in buffer.variables):
      value, quantized[key(i, v)] = value.astype(np.float16), {
          "dtype": "float16"}
    arrays[key(i, v)] = value
  np.savez_compressed(os.path.join(path, WEIGHTS), **arrays)
  workdir_lib.write_json(os.path.join(path, CONFIG),
                         keras.saving.serialize_keras_object(model))
  workdir_lib.write_json(os.path.join(path, METADATA), {
      "format": FORMAT, "format_version": FORMAT_VERSION,
      "ebmkit_version": _version(), "keras_version": keras.__version__,
      "class_name": type(model).__name__,
      "sample_shape": list(model.sample_shape),
      "classifies": bool(model.classifies),
      "num_variables": len(variables), "quantized": quantized})
  if operative_config:
    workdir_lib.write_text(os.path.join(path, OPERATIVE_CONFIG),
                           operative_config)
  card = dict(card or {})
  card.setdefault("name", os.path.basename(os.path.normpath(path)))
  card.setdefault("model", type(model).__name__)
  if quantized:
    card.setdefault("replay_buffer_stored", f"samples as {buffer_bits}-bit "
                    "codes over their min-max range, start distribution at "
                    "float16 (weights exact)")
  write_card(path, card)
  return path


def write_card(path, card):
  """Writes a preset folder's card: card.json, and card.md for people."""
  workdir_lib.write_json(os.path.join(path, CARD), card)
  workdir_lib.write_text(os.path.join(path, "card.md"), card_markdown(card))


def card_markdown(card):
  lines = [f"# {card.get('name', 'preset')}", ""]
  for name, value in card.items():
    if name == "name":
      continue
    text = json.dumps(value) if isinstance(value, (dict, list)) else value
    lines.append(f"- **{name}**: {text}")
  return "\n".join(lines) + "\n"


def resolve(name_or_path):
  """The folder of a preset: a folder, or the name of a shipped one."""
  if os.path.isdir(name_or_path):
    return name_or_path
  shipped = os.path.join(SHIPPED, name_or_path)
  if os.path.sep not in name_or_path and os.path.isdir(shipped):
    return shipped
  names = shipped_names()
  raise PresetError(
      f"No preset {name_or_path!r}: not a folder, and not a shipped preset "
      f"({', '.join(names) or 'none shipped'}).")


def shipped_names():
  if not os.path.isdir(SHIPPED):
    return []
  return [n for n in sorted(os.listdir(SHIPPED))
          if os.path.isfile(os.path.join(SHIPPED, n, METADATA))]


def read_json(path, what):
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise PresetError(f"The preset has no {what} ({path}): it is incomplete; "
                      f"write it again with save_to_preset.") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise PresetError(f"The preset's {what} ({path}) is corrupt: {e}.") from None


def read_metadata(path):
  """A preset folder's checked metadata.json."""
  meta = read_json(os.path.join(path, METADATA), METADATA)
  if meta.get("format") != FORMAT:
    raise PresetError(f"{path} is not an ebmkit preset (metadata.json has "
                      f"format {meta.get('format')!r}).")
  if meta.get("format_version", 0) > FORMAT_VERSION:
    raise PresetError(f"{path} was written by a newer ebmkit (preset format "
                      f"{meta['format_version']}); upgrade ebmkit-keras.")
  return meta


def load_weights(model, path, meta=None):
  """Assigns a preset folder's weights (replay buffer and random states
  included) to a built model of the same config.

  Raises:
    PresetError: a missing or corrupt weights file, or weights that do not
      match the model (naming the first mismatching variable).
  """
  meta = meta if meta is not None else read_metadata(path)
  weights_path = os.path.join(path, WEIGHTS)
  try:
    with np.load(weights_path) as npz:  # Read once; npz reads lazily.
      stored = {name: npz[name] for name in npz.files}
  except FileNotFoundError:
    raise PresetError(f"The preset has no model.weights.npz ({weights_path})"
                      f": it is incomplete.") from None
  except Exception as e:  # pylint: disable=broad-except
    raise PresetError(f"The preset's model.weights.npz is corrupt: {e}.") from (
        None)
  names = sorted(stored)
  variables = model.variables
  if len(names) != len(variables):
    raise PresetError(
        f"The preset's weights do not match its config: model.weights.npz "
        f"holds {len(names)} variables, the model has {len(variables)} (the "
        f"first: {variables[0].path}).")
  quantized = meta.get("quantized", {})
  for i, (name, variable) in enumerate(zip(names, variables)):
    value = stored[name]
    same_kind = name.rsplit("/", 1)[-1] == variable.path.rsplit("/", 1)[-1]
    if not same_kind or tuple(value.shape) != tuple(variable.shape):
      raise PresetError(
          f"The preset's weights do not match the model: variable {i}, "
          f"{variable.path} {tuple(variable.shape)} in the model, is {name} "
          f"{tuple(value.shape)} in model.weights.npz.")
    if name in quantized:
      stored[name] = dequantize(value, quantized[name])
  for name, variable in zip(names, variables):
    variable.assign(stored[name].astype(variable.dtype))
