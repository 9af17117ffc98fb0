"""Command line: python -m ebmkit.run --gin_file=jem_digits.gin [--workdir=...]."""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Quieter TensorFlow start.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

flags.DEFINE_multi_string(
    "gin_file", None, "A .gin file: a path or a shipped config's name "
    "(default: jem_digits.gin, JEM on the embedded digits). Repeatable.")
flags.DEFINE_multi_string(
    "gin_bindings", [], "A gin binding, e.g. 'train.epochs = 5'. Repeatable.")
flags.DEFINE_string(
    "workdir", None, "Output folder (default: ebmkit_runs/<config name>). "
    "Running again on the same workdir resumes.")
flags.DEFINE_enum("mode", "train",
                  ["train", "eval", "compare", "export", "preset"],
                  "train (or resume); eval: the full evaluation of the newest "
                  "checkpoint (report.md, figures/, results.json), configured "
                  "from the workdir's operative config; compare: one table of "
                  "the evaluated --workdirs; export: a SavedModel of the "
                  "workdir's newest checkpoint to --export_dir; preset: "
                  "a preset folder of it (ebmkit.from_preset) to --output.")
flags.DEFINE_string("export_dir", None, "export mode: the SavedModel folder "
                    "(default: <workdir>/export).")
flags.DEFINE_float("detection_fpr", 0.05, "export mode: target false-positive "
                   "rate of the calibrated detection threshold.")
flags.DEFINE_integer(
    "max_sample_count", None, "export mode: the largest num_samples the "
    "SavedModel's sample signature accepts (its chains are held in memory at "
    "once; default 1024, serving.MAX_SAMPLE_COUNT).", lower_bound=1)
flags.DEFINE_bool(
    "allow_gin_imports", False, "Let .gin files and bindings import modules "
    "outside ebmkit, gin, keras, numpy and tensorflow. A .gin file is code: "
    "only allow this for configs you trust.")
flags.DEFINE_list("workdirs", [], "compare mode: evaluated workdirs, "
                  "comma-separated.")
flags.DEFINE_string("output", None, "preset mode: the preset folder; "
                    "compare mode: where the table is written, a .md file "
                    "or a folder (for comparison.md); "
                    "without it (and without --workdir, the older way to "
                    "name that folder) it is only printed.")
flags.DEFINE_bool("fresh", False, "train mode: start from step 0 on purpose; "
                  "the workdir's checkpoints, recoveries and results move to "
                  "<workdir>/previous/<time>/ (nothing is deleted).")
flags.DEFINE_string(
    "init_from_preset", None, "train mode: fine-tune a preset (a shipped "
    "name or a folder, see ebmkit.list_presets()): start from its weights, "
    "replay buffer and random states (train.init_from). Without --gin_file "
    "the preset's operative_config.gin is the config; the workdir defaults "
    "to ebmkit_runs/<preset>_finetuned.")
flags.DEFINE_integer(
    "buffer_bits", None, "preset mode: 8 stores the replay buffer as 8-bit "
    "codes over its min-max range (a quarter of the size; weights stay "
    "exact); default: exact float32.")
FLAGS = flags.FLAGS


def _message(error):
  """An error's message without gin's "In call to configurable" trailer."""
  lines = [l for l in str(error).splitlines()
           if not l.strip().startswith("In call to configurable")]
  message = "\n".join(lines).strip() or type(error).__name__
  if isinstance(error, SyntaxError) and error.text:  # Malformed gin.
    message += f" In {error.filename or 'a binding'}: {error.text.strip()!r}"
  return message


def _workdir(gin_files):
  return FLAGS.workdir or os.path.join("ebmkit_runs",
                                       pathlib.Path(gin_files[0]).stem)


def _preset_config(gin_files):
  """--init_from_preset: (the config files, the preset's folder). Without
  --gin_file the preset's own operative_config.gin is the config."""
  from ebmkit import preset_format  # pylint: disable=g-import-not-at-top
  if FLAGS.mode != "train":
    raise ValueError(f"--init_from_preset fine-tunes (--mode=train), not "
                     f"--mode={FLAGS.mode}; evaluate or export a preset with "
                     f"ebmkit.from_preset and ebmkit.export.")
  preset = os.path.abspath(preset_format.resolve(FLAGS.init_from_preset))
  preset_format.read_metadata(preset)
  if FLAGS.gin_file:
    return gin_files, preset
  saved = os.path.join(preset, preset_format.OPERATIVE_CONFIG)
  if not os.path.isfile(saved):
    raise ValueError(f"The preset {preset} has no operative_config.gin: name "
                     f"the config that builds its model with --gin_file.")
  return [saved], preset


def _run():
  """The chosen mode; user errors propagate to `main`."""
  from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top
  from ebmkit.training import train as train_lib  # pylint: disable=g-import-not-at-top
  from ebmkit import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from ebmkit.evaluation import evaluate  # pylint: disable=g-import-not-at-top
  from ebmkit.evaluation import render  # pylint: disable=g-import-not-at-top
  if FLAGS.mode == "compare":
    if not FLAGS.workdirs:
      raise ValueError("--mode=compare needs --workdirs=a,b,...")
    output = FLAGS.output or FLAGS.workdir
    path = render.comparison_path(output) if output else None
    print(render.compare(FLAGS.workdirs, path), end="", flush=True)
    # On stderr: `--mode=compare > table.md` keeps only the table.
    print(f"Wrote {path}." if path else "Not written to a file (--output="
          "FILE.md or FOLDER writes it).", file=sys.stderr)
    return
  gin_files = FLAGS.gin_file or [gin_utils.DEFAULT_GIN_FILE]
  bindings, preset = list(FLAGS.gin_bindings), None
  if FLAGS.init_from_preset:
    gin_files, preset = _preset_config(gin_files)
    bindings.insert(0, f"train.init_from = {preset!r}")  # Later ones win.
  elif FLAGS.mode in ("eval", "export", "preset") and not FLAGS.gin_file:
    saved = workdir_lib.path(_workdir(gin_files), workdir_lib.OPERATIVE_CONFIG)
    if os.path.isfile(saved):
      gin_files = [saved]
  gin_utils.parse(gin_files, bindings,
                  allow_imports=FLAGS.allow_gin_imports, strict_macros=True)
  # --workdir, else a train.workdir binding, else ebmkit_runs/<config> (or
  # <preset>_finetuned).
  workdir = FLAGS.workdir or gin_utils.bound("train.workdir", None) or (
      os.path.join("ebmkit_runs", os.path.basename(preset) + "_finetuned")
      if preset else _workdir(gin_files))
  if FLAGS.mode == "train":
    from ebmkit.distribute import strategy as distribute  # pylint: disable=g-import-not-at-top
    # Before gin makes train's optimizer, which starts TensorFlow.
    distribute.prepare(gin_utils.bound("train.distribute", None),
                       gin_utils.bound("train.worker_timeout_s", None))
    train_lib.train(workdir=workdir, fresh=FLAGS.fresh)
  elif FLAGS.mode == "preset":
    from ebmkit import presets  # pylint: disable=g-import-not-at-top
    if not FLAGS.output:
      raise ValueError("--mode=preset needs --output=FOLDER, where the preset "
                       "is written.")
    presets.save_workdir_preset(workdir, FLAGS.output,
                                buffer_bits=FLAGS.buffer_bits)
    print(f"Wrote the preset {FLAGS.output} (load it with "
          f"ebmkit.from_preset({FLAGS.output!r})).")
  elif FLAGS.mode == "export":
    from ebmkit.serving import export as serving  # pylint: disable=g-import-not-at-top
    export_dir = FLAGS.export_dir or workdir_lib.path(workdir,
                                                      workdir_lib.EXPORT)
    meta = serving.export_workdir(
        workdir, export_dir, FLAGS.detection_fpr,
        max_sample_count=(serving.MAX_SAMPLE_COUNT
                          if FLAGS.max_sample_count is None
                          else FLAGS.max_sample_count))
    print(f"Exported {export_dir} with signatures "
          f"{', '.join(meta['signatures'])}.")
  else:
    result = evaluate.evaluate(workdir=workdir)
    accuracy = result.get("accuracy")
    print(f"Wrote {workdir_lib.path(workdir, workdir_lib.REPORT)} (accuracy "
          + ("n/a" if accuracy is None else f"{accuracy:.4f}")
          + f", {result['wall_time_s']} s); TensorBoard: "
          f"{workdir_lib.path(workdir, workdir_lib.TENSORBOARD)}.")


def main(argv):
  del argv
  from absl import logging  # pylint: disable=g-import-not-at-top
  verbose = FLAGS["verbosity"].present
  if not verbose:
    # absl shows INFO by default: every checkpoint save, every TFDS lookup.
    logging.set_verbosity(logging.WARNING)
  from ebmkit.training import checkpoints  # pylint: disable=g-import-not-at-top
  from ebmkit.data import pipeline as data  # pylint: disable=g-import-not-at-top
  from ebmkit.distribute import strategy as distribute  # pylint: disable=g-import-not-at-top
  from ebmkit.training import experiment  # pylint: disable=g-import-not-at-top
  from ebmkit.training import recovery  # pylint: disable=g-import-not-at-top
  from ebmkit import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from ebmkit import preset_format  # pylint: disable=g-import-not-at-top
  fixable = (FileNotFoundError, preset_format.PresetError, data.DatasetUnavailableError,
             experiment.NoModelConfiguredError, recovery.TrainingDivergedError,
             checkpoints.UnreadableCheckpointsError,
             workdir_lib.WorkdirLockedError, distribute.WorkerFailedError)
  # Bad values, malformed gin, unwritable folders: almost always the user's
  # to fix. --verbosity shows the traceback (for ebmkit's own bugs).
  generic = (ValueError, TypeError, SyntaxError, OSError)
  try:
    _run()
  except fixable as e:
    if verbose:
      raise
    sys.exit(f"ebmkit: error: {_message(e)}")
  except generic as e:
    if verbose:
      raise
    sys.exit(f"ebmkit: error: {_message(e)}\n(--verbosity=1 shows the "
             f"traceback.)")


if __name__ == "__main__":
  app.run(main)
