"""Finding and parsing .gin files, and saving the operative config.

A .gin file is code: its `import` lines run Python modules, like a script,
and gin records them in the operative config, so `--mode=eval`/`export` run
them again. `parse` therefore refuses imports of modules outside
`ALLOWED_IMPORTS` unless asked to allow them, and checks this on the files'
text (includes too) before gin imports anything.
"""

import contextlib
import difflib
import inspect
import logging
import numbers
import os
import pathlib
import re

import gin
from gin import config_parser

from ebmkit import compat
from ebmkit import workdir as workdir_lib

DEFAULT_GIN_FILE = "jem_digits.gin"

# Top-level packages a .gin file may import without `allow_imports`: ebmkit,
# which registers every configurable, and the libraries it is built on. They
# are installed with ebmkit, and importing them runs only their own code.
ALLOWED_IMPORTS = ("ebmkit", "gin", "keras", "numpy", "tensorflow")


# Parameters that moved, old binding → new one; a config binding the old
# name is told the new one.
MOVED = {
    "train.max_recoveries": "RecoveryPolicy.max_recoveries",
    "train.recovery_lr_factor": "RecoveryPolicy.lr_factor",
    "train.recovery_l2_increase": "RecoveryPolicy.l2_increase",
    "train.loss_bound": "RecoveryPolicy.loss_bound",
    "train.energy_bound": "RecoveryPolicy.energy_bound",
    "train.gap_bound": "RecoveryPolicy.gap_bound",
}


def _moved(error):
  """A clearer error for a binding of a parameter in `MOVED`, or None."""
  for old, new in MOVED.items():
    configurable, param = old.split(".")
    if (f"Configurable '{configurable}' doesn't have a parameter named "
        f"'{param}'") in str(error):
      return ValueError(
          f"{old} is now {new}: the recovery settings are one "
          f"RecoveryPolicy (docs/training.md). Rename the binding.\n{error}")
  return None


class GinImportError(ValueError):
  """A .gin file or binding imports a module outside `ALLOWED_IMPORTS`."""


def config_dirs():
  """Folders that hold the shipped .gin files.

  The source tree's top-level gin/ (a checkout or an editable install) and
  ebmkit/configs (where a non-editable install puts the same files).
  """
  package = pathlib.Path(__file__).resolve().parent
  candidates = [package / "configs", package.parent / "gin"]
  return [str(p) for p in candidates if p.is_dir()]


def find_gin_file(name):
  """Resolves a .gin file given as a path or as a bare shipped name.

  Args:
    name: a path (absolute or relative to the working directory) or the name
      of a shipped config, with or without ".gin" ("jem_digits").

  Returns:
    An absolute path.

  Raises:
    FileNotFoundError: listing the folders searched and the shipped configs.
  """
  candidates = [name] if name.endswith(".gin") else [name, name + ".gin"]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
    for folder in config_dirs():
      path = os.path.join(folder, candidate)
      if os.path.isfile(path):
        return path
  raise FileNotFoundError(
      f"No gin file {name!r} in the working directory or in "
      f"{', '.join(config_dirs()) or '(no config folder found)'}. Shipped "
      f"configs: {', '.join(shipped_configs())}.")


def shipped_configs():
  """Names of the shipped experiment configs (top-level .gin files)."""
  names = set()
  for folder in config_dirs():
    names.update(f for f in os.listdir(folder) if f.endswith(".gin"))
  return sorted(names)


class _DropMissedLookups(logging.Filter):
  """gin's resource reader logs an error for every search-path miss
  ('Path not found: models/wrn.gin' in the working directory) before the
  config folders are tried; those misses are expected."""

  def filter(self, record):
    return not (record.pathname.endswith("resource_reader.py")
                and str(record.msg).startswith("Path not found"))


@contextlib.contextmanager
def _quiet_lookups():
  root, drop = logging.getLogger(), _DropMissedLookups()
  root.addFilter(drop)
  try:
    yield
  finally:
    root.removeFilter(drop)


class _Unevaluated(config_parser.ParserDelegate):
  """Parses references and macros without looking them up: only the
  statements' kinds matter to `check_imports`."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return None

  def macro(self, macro_name):
    return None


def _open_included(filename):
  """The file an `include` names, found as gin finds it (its search path
  and file readers), as (path, reader); None when gin would not find it
  either (gin then fails on it before reading it)."""
  prefixes = ([""] if os.path.isabs(filename)
              else compat.gin_search_path())
  for prefix in prefixes:
    candidate = os.path.join(prefix, filename)
    for reader, exists in compat.gin_file_readers():
      if exists(candidate):
        return candidate, reader
  return None


def _import_statements(source, where, seen):
  """Yields (ImportStatement, where) of gin text and the files it includes."""
  for statement in config_parser.ConfigParser(source, _Unevaluated()):
    if isinstance(statement, config_parser.ImportStatement):
      yield statement, where
    elif isinstance(statement, config_parser.IncludeStatement):
      found = _open_included(statement.filename)
      if found is None or found[0] in seen:
        continue
      seen.add(found[0])
      with found[1](found[0]) as f:
        yield from _import_statements(f, found[0], seen)


def _allowed(statement):
  if statement.is_from and statement.module.startswith("__gin__."):
    return True  # gin's own switches (dynamic_registration): no import.
  return statement.module.split(".")[0] in ALLOWED_IMPORTS


def check_imports(paths=(), gin_bindings=()):
  """Refuses `import`s outside `ALLOWED_IMPORTS`, before gin runs any.

  Reads the .gin files (resolved paths), the files they `include` (found
  on gin's search path, as gin will), and the bindings, with gin's own
  parser, which knows `import a.b`, `from a import b` and their `as` forms.

  Raises:
    GinImportError: naming each file, line and module, and the flag.
  """
  seen = set(paths)
  found = []
  for path in paths:
    with open(path) as f:
      found.extend(_import_statements(f, path, seen))
  if gin_bindings:
    found.extend(_import_statements("\n".join(gin_bindings),
                                    "--gin_bindings", seen))
  refused = [f"{where}, line {s.location.line_num}: {s.format()}"
             for s, where in found if not _allowed(s)]
  if refused:
    raise GinImportError(
        f"imports of modules outside ebmkit's allow-list "
        f"({', '.join(ALLOWED_IMPORTS)}) are refused:\n  "
        + "\n  ".join(refused)
        + "\nA .gin file's import runs that module's code, like a Python "
        "script. If you trust this config, pass --allow_gin_imports "
        "(from Python: gin_utils.parse(..., allow_imports=True)).")


def parse(gin_files=(), gin_bindings=(), finalize=True, allow_imports=False,
          strict_macros=False):
  """Parses gin files (by path or shipped name) and bindings.

  Shipped configs `include` their parts ("models/convnet.gin") relative to the
  config folders, so those folders are on gin's search path. Every ebmkit
  configurable is registered by `import ebmkit` (ebmkit.configurables).

  Args:
    gin_files: .gin files, paths or shipped names.
    gin_bindings: binding strings ("train.epochs = 5").
    finalize: lock the config after parsing.
    allow_imports: let the files import any module; by default only
      `ALLOWED_IMPORTS` (see `check_imports`).
    strict_macros: fail when a binding defines a macro nothing uses (a
      misspelt `EPOCH = 1`); the command line sets it. Code that applies one
      list of bindings to several configs leaves it off.

  Raises:
    GinImportError: an import outside `ALLOWED_IMPORTS` without
      `allow_imports`; nothing of the config has run.
    ValueError: a bad binding (see `validate_bindings`).
  """
  for folder in config_dirs():
    if folder not in compat.gin_search_path():
      gin.add_config_file_search_path(folder)
  paths = [find_gin_file(f) for f in gin_files]
  with _quiet_lookups():
    if not allow_imports:
      check_imports(paths, gin_bindings)
    try:
      gin.parse_config_files_and_bindings(paths, list(gin_bindings),
                                          finalize_config=finalize)
    except ValueError as e:
      moved = _moved(e)
      if moved is None:
        raise
      raise moved from e
  validate_bindings()
  if strict_macros:
    check_macros_used(gin_bindings)
  return paths


def _macro_references(value, found):
  """Adds the names of the macros `value` refers to (recursively)."""
  if isinstance(value, gin.config.ConfigurableReference):
    if value.configurable.name == "macro":
      found.add(value.scoped_selector.split("/")[0])
  elif isinstance(value, dict):
    for v in value.values():
      _macro_references(v, found)
  elif isinstance(value, (list, tuple, set)):
    for v in value:
      _macro_references(v, found)


def check_macros_used(gin_bindings):
  """Fails when a binding defines a macro that nothing in the config uses.

  `EPOCH = 1` (for EPOCHS) defines a new macro and changes nothing; gin
  accepts it silently.

  Raises:
    ValueError: naming the unused macro and the closest used one.
  """
  defined = []
  for binding in gin_bindings:
    match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", binding)
    if match:
      defined.append(match.group(1))
  if not defined:
    return
  used = set()
  for (scope, selector), params in compat.gin_bindings():
    del scope, selector
    for value in params.values():
      _macro_references(value, used)
  unused = [m for m in defined if m not in used]
  if unused:
    problems = []
    for name in unused:
      close = difflib.get_close_matches(name, sorted(used), n=1)
      problems.append(f"{name}" + (f" (did you mean {close[0]}?)" if close
                                   else ""))
    raise ValueError(
        f"The binding(s) define macro(s) that no part of the config uses: "
        f"{', '.join(problems)}. Macros this config reads: "
        f"{', '.join(sorted(used))}.")


# Keyword arguments every Keras layer/model/optimizer takes through **kwargs.
_KERAS_KWARGS = ("name", "dtype", "trainable")


def _parameters(target):
  """(named parameters, takes **kwargs) of a function or a class's __init__."""
  fn = target.__init__ if inspect.isclass(target) else target
  params = inspect.signature(fn).parameters.values()
  named = [p.name for p in params if p.name != "self" and p.kind not in (
      p.VAR_POSITIONAL, p.VAR_KEYWORD)]
  return named, any(p.kind == p.VAR_KEYWORD for p in params)


def validate_bindings():
  """Checks every binding's parameter against the real signature.

  gin itself rejects unknown configurables and parameters of plain
  functions, but a Keras class takes **kwargs, so a misspelt parameter
  (`ebmkit.LangevinSampler.stpes = 3`) would pass gin and fail, or be
  ignored, only when the object is built. This fails at once.

  Raises:
    ValueError: naming each bad binding, the valid parameters and the
      closest match.
  """
  problems = []
  for (scope, selector), params in compat.gin_bindings():
    if selector == "gin.macro":
      continue
    configurable = compat.gin_configurable(selector)
    if configurable is None:
      continue
    named, takes_kwargs = _parameters(configurable.wrapped)
    if not takes_kwargs:
      continue  # gin has checked these already.
    valid = named + [k for k in _KERAS_KWARGS if k not in named]
    for param in params:
      if param in valid:
        continue
      close = difflib.get_close_matches(param, valid, n=1)
      where = f"{scope}/" if scope else ""
      problems.append(
          f"'{where}{selector}.{param}': {configurable.name} has no parameter "
          f"{param!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
          + f"; its parameters are: {', '.join(valid)}.")
  if problems:
    raise ValueError("Bad gin binding(s), found before training started:\n  "
                     + "\n  ".join(problems))


def bound(name, default):
  """The value gin binds to `name` ("configurable.parameter"), macros and
  other references evaluated; `default` when unbound or None."""
  try:
    value = gin.query_parameter(name)
  except ValueError:
    return default
  if isinstance(value, gin.config.ConfigurableReference):
    value = value.scoped_configurable_fn()
  return default if value is None else value


def write_operative_config(workdir, complete=False):
  """Writes gin's operative config next to the checkpoints.

  Args:
    workdir: the workdir.
    complete: write every parsed binding (`gin.config_str()`), not only those
      of configurables called so far. Training needs it for the settings of
      the later modes (`evaluate.*` is not called while training), and a
      converted checkpoint for all of them: no data set was loaded, yet
      evaluation must know which (`load_dataset.name`).
  """
  return workdir_lib.write_text(
      workdir_lib.path(workdir, workdir_lib.OPERATIVE_CONFIG),
      gin.config_str() if complete else gin.operative_config_str())


def check_whole_number(name, value, low):
  """Fails unless `value` (the setting `name`) is a whole number >= `low`
  (a bool is not one)."""
  if isinstance(value, bool) or not isinstance(
      value, numbers.Integral) or value < low:  # NumPy's integers too.
    raise ValueError(f"{name} must be a whole number >= {low}, got "
                     f"{value!r}.")
