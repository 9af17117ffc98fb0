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
flags.DEFINE_enum("mode", "train", ["train", "eval", "compare", "export"],
                  "train (or resume); eval: the full evaluation of the newest "
                  "checkpoint (report.md, figures/, results.json), configured "
                  "from the workdir's operative config; compare: one table of "
                  "the evaluated --workdirs; export: a SavedModel of the "
                  "workdir's newest checkpoint to --export_dir.")
flags.DEFINE_string("export_dir", None, "export mode: the SavedModel folder "
                    "(default: <workdir>/export).")
flags.DEFINE_float("detection_fpr", 0.05, "export mode: target false-positive "
                   "rate of the calibrated detection threshold.")
flags.DEFINE_list("workdirs", [], "compare mode: evaluated workdirs, "
                  "comma-separated.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from absl import logging  # pylint: disable=g-import-not-at-top
  if not FLAGS["verbosity"].present:
    # absl shows INFO by default: every checkpoint save, every TFDS lookup.
    logging.set_verbosity(logging.WARNING)
  from ebmkit import gin_utils  # pylint: disable=g-import-not-at-top
  from ebmkit import recovery  # pylint: disable=g-import-not-at-top
  from ebmkit import train as train_lib  # pylint: disable=g-import-not-at-top
  from ebmkit import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  gin_files = FLAGS.gin_file or [gin_utils.DEFAULT_GIN_FILE]
  workdir = FLAGS.workdir or os.path.join(
      "ebmkit_runs", pathlib.Path(gin_files[0]).stem)
  if FLAGS.mode in ("eval", "export") and not FLAGS.gin_file:
    saved = workdir_lib.path(workdir, workdir_lib.OPERATIVE_CONFIG)
    if os.path.isfile(saved):
      gin_files = [saved]
  from ebmkit import data  # pylint: disable=g-import-not-at-top
  from ebmkit import experiment  # pylint: disable=g-import-not-at-top
  from ebmkit.evaluation import report  # pylint: disable=g-import-not-at-top
  try:
    if FLAGS.mode == "compare":
      if len(FLAGS.workdirs) < 1:
        sys.exit("ebmkit: error: --mode=compare needs --workdirs=a,b,...")
      print(report.compare(FLAGS.workdirs, FLAGS.workdir or "."))
      return
    try:
      gin_utils.parse(gin_files, FLAGS.gin_bindings)
    except ValueError as e:  # Unknown configurable, misspelt parameter, ...
      sys.exit(f"ebmkit: error in the gin config: {e}")
    if FLAGS.mode == "train":
      train_lib.train(workdir=workdir)
    elif FLAGS.mode == "export":
      from ebmkit import serving  # pylint: disable=g-import-not-at-top
      export_dir = FLAGS.export_dir or workdir_lib.path(workdir,
                                                        workdir_lib.EXPORT)
      meta = serving.export_workdir(workdir, export_dir, FLAGS.detection_fpr)
      print(f"Exported {export_dir} with signatures "
            f"{', '.join(meta['signatures'])}.")
    else:
      result = report.evaluate(workdir=workdir)
      print(f"Wrote {workdir_lib.path(workdir, workdir_lib.REPORT)} "
            f"(accuracy {result.get('accuracy', 'n/a')}, "
            f"{result['wall_time_s']} s).")
  except (FileNotFoundError, data.DatasetUnavailableError,
          experiment.NoModelConfiguredError,
          recovery.TrainingDivergedError) as e:
    # Problems the user fixes: say what, without a traceback.
    sys.exit(f"ebmkit: error: {e}")


if __name__ == "__main__":
  app.run(main)
