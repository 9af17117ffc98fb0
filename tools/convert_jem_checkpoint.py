"""Converts the JEM reference's PyTorch checkpoint into an ebmkit workdir.

  pip install torch   # only this tool needs it
  python tools/convert_jem_checkpoint.py --checkpoint=CIFAR10_MODEL.pt \\
      --workdir=ebmkit_runs/jem_cifar10_reference [--gin_file=jem_cifar10.gin]

The checkpoint is the reference's `{"model_state_dict": ..., "replay_buffer":
...}` (a bare state dict works too; so does a .npz of the same names). The
network must match the config: bind DEPTH, WIDTH, NORM, NUM_CLASSES with
--gin_bindings when it differs from WRN-28-10 without normalisation.
Then: python -m ebmkit.run --mode=eval --workdir=ebmkit_runs/jem_cifar10_reference
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

flags.DEFINE_string("checkpoint", None, "The reference .pt file (or a .npz).",
                    required=True)
flags.DEFINE_string("workdir", None, "Output workdir.", required=True)
flags.DEFINE_multi_string("gin_file", ["jem_cifar10.gin"],
                          "Config of the converted model.")
flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings.")
FLAGS = flags.FLAGS


def read_checkpoint(path):
  """(state dict of NumPy arrays, replay buffer array or None)."""
  if path.endswith(".npz"):
    arrays = dict(np.load(path))
    return arrays, arrays.pop("replay_buffer", None)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    sys.exit("Reading a PyTorch checkpoint needs torch: pip install torch "
             "(only this tool uses it).")
  blob = torch.load(path, map_location="cpu", weights_only=True)
  state = blob.get("model_state_dict", blob)
  buffer = blob.get("replay_buffer") if "model_state_dict" in blob else None
  to_numpy = lambda t: t.detach().cpu().numpy()
  return ({k: to_numpy(v) for k, v in state.items()},
          None if buffer is None else to_numpy(buffer))


def main(argv):
  del argv
  from ebmkit import convert, gin_utils  # pylint: disable=g-import-not-at-top
  gin_utils.parse(FLAGS.gin_file, FLAGS.gin_bindings)
  state, buffer = read_checkpoint(FLAGS.checkpoint)
  try:
    report = convert.convert_to_workdir(state, FLAGS.workdir, buffer)
  except convert.ConversionError as e:
    sys.exit(f"convert_jem_checkpoint: {e}")
  with open(os.path.join(FLAGS.workdir, "conversion.json"), "w") as f:
    json.dump({"source": os.path.abspath(FLAGS.checkpoint), **report}, f,
              indent=2)
  print(f"Wrote {report['checkpoint']}; unused keys: "
        f"{', '.join(report['ignored_keys']) or 'none'}.")


if __name__ == "__main__":
  app.run(main)
