"""Finding and parsing .gin files, and saving the operative config."""

import contextlib
import difflib
import inspect
import logging
import os
import pathlib

import gin

from ebmkit import workdir as workdir_lib

DEFAULT_GIN_FILE = "jem_digits.gin"


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


def parse(gin_files=(), gin_bindings=(), finalize=True):
  """Parses gin files (by path or shipped name) and bindings.

  Shipped configs `include` their parts ("models/convnet.gin") relative to the
  config folders, so those folders are on gin's search path. Every ebmkit
  configurable is registered by `import ebmkit` (ebmkit.configurables).
  """
  for folder in config_dirs():
    if folder not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
      gin.add_config_file_search_path(folder)
  paths = [find_gin_file(f) for f in gin_files]
  with _quiet_lookups():
    gin.parse_config_files_and_bindings(paths, list(gin_bindings),
                                        finalize_config=finalize)
  validate_bindings()
  return paths


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
  for (scope, selector), params in gin.config._CONFIG.items():  # pylint: disable=protected-access
    if selector == "gin.macro":
      continue
    configurable = gin.config._REGISTRY.get_match(selector)  # pylint: disable=protected-access
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
      of configurables called so far. A converted checkpoint needs it: no data
      set was loaded, yet evaluation must know which (`load_dataset.name`).
  """
  return workdir_lib.write_text(
      workdir_lib.path(workdir, workdir_lib.OPERATIVE_CONFIG),
      gin.config_str() if complete else gin.operative_config_str())
