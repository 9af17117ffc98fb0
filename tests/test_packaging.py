"""The package as users get it: a wheel installed into a fresh venv."""

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]


def _normalise(name):
  return re.sub(r"[-_.]+", "-", name).lower()


def _declared():
  return {_normalise(re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0])
          for d in _project()["dependencies"]}


def _third_party_imports():
  """{top-level module: first file importing it} over ebmkit/, stdlib and
  ebmkit itself left out."""
  found = {}
  for folder, _, files in os.walk(os.path.join(REPO, "ebmkit")):
    for name in sorted(files):
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      with open(path) as f:
        tree = ast.parse(f.read(), path)
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
          modules = [node.module]
        else:
          continue
        for module in modules:
          top = module.split(".")[0]
          if top != "ebmkit" and top not in sys.stdlib_module_names:
            found.setdefault(top, os.path.relpath(path, REPO))
  return found


def test_every_third_party_import_is_declared():
  providers = importlib.metadata.packages_distributions()
  declared = _declared()
  imports = _third_party_imports()
  assert {"tensorflow", "keras", "gin", "scipy"} <= set(imports)
  undeclared = {
      module: where for module, where in imports.items()
      if not {_normalise(d) for d in providers.get(module, [module])}
      & declared}
  assert not undeclared, (
      f"imported but not in pyproject.toml's dependencies: {undeclared}")


def test_the_distribution_name_is_not_the_taken_one():
  # "ebmkit" on the public package index is an unrelated PyTorch library
  # (0.16.0); the import name stays ebmkit.
  assert _project()["name"] == "ebmkit-keras"


def test_the_wheel_holds_every_module_and_config(tmp_path):
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                  "--no-build-isolation", "--wheel-dir", str(tmp_path), REPO],
                 check=True, capture_output=True, timeout=600)
  (wheel,) = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
  assert wheel.startswith("ebmkit_keras-"), wheel
  with zipfile.ZipFile(tmp_path / wheel) as z:
    names = set(z.namelist())
    metadata = z.read(next(n for n in names
                           if n.endswith(".dist-info/METADATA"))).decode()
  modules = {os.path.relpath(os.path.join(d, f), REPO).replace(os.sep, "/")
             for d, _, files in os.walk(os.path.join(REPO, "ebmkit"))
             for f in files if f.endswith(".py")}
  configs = {"ebmkit/configs/" + os.path.relpath(os.path.join(d, f),
                                                 os.path.join(REPO, "gin"))
             .replace(os.sep, "/")
             for d, _, files in os.walk(os.path.join(REPO, "gin"))
             for f in files if f.endswith(".gin")}
  presets = {os.path.relpath(os.path.join(d, f), REPO).replace(os.sep, "/")
             for d, _, files in os.walk(os.path.join(REPO, "ebmkit",
                                                     "preset_files"))
             for f in files}
  assert presets <= names, sorted(presets - names)
  assert len(modules) > 30 and len(configs) > 30 and len(presets) >= 5
  assert modules <= names, sorted(modules - names)
  assert configs <= names, sorted(configs - names)
  assert "Name: ebmkit-keras" in metadata
  requires = {_normalise(re.split(r"[\s\[<>=!~;(]", l[len("Requires-Dist: "):],
                                  maxsplit=1)[0])
              for l in metadata.splitlines() if l.startswith("Requires-Dist: ")
              and "extra ==" not in l}
  assert requires == _declared()


@pytest.mark.slow
def test_the_wheel_trains_evaluates_and_exports_outside_the_tree():
  proc = subprocess.run(
      ["bash", os.path.join(REPO, "tools", "check_wheel.sh")],
      capture_output=True, text=True, timeout=1200,
      env={**os.environ, "PYTHON": sys.executable})
  assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
  assert "check_wheel: OK" in proc.stdout
  # One epoch of JEM on the digits is far above chance (0.1).
  line = [l for l in proc.stdout.splitlines() if "test accuracy" in l][0]
  assert float(line.split()[5]) > 0.3, line
