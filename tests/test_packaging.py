"""The package as users get it: a wheel installed into a fresh venv."""

import os
import subprocess
import sys

import pytest
import setuptools

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_subpackage_is_discovered_for_the_wheel():
  on_disk = {os.path.relpath(d, REPO).replace(os.sep, ".")
             for d, _, files in os.walk(os.path.join(REPO, "ebmkit"))
             if "__init__.py" in files}
  found = set(setuptools.find_packages(REPO, include=["ebmkit", "ebmkit.*"]))
  assert on_disk <= found, on_disk - found
  assert "ebmkit.evaluation" in found


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
