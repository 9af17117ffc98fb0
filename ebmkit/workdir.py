"""A workdir's layout: every folder and file name, and atomic writes.

    <workdir>/
      checkpoints/ckpt-<step>     weights, optimizer, replay buffer, RNG state
      operative_config.gin        the gin config that rebuilds the model
      results.json                training results (and "evaluation")
      recoveries.json             divergence recoveries
      samples/                    per-epoch PNG grids of the replay buffer
      tensorboard/                TensorBoard logs
      report.md, figures/         the evaluation report
      eval/judge.keras            the evaluation's independent classifier
      detection.json              the calibrated detection threshold
      export/                     the default SavedModel folder
      conversion.json             what a converted reference checkpoint held

Every other module asks this one for a path.
"""

import json
import os

CHECKPOINTS = "checkpoints"
OPERATIVE_CONFIG = "operative_config.gin"
RESULTS = "results.json"
RECOVERIES = "recoveries.json"
SAMPLES = "samples"
TENSORBOARD = "tensorboard"
REPORT = "report.md"
FIGURES = "figures"
EVAL = "eval"
DETECTION = "detection.json"
EXPORT = "export"
CONVERSION = "conversion.json"


def path(workdir, *parts):
  """`workdir/<parts...>`, e.g. path(w, FIGURES, "distal.png")."""
  return os.path.join(workdir, *parts)


def checkpoints_dir(workdir):
  return path(workdir, CHECKPOINTS)


def write_text(file_path, text):
  """Writes a text file atomically: a reader sees the old or the new file,
  never a partial one (write to a temporary name, then rename)."""
  folder = os.path.dirname(file_path)
  if folder:
    os.makedirs(folder, exist_ok=True)
  tmp = file_path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, file_path)
  return file_path


def write_json(file_path, payload):
  """Writes JSON atomically (see `write_text`)."""
  return write_text(file_path, json.dumps(payload, indent=2, sort_keys=True))


def read_json(file_path, default=None):
  """The JSON in `file_path`, or `default` when the file does not exist."""
  if not os.path.isfile(file_path):
    return default
  with open(file_path) as f:
    return json.load(f)
