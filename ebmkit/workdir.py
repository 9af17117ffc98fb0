"""A workdir's layout: every folder and file name, and atomic writes.

    <workdir>/
      checkpoints/ckpt-<step>     weights, optimizer, replay buffer, RNG state
      checkpoints/verified.json   checkpoints seen to train well (rollback)
      previous/<time>/            a run set aside by a fresh start
      operative_config.gin        the gin config that rebuilds the model
      results.json                training results (and "evaluation")
      recoveries.json             divergence recoveries
      samples/                    per-epoch PNG grids of the replay buffer
      tensorboard/                TensorBoard logs
      report.md, figures/         the evaluation report
      eval/judge.keras            the evaluation's independent classifier
      export/                     the default SavedModel folder (with
                                  detection.json, the calibrated threshold)
      conversion.json             what a converted reference checkpoint held
      .lock                       the pid and host of the process writing it
      workers/<type>_<index>/     a multi-worker run's other workers' scratch

    <output>/comparison.md        `--mode=compare`: several workdirs side by side

Every other module asks this one for a path.
"""

import json
import os
import socket
import time

CHECKPOINTS = "checkpoints"
OPERATIVE_CONFIG = "operative_config.gin"
RESULTS = "results.json"
RECOVERIES = "recoveries.json"
SAMPLES = "samples"
LATEST_GRID = "buffer_latest.png"  # In samples/: the newest buffer grid.
TENSORBOARD = "tensorboard"
REPORT = "report.md"
FIGURES = "figures"
EVAL = "eval"
JUDGE = "judge.keras"  # In EVAL.
DETECTION = "detection.json"  # In the export folder.
EXPORT = "export"
EXPORT_META = "ebmkit_export.json"  # In an export folder.
CONVERSION = "conversion.json"
VERIFIED = "verified.json"  # In checkpoints/: which checkpoints were seen
                            # to give a finite, in-bound training step.
COMPARISON = "comparison.md"
WORKERS = "workers"  # workers/<type>_<index>/: a non-chief worker's scratch
                     # (checkpoints, logs) in a multi-worker run.


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


PREVIOUS = "previous"  # previous/<time>/: a run set aside by a fresh start.


def set_aside(workdir):
  """Moves a run's checkpoints, recoveries and results into
  `workdir/previous/<time>/` (a fresh start on purpose loses nothing).

  Returns:
    The folder they went to, or None when there was nothing to move.
  """
  names = [n for n in (CHECKPOINTS, RECOVERIES, RESULTS)
           if os.path.exists(path(workdir, n))]
  if not names:
    return None
  target = path(workdir, PREVIOUS, time.strftime("%Y%m%d-%H%M%S"))
  os.makedirs(target, exist_ok=True)
  for n in names:
    os.replace(path(workdir, n), os.path.join(target, n))
  return target


# -- one writer per workdir ----------------------------------------------------

LOCK = ".lock"


class WorkdirLockedError(RuntimeError):
  """Another live process is writing this workdir."""


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class Lock:
  """An exclusive lock on a workdir: `workdir/.lock` holds the owner's pid,
  host and start time. A lock whose owner is gone (same host, no such pid) is
  stale and taken over; a live owner's lock fails at once.

  Use as a context manager: `with workdir.Lock(w): ...`.
  """

  def __init__(self, workdir, purpose="training"):
    self.file = path(workdir, LOCK)
    self.workdir = workdir
    self.purpose = purpose
    self.note = None  # Set when a stale lock was taken over.

  def __enter__(self):
    os.makedirs(self.workdir, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "purpose": self.purpose,
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
      try:
        fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        owner = read_json(self.file, {}) if os.path.getsize(self.file) else {}
        if self._stale(owner):
          self.note = (f"Took over a stale lock of {self.workdir} (pid "
                       f"{owner.get('pid')} on {owner.get('host')} is gone).")
          os.remove(self.file)
          continue
        raise WorkdirLockedError(
            f"{self.workdir} is in use: {owner.get('purpose', 'a process')} "
            f"by pid {owner.get('pid')} on {owner.get('host')} since "
            f"{owner.get('since')}. Wait for it, stop it, or use another "
            f"--workdir; if that process is gone (e.g. another machine "
            f"crashed), delete {self.file}.") from None
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      return self
    raise WorkdirLockedError(f"Could not lock {self.workdir}.")

  def _stale(self, owner):
    if not owner:  # Empty or unreadable: a crash between create and write.
      return True
    if owner.get("host") != socket.gethostname():
      return False  # Cannot tell; the owner's machine may be alive.
    return not _alive(int(owner.get("pid", -1)))

  def __exit__(self, *exc):
    try:
      os.remove(self.file)
    except FileNotFoundError:
      pass
    return False
