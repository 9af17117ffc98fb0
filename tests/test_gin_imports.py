"""A .gin file's imports are code: gin_utils.parse refuses those outside the
allow-list before gin runs any of them."""

import os
import re
import subprocess
import sys

import gin
import pytest

from ebmkit import gin_utils

MARKER_MODULE = "ebmkit_test_marker_module"


@pytest.fixture
def marker(tmp_path, monkeypatch):
  """A module on sys.path that writes a marker file when imported; returns
  the marker's path."""
  marker_file = tmp_path / "imported.txt"
  (tmp_path / f"{MARKER_MODULE}.py").write_text(
      f"open({str(marker_file)!r}, 'w').write('ran')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(sys.modules, MARKER_MODULE, raising=False)
  yield marker_file
  sys.modules.pop(MARKER_MODULE, None)


def write(path, text):
  path.write_text(text)
  return str(path)


def test_import_of_os_is_refused_with_file_line_and_flag(tmp_path):
  config = write(tmp_path / "evil.gin",
                 "import ebmkit\n\n# A comment.\nimport os\n")
  with pytest.raises(gin_utils.GinImportError) as error:
    gin_utils.parse([config])
  message = str(error.value)
  assert f"{config}, line 4: import os" in message
  assert "--allow_gin_imports" in message
  assert "allow_imports=True" in message
  assert "import ebmkit" not in message  # Allowed.


def test_refused_module_is_never_imported(tmp_path, marker):
  config = write(tmp_path / "evil.gin",
                 f"import ebmkit\nimport {MARKER_MODULE}\n")
  with pytest.raises(gin_utils.GinImportError, match=MARKER_MODULE):
    gin_utils.parse([config])
  assert not marker.exists()
  assert MARKER_MODULE not in sys.modules


def test_allow_imports_parses_and_imports(tmp_path, marker):
  config = write(tmp_path / "trusted.gin",
                 f"import ebmkit\nimport {MARKER_MODULE}\n")
  gin_utils.parse([config], allow_imports=True)
  assert marker.read_text() == "ran"


@pytest.mark.parametrize("statement", [
    "from os import path",
    "import os.path as p",
    "from subprocess import run as go",
    "import ebmkit_evil",  # Not ebmkit: the whole first name counts.
    "import __gin__.dynamic_registration",  # Only gin's `from` form is gin's.
])
def test_every_import_form_is_checked(tmp_path, statement):
  config = write(tmp_path / "evil.gin", f"import ebmkit\n{statement}\n")
  with pytest.raises(gin_utils.GinImportError,
                     match="line 2: " + re.escape(statement)):
    gin_utils.parse([config])


def test_imports_in_included_files_are_checked_first(tmp_path, marker,
                                                     monkeypatch):
  # The include is found through gin's search path, as gin would find it.
  parts = tmp_path / "parts"
  parts.mkdir()
  write(parts / "inner.gin", f"X = 1\n\n\nfrom {MARKER_MODULE} import y\n")
  write(parts / "middle.gin", "include 'parts/inner.gin'\n")
  config = write(tmp_path / "outer.gin",
                 "import ebmkit\ninclude 'parts/middle.gin'\n")
  monkeypatch.chdir(tmp_path)
  with pytest.raises(gin_utils.GinImportError) as error:
    gin_utils.parse([config])
  assert (f"parts/inner.gin, line 4: from {MARKER_MODULE} import y"
          in str(error.value))
  assert not marker.exists()


def test_imports_in_bindings_are_checked(marker):
  with pytest.raises(gin_utils.GinImportError,
                     match=f"--gin_bindings, line 2: import {MARKER_MODULE}"):
    gin_utils.parse(["jem_digits.gin"],
                    ["EPOCHS = 1", f"import {MARKER_MODULE}"])
  assert not marker.exists()


def test_gins_own_switch_is_allowed():
  gin_utils.check_imports(
      gin_bindings=["from __gin__ import dynamic_registration"])


def test_allowed_libraries_parse(tmp_path):
  config = write(tmp_path / "ok.gin", "\n".join([
      "import ebmkit", "import ebmkit.configurables", "from gin import config",
      "import keras", "import numpy as np", "from tensorflow import math",
      "include 'jem_digits.gin'", ""]))
  gin_utils.parse([config])
  assert gin.query_parameter("%EPOCHS") == 60


@pytest.mark.parametrize("name", gin_utils.shipped_configs())
def test_shipped_configs_parse(name):
  gin_utils.parse([name])


def test_operative_config_of_a_trained_workdir_parses(trained):
  gin_utils.parse([os.path.join(trained[0], "operative_config.gin")])


@pytest.mark.slow
def test_command_line_refuses_and_names_the_flag(tmp_path, marker):
  config = write(tmp_path / "evil.gin",
                 f"import ebmkit\nimport {MARKER_MODULE}\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(tmp_path)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
  proc = subprocess.run(
      [sys.executable, "-m", "ebmkit.run", f"--gin_file={config}",
       f"--workdir={tmp_path / 'run'}"],
      capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
  assert proc.returncode != 0
  assert "ebmkit: error:" in proc.stderr
  assert f"{config}, line 2: import {MARKER_MODULE}" in proc.stderr
  assert "--allow_gin_imports" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not marker.exists()
  assert not (tmp_path / "run").exists()
