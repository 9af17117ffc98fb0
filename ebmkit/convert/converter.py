"""Converting the JEM reference implementation's checkpoints to ebmkit.

The reference (Grathwohl et al.'s JEM code, train_wrn_ebm.py) saves
`{"model_state_dict": f.state_dict(), "replay_buffer": buffer}` where `f` is
`CCF` (the JEM classifier: E(x) = −LogSumExp of `class_output`) or, with
`--uncond`, `F` (a scalar energy: log p(x) = `energy_output`). Both own the
same modules: the `Wide_ResNet` as `f.f` (with its own read-out `f.linear`,
which JEM never uses), `class_output` and `energy_output`. This module maps
those tensors onto ebmkit's `WideResNet` (and `ScalarEnergyHead` for `F`),
reads `.pt` files without torch (`ebmkit.torch_checkpoint`), and writes a
complete workdir that `--mode=eval`, `--mode=export` and `ebmkit.load_model`
use as they use a trained one.

    python -m ebmkit.convert --checkpoint=CIFAR10_MODEL.pt --workdir=runs/ref
"""

import hashlib
import os
import re
import shutil
import tempfile

import gin
import numpy as np

from ebmkit import gin_utils
from ebmkit import preset_format
from ebmkit import workdir as workdir_lib
from ebmkit.convert import torch_checkpoint
from ebmkit.models import heads as energy_lib
from ebmkit.networks import backbones
from ebmkit.training import checkpoints
from ebmkit.training import experiment

# Modules of the reference network that a model does not use, with why.
_UNUSED_BY_JEM = {
    "f.linear.": "the Wide_ResNet's own read-out; JEM reads class_output",
    "energy_output.": "F's scalar energy head; the JEM classifier (CCF) "
                      "takes its energy from class_output",
}
_UNUSED_BY_UNCOND = {
    "f.linear.": "the Wide_ResNet's own read-out, never used",
    "class_output.": "the classifier read-out; the unconditional energy is "
                     "energy_output (ebmkit's ScalarEnergyHead has no "
                     "classes)",
}
_COUNTERS = ".num_batches_tracked"


class ConversionError(ValueError):
  """The state dict does not fit the Keras network."""


def read_checkpoint(path):
  """Reads a reference checkpoint without torch.

  Args:
    path: the reference's `.pt` (zip or legacy torch format) holding
      `{"model_state_dict": ..., "replay_buffer": ...}` or a bare state dict;
      or a `.npz` of the same names (plus an optional "replay_buffer").

  Returns:
    (state dict of NumPy arrays, replay buffer NCHW array or None).

  Raises:
    FileNotFoundError: no file at `path`.
    torch_checkpoint.UnsafeCheckpointError: the pickle names a global that a
      state dict of tensors does not need.
    torch_checkpoint.CheckpointFormatError: the file is not a torch
      checkpoint ebmkit can read.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No checkpoint file {path}.")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      arrays = dict(f)
    return arrays, arrays.pop("replay_buffer", None)
  blob = torch_checkpoint.load(path)
  if not isinstance(blob, dict):
    raise torch_checkpoint.CheckpointFormatError(
        f"{path} holds a {type(blob).__name__}, not a state dict.")
  if "model_state_dict" in blob:
    state, buffer = blob["model_state_dict"], blob.get("replay_buffer")
  else:
    state, buffer = blob, None
  bad = sorted(k for k, v in state.items() if not isinstance(v, np.ndarray))
  if bad:
    raise torch_checkpoint.CheckpointFormatError(
        f"{path}: these entries are not tensors: {', '.join(bad[:5])}.")
  return dict(state), None if buffer is None else np.asarray(buffer)


def _strip_data_parallel(state_dict):
  return {k[len("module."):] if k.startswith("module.") else k: np.asarray(v)
          for k, v in state_dict.items()}


def infer_architecture(state_dict):
  """Depth, width, norm and classes of the reference network in a state dict.

  Returns:
    Dict with "depth", "width", "norm" (None or "batch") and "num_classes".

  Raises:
    ConversionError: the state dict is not a reference wide ResNet.
  """
  state = _strip_data_parallel(state_dict)
  blocks = {int(m.group(1)) for k in state
            if (m := re.match(r"f\.layer1\.(\d+)\.", k))}
  try:
    width = state["f.layer1.0.conv1.weight"].shape[0] // 16
    num_classes = int(state["class_output.weight"].shape[0])
  except KeyError as e:
    raise ConversionError(
        f"The state dict has no {e.args[0]}: it is not the JEM reference's "
        f"wide ResNet (keys look like {', '.join(sorted(state)[:4])}).") from e
  norms = [k for k in state if k.endswith(".running_mean")]
  if any(k.endswith((".weight", ".bias")) and ".bn" in k for k in state) and (
      not norms):
    raise ConversionError(
        "The state dict has normalisation weights but no running statistics: "
        "only the reference's norm=None and norm='batch' networks convert.")
  return {"depth": 6 * len(blocks) + 4, "width": int(width),
          "norm": "batch" if norms else None, "num_classes": num_classes}


def gin_bindings(architecture, uncond=False, buffer_size=None):
  """gin bindings that make the configured model the checkpoint's network.

  Args:
    architecture: from `infer_architecture`.
    uncond: the checkpoint is the reference's `F` (trained with --uncond):
      a scalar energy head on the wide ResNet's features.
    buffer_size: the reference buffer's size, if one is converted.
  """
  a = architecture
  bindings = [f"wide_resnet.depth = {a['depth']}",
              f"wide_resnet.width = {a['width']}",
              f"wide_resnet.norm = {a['norm']!r}".replace("'", '"')]
  if uncond:
    bindings += ["wide_resnet.num_classes = 0",
                 "ebmkit.EnergyModel.head = @ebmkit.ScalarEnergyHead()",
                 "ebmkit.ScalarEnergyHead.spectral_norm = False",
                 "ebmkit.EnergyModel.clf_weight = 0.0",
                 "ebmkit.EnergyModel.px_weight = 1.0",
                 "ebmkit.EnergyModel.pxy_weight = 0.0",
                 "ebmkit.EnergyModel.px_conditional_chains = False"]
  else:
    bindings.append(f"wide_resnet.num_classes = {a['num_classes']}")
  if buffer_size is not None:
    bindings.append(f"ebmkit.ReplayBuffer.size = {int(buffer_size)}")
  return bindings


def _conv_kernel(w):
  return np.transpose(w, (2, 3, 1, 0))  # PyTorch OIHW → Keras HWIO.


def _dense_kernel(w):
  return np.transpose(w)  # PyTorch [out, in] → Keras [in, out].


def _identity(w):
  return w


def _targets(wrn, scalar_head=None):
  """Maps each reference key to (Keras variable, layout transform)."""
  targets = {}

  def conv(prefix, layer):
    targets[prefix + ".weight"] = (layer.kernel, _conv_kernel)
    targets[prefix + ".bias"] = (layer.bias, _identity)

  def norm(prefix, layer):
    if layer is None:
      return
    for key, var in (("weight", layer.gamma), ("bias", layer.beta),
                     ("running_mean", layer.moving_mean),
                     ("running_var", layer.moving_variance)):
      targets[f"{prefix}.{key}"] = (var, _identity)

  conv("f.conv1", wrn.conv1.get_layer("conv"))
  for block in wrn.blocks:
    stage, index = block.name.split("_")  # "layer1_0" → f.layer1.0
    prefix = f"f.{stage}.{index}"
    norm(prefix + ".bn1", block.bn1)
    conv(prefix + ".conv1", block.conv1.get_layer("conv"))
    norm(prefix + ".bn2", block.bn2)
    conv(prefix + ".conv2", block.conv2.get_layer("conv"))
    if block.shortcut is not None:
      conv(prefix + ".shortcut.0", block.shortcut)
  norm("f.bn1", wrn.bn1)
  if wrn.class_output is not None:
    targets["class_output.weight"] = (wrn.class_output.kernel, _dense_kernel)
    targets["class_output.bias"] = (wrn.class_output.bias, _identity)
  if scalar_head is not None:
    targets["energy_output.weight"] = (scalar_head.dense.kernel,
                                       _dense_kernel)
    targets["energy_output.bias"] = (scalar_head.dense.bias, _identity)
  return targets


def _network_of(model):
  """(WideResNet, ScalarEnergyHead or None) of a model or a bare network."""
  if isinstance(model, backbones.WideResNet):
    return model, None
  wrn, head = getattr(model, "backbone", None), getattr(model, "head", None)
  if not isinstance(wrn, backbones.WideResNet):
    raise ConversionError(f"Expected a WideResNet backbone, got "
                          f"{type(wrn if wrn is not None else model).__name__}"
                          f": use a config with models/wrn.gin "
                          f"(e.g. jem_cifar10.gin).")
  if isinstance(head, energy_lib.ScalarEnergyHead):
    if wrn.class_output is not None:
      raise ConversionError(
          "The model has a ScalarEnergyHead on top of the WideResNet's "
          "logits; an unconditional (F, --uncond) checkpoint needs "
          "wide_resnet.num_classes = 0 (the converter binds it with "
          "--uncond).")
    if head.spectral_norm or not head.use_bias:
      raise ConversionError(
          "The reference's energy_output is a plain linear layer with a "
          "bias: bind ebmkit.ScalarEnergyHead.spectral_norm = False and "
          "use_bias = True.")
    return wrn, head
  if wrn.class_output is None:
    raise ConversionError("The WideResNet has no class_output (num_classes "
                          "= 0) but the model's head needs logits.")
  return wrn, None


def load_jem_state_dict(model, state_dict):
  """Copies a reference JEM state dict into a built model.

  Args:
    model: a built `EnergyModel` whose backbone is a `WideResNet` of the
      checkpoint's depth, width, classes and norm: with an `EnergyHead` for
      the reference's `CCF` (JEM), with a `ScalarEnergyHead` over the
      features (num_classes = 0) for `F` (--uncond). A bare built
      `WideResNet` is read as CCF's classifier.
    state_dict: the reference's parameter names ("f.layer1.0.conv1.weight",
      "class_output.bias", ...; a DataParallel "module." prefix is accepted)
      to NumPy arrays.

  Returns:
    The sorted list of keys that were recognised and not used (the modules
    this model does not have, batch-norm counters); see `describe_unused`.

  Raises:
    ConversionError: naming missing keys, unexpected keys or shape
      mismatches; nothing is assigned in that case.
  """
  wrn, scalar_head = _network_of(model)
  if not wrn.built or (scalar_head is not None and not scalar_head.built):
    raise ConversionError("Build the network (e.g. model.build((None, 32, 32, "
                          "3))) before loading weights into it.")
  state = _strip_data_parallel(state_dict)
  targets = _targets(wrn, scalar_head)
  unused = _UNUSED_BY_UNCOND if scalar_head is not None else _UNUSED_BY_JEM
  ignored = sorted(k for k in state if k not in targets and (
      k.endswith(_COUNTERS) or k.startswith(tuple(unused))))
  missing = sorted(set(targets) - set(state))
  unexpected = sorted(set(state) - set(targets) - set(ignored))
  problems = []
  for what, keys in (("missing keys", missing), ("unexpected keys",
                                                 unexpected)):
    if keys:
      problems.append(f"{what}: {', '.join(keys[:10])}"
                      + (f" (+{len(keys) - 10} more)" if len(keys) > 10
                         else ""))
  converted = {}
  for key, (var, transform) in targets.items():
    if key not in state:
      continue
    value = transform(state[key]).astype(np.float32)
    if tuple(value.shape) != tuple(var.shape):
      problems.append(f"{key}: shape {state[key].shape} converts to "
                      f"{value.shape}, the network wants {tuple(var.shape)}")
    converted[key] = (var, value)
  if problems:
    kind = "F (--uncond)" if scalar_head is not None else "CCF (JEM)"
    raise ConversionError(
        f"The state dict does not fit {kind} on WRN-{wrn.depth}-{wrn.width} "
        f"(num_classes={wrn.num_classes}, norm={wrn.norm!r}): "
        + "; ".join(problems) + ". The converter binds depth, width, norm "
        "and classes from the checkpoint itself; a mismatch left means the "
        "file is not a reference JEM checkpoint or a binding overrides them.")
  for var, value in converted.values():
    var.assign(value)
  return ignored


def describe_unused(ignored, uncond=False):
  """One line per unused module of the reference: its keys and why."""
  unused = _UNUSED_BY_UNCOND if uncond else _UNUSED_BY_JEM
  lines = []
  for prefix, why in unused.items():
    keys = [k for k in ignored if k.startswith(prefix)]
    if keys:
      lines.append(f"{prefix}* ({', '.join(keys)}): {why}")
  counters = [k for k in ignored if k.endswith(_COUNTERS)]
  if counters:
    lines.append(f"*{_COUNTERS} ({len(counters)} keys): PyTorch's batch-norm "
                 f"step counters, which Keras does not keep")
  return lines


def load_replay_buffer(model, samples):
  """Copies the reference's replay buffer (NCHW) into `model.replay_buffer`.

  The reference's class-conditional buffer is class-major (slice c holds
  class c), as ebmkit's.
  """
  samples = np.asarray(samples, np.float32)
  if samples.ndim == 4:
    samples = np.transpose(samples, (0, 2, 3, 1))  # NCHW → NHWC.
  want = tuple(model.replay_buffer.samples.shape)
  if samples.shape != want:
    raise ConversionError(
        f"The replay buffer holds {samples.shape} (as NHWC), the model's "
        f"buffer is {want}: bind ebmkit.ReplayBuffer.size = "
        f"{samples.shape[0]} and use a config of the checkpoint's data set.")
  model.replay_buffer.samples.assign(samples)


def convert_to_workdir(state_dict, workdir, replay_buffer=None):
  """Writes a reference JEM state dict as an ebmkit workdir.

  The model comes from the parsed gin config (`get_model`, e.g.
  jem_cifar10.gin plus `gin_bindings(...)`) and the configured data set's
  image shape. Writes a model-only checkpoint `workdir/checkpoints/ckpt-0`
  (evaluate and export read it; training from it restores the model and
  starts a fresh optimizer) and the complete config as operative_config.gin
  (data set included, so evaluate/export/load_model need no flags).

  Args:
    state_dict: reference parameter names to NumPy arrays.
    workdir: output folder.
    replay_buffer: optional reference buffer, NCHW array [B, C, H, W].

  Returns:
    Dict with the checkpoint path, the recognised-but-unused keys and, under
    "_model", the converted model (`convert_file` takes it out before
    writing the report).
  """
  model = experiment.configured_model()
  ignored = load_jem_state_dict(model, state_dict)
  if replay_buffer is not None:
    load_replay_buffer(model, replay_buffer)
  path = checkpoints.save_model_only(model, workdir, step=0)
  gin_utils.write_operative_config(workdir, complete=True)
  return {"checkpoint": path, "ignored_keys": ignored, "_model": model}


def convert_file(checkpoint, workdir, gin_files=("jem_cifar10.gin",),
                 bindings=(), uncond=False, preset=None):
  """Converts a reference checkpoint file into a workdir (the CLI's work).

  The network's depth, width, norm and classes and the buffer's size are
  read from the checkpoint and bound before `bindings`, which win.

  Args:
    checkpoint: the reference .pt file (or a .npz of its keys).
    workdir: the output workdir.
    gin_files: the config of the data set and training.
    bindings: extra gin bindings; they win.
    uncond: the file is the reference's F (--uncond), not CCF.
    preset: also write a preset folder here (`ebmkit.from_preset`), its
      card saying where the weights came from.

  Returns:
    The conversion report (also written to workdir/conversion.json).
  """
  state, buffer = read_checkpoint(checkpoint)
  architecture = infer_architecture(state)
  inferred = gin_bindings(architecture, uncond,
                          None if buffer is None else len(buffer))
  gin.clear_config()
  gin_utils.parse(gin_files, inferred + list(bindings))
  report = convert_to_workdir(state, workdir, buffer)
  model = report.pop("_model")
  report.update(source=os.path.abspath(checkpoint), model="F (--uncond)"
                if uncond else "CCF (JEM)", architecture=architecture,
                bindings=inferred, unused=describe_unused(
                    report["ignored_keys"], uncond))
  if preset:
    report["preset"] = write_preset(model, workdir, preset, report)
  workdir_lib.write_json(workdir_lib.path(workdir, workdir_lib.CONVERSION),
                         report)
  return report


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def write_preset(model, workdir, path, report):
  """A preset of a converted model; its card says where it came from and
  that ebmkit did not train or measure it."""
  a = report["architecture"]
  with open(workdir_lib.path(workdir, workdir_lib.OPERATIVE_CONFIG)) as f:
    operative = f.read()
  card = {
      "name": os.path.basename(os.path.normpath(path)),
      "model": (f"EnergyModel, the JEM reference's {report['model']} "
                f"WRN-{a['depth']}-{a['width']} (norm={a['norm']}, "
                f"{a['num_classes']} classes)"),
      "dataset": gin_utils.bound("load_dataset.name", None),
      "source": report["source"],
      "source_sha256": _sha256(report["source"]),
      "command": (f"python -m ebmkit.convert --checkpoint={report['source']} "
                  f"--to_preset={os.path.abspath(path)}"
                  + (" --uncond" if report["model"].startswith("F") else "")),
      "is_not": ("not trained or measured by ebmkit: the weights (and "
                 "replay buffer, if the file had one) of a checkpoint written "
                 "by the JEM reference code (github.com/wgrathwohl/JEM), "
                 "converted; whether it is the paper's model the file alone "
                 "cannot say. Measure it with python -m ebmkit.run "
                 "--mode=eval on the conversion's workdir."),
      "metrics": {},
      "not_used": report["unused"],
  }
  return preset_format.write(model, path, card, operative)


def main(argv=None):
  """`python -m ebmkit.convert`: a reference checkpoint to an ebmkit workdir."""
  import argparse  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog="python -m ebmkit.convert",
      description="Converts the JEM reference's checkpoint ({'model_state_dict'"
      ": ..., 'replay_buffer': ...}, .pt; torch is not needed) into an ebmkit "
      "workdir. Depth, width, norm, classes and buffer size are read from the "
      "file. Then: python -m ebmkit.run --mode=eval --workdir=WORKDIR")
  parser.add_argument("--checkpoint", required=True,
                      help="the reference .pt file (or a .npz of its keys)")
  parser.add_argument("--workdir", default=None,
                      help="output workdir (needed unless --to_preset is "
                      "given)")
  parser.add_argument("--to_preset", default=None,
                      help="also (or only, without --workdir) write a preset "
                      "folder here: ebmkit.from_preset(DIR) loads it, its "
                      "card names the file and its SHA-256")
  parser.add_argument("--gin_file", action="append", default=None,
                      help="config of the data set and training (default: "
                      "jem_cifar10.gin; jem_cifar100.gin, jem_svhn.gin for "
                      "those data sets); repeatable")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="extra gin bindings (they win); repeatable")
  parser.add_argument("--uncond", action="store_true",
                      help="the checkpoint is the reference's F, trained with "
                      "--uncond (a scalar energy head), not CCF")
  args = parser.parse_args(argv)
  if not args.workdir and not args.to_preset:
    parser.error("give --workdir=DIR (a workdir to evaluate, export or "
                 "train on), --to_preset=DIR (a preset folder), or both")
  workdir = args.workdir or tempfile.mkdtemp(prefix="ebmkit_convert_")
  try:
    report = convert_file(args.checkpoint, workdir,
                          args.gin_file or ["jem_cifar10.gin"],
                          args.gin_bindings, args.uncond, args.to_preset)
  except (ConversionError, FileNotFoundError,
          torch_checkpoint.CheckpointFormatError,
          torch_checkpoint.UnsafeCheckpointError,
          preset_format.PresetError) as e:
    sys.exit(f"ebmkit.convert: error: {e}")
  finally:
    if not args.workdir:
      shutil.rmtree(workdir, ignore_errors=True)
  a = report["architecture"]
  into = ([report["checkpoint"]] if args.workdir else []) + (
      [f"the preset {args.to_preset}"] if args.to_preset else [])
  print(f"Converted {report['model']} WRN-{a['depth']}-{a['width']} "
        f"(norm={a['norm']}, {a['num_classes']} classes) into "
        f"{' and '.join(into)}.")
  for line in report["unused"]:
    print(f"  not used: {line}")
  if args.workdir:
    print(f"Next: python -m ebmkit.run --mode=eval --workdir={args.workdir}")
  if args.to_preset:
    print(f"Load it with ebmkit.from_preset({args.to_preset!r}).")
  return report


if __name__ == "__main__":
  main()
