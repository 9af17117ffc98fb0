"""Converting the JEM reference implementation's PyTorch weights to ebmkit.

The reference (Grathwohl et al.'s JEM code) saves
`{"model_state_dict": f.state_dict(), "replay_buffer": buffer}` where `f`
holds the wide ResNet as `f.f` and the logits layer as `f.class_output`. This
module maps those tensors, given as NumPy arrays, onto a `WideResNet`; torch
is needed only to read the file (see tools/convert_jem_checkpoint.py).
"""

import numpy as np

from ebmkit import backbones

# Keys the conversion knows and deliberately does not use.
_IGNORED_SUFFIXES = (".num_batches_tracked",)
_IGNORED_PREFIXES = ("energy_output.",)  # The reference's unused scalar head.


class ConversionError(ValueError):
  """The state dict does not fit the Keras network."""


def _conv_kernel(w):
  return np.transpose(w, (2, 3, 1, 0))  # PyTorch OIHW → Keras HWIO.


def _dense_kernel(w):
  return np.transpose(w)  # PyTorch [out, in] → Keras [in, out].


def _identity(w):
  return w


def _targets(wrn):
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
  return targets


def load_jem_state_dict(wrn, state_dict):
  """Copies a reference JEM state dict into a built `WideResNet`.

  Args:
    wrn: a built `ebmkit.backbones.WideResNet` of the same depth, width,
      classes and norm as the reference model.
    state_dict: mapping from the reference's parameter names
      ("f.layer1.0.conv1.weight", "class_output.bias", ...; a DataParallel
      "module." prefix is accepted) to NumPy arrays.

  Returns:
    The sorted list of keys that were recognised but not used (the unused
    `energy_output` head, batch-norm counters).

  Raises:
    ConversionError: naming missing keys, unexpected keys or shape
      mismatches; nothing is assigned in that case.
  """
  if not isinstance(wrn, backbones.WideResNet):
    raise ConversionError(f"Expected a WideResNet backbone, got "
                          f"{type(wrn).__name__}.")
  if not wrn.built:
    raise ConversionError("Build the network (e.g. model.build((None, 32, 32, "
                          "3))) before loading weights into it.")
  state = {k[len("module."):] if k.startswith("module.") else k: np.asarray(v)
           for k, v in state_dict.items()}
  targets = _targets(wrn)
  ignored = sorted(k for k in state if k not in targets and (
      k.endswith(_IGNORED_SUFFIXES) or k.startswith(_IGNORED_PREFIXES)))
  missing = sorted(set(targets) - set(state))
  unexpected = sorted(set(state) - set(targets) - set(ignored))
  problems = []
  if missing:
    problems.append(f"missing keys: {', '.join(missing[:10])}"
                    + (f" (+{len(missing) - 10} more)" if len(missing) > 10
                       else ""))
  if unexpected:
    problems.append(f"unexpected keys: {', '.join(unexpected[:10])}"
                    + (f" (+{len(unexpected) - 10} more)"
                       if len(unexpected) > 10 else ""))
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
    raise ConversionError(
        f"The state dict does not fit WRN-{wrn.depth}-{wrn.width} "
        f"(num_classes={wrn.num_classes}, norm={wrn.norm!r}): "
        + "; ".join(problems) + ". Bind the matching depth, width, "
        "num_classes and norm (e.g. --gin_bindings='wide_resnet.norm = "
        "\"batch\"').")
  for var, value in converted.values():
    var.assign(value)
  return ignored


def load_replay_buffer(model, samples):
  """Copies the reference's replay buffer (NCHW) into `model.replay_buffer`."""
  samples = np.asarray(samples, np.float32)
  if samples.ndim == 4:
    samples = np.transpose(samples, (0, 2, 3, 1))  # NCHW → NHWC.
  want = tuple(model.replay_buffer.samples.shape)
  if samples.shape != want:
    raise ConversionError(
        f"The replay buffer holds {samples.shape} (as NHWC), the model's "
        f"buffer is {want}: bind BUFFER_SIZE = {samples.shape[0]}.")
  model.replay_buffer.samples.assign(samples)


def convert_to_workdir(state_dict, workdir, replay_buffer=None):
  """Writes a reference JEM state dict as an ebmkit workdir.

  The model comes from the parsed gin config (`get_model`, e.g.
  jem_cifar10.gin) and the configured data set's image shape. Writes a
  model-only checkpoint `workdir/checkpoints/ckpt-0` (evaluate reads it;
  training from it restores the model and starts a fresh optimizer) and the
  operative config.

  Args:
    state_dict: reference parameter names to NumPy arrays.
    workdir: output folder.
    replay_buffer: optional reference buffer, NCHW array [B, C, H, W].

  Returns:
    Dict with the checkpoint path and the recognised-but-unused keys.
  """
  from ebmkit import checkpoints  # pylint: disable=g-import-not-at-top
  from ebmkit import data  # pylint: disable=g-import-not-at-top
  from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top
  from ebmkit import train  # pylint: disable=g-import-not-at-top
  model = train.build_model(data.dataset_info(data.configured_name()))
  ignored = load_jem_state_dict(model.backbone, state_dict)
  if replay_buffer is not None:
    load_replay_buffer(model, replay_buffer)
  path = checkpoints.save_model_only(model, workdir, step=0)
  gin_utils.write_operative_config(workdir)
  return {"checkpoint": path, "ignored_keys": ignored}
