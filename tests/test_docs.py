"""The docs: the site builds strictly, its strictness catches what it should,
and the README (a front door, not the manual) links only to what exists."""

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mkdocs_or_skip():
  try:
    import mkdocs  # pylint: disable=g-import-not-at-top,unused-import
    import mkdocstrings  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    if os.environ.get("CI") == "true":
      raise AssertionError(
          "mkdocs is missing under CI=true: install the test extra, "
          "pip install -e '.[test]'") from e
    pytest.skip(f"mkdocs not installed ({e}); pip install -e '.[test]'")


def _build(config, site_dir):
  return subprocess.run(
      [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
       config, "--site-dir", str(site_dir)],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_the_site_builds_strictly(tmp_path):
  _mkdocs_or_skip()
  result = _build(os.path.join(ROOT, "mkdocs.yml"), tmp_path / "site")
  assert result.returncode == 0, result.stderr[-3000:]
  api = (tmp_path / "site" / "api" / "index.html").read_text()
  # The API reference is generated from the docstrings, not written out.
  assert "Runs the chain from" in api  # LangevinSampler.call's docstring.
  benchmarks = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
  assert "ebmkit against the reference" in benchmarks  # BENCHMARKS.md's.


def test_a_broken_link_or_a_renamed_function_fails_the_build(tmp_path):
  _mkdocs_or_skip()
  docs = tmp_path / "docs"
  shutil.copytree(os.path.join(ROOT, "docs"), docs)
  with open(os.path.join(ROOT, "mkdocs.yml")) as f:
    config = f.read().replace("docs_dir: docs", f"docs_dir: {docs}")
  config_path = tmp_path / "mkdocs.yml"
  config_path.write_text(config)
  with open(docs / "maths.md", "a") as f:
    f.write("\nSee [the old page](no_such_page.md).\n")
  result = _build(str(config_path), tmp_path / "site")
  assert result.returncode != 0
  assert "no_such_page.md" in result.stderr
  (docs / "maths.md").write_text(
      (docs / "maths.md").read_text().replace("[the old page]", "the old "))
  with open(docs / "api.md", "a") as f:
    f.write("\n::: ebmkit.models.sampling.NoSuchSampler\n")
  result = _build(str(config_path), tmp_path / "site2")
  assert result.returncode != 0
  assert "NoSuchSampler" in result.stderr


def _relative_links(path):
  with open(path) as f:
    text = f.read()
  for target in re.findall(r"\]\(([^)\s]+)\)", text):
    if re.match(r"[a-z]+:", target) or target.startswith("#"):
      continue
    yield target.split("#")[0]


def test_every_readme_link_exists():
  readme = os.path.join(ROOT, "README.md")
  links = list(_relative_links(readme))
  assert len(links) >= 10  # The documentation table at least.
  missing = [t for t in links if not os.path.exists(os.path.join(ROOT, t))]
  assert not missing, f"README.md links to missing files: {missing}"


def test_the_readme_is_a_front_door():
  with open(os.path.join(ROOT, "README.md")) as f:
    lines = f.read().splitlines()
  assert len(lines) <= 200, (
      f"README.md has {len(lines)} lines; move details to a docs/ page.")
  # The two set-up commands CI runs (.ci/run) stay in the README.
  assert "pip install -e . && python -m ebmkit.run" in lines
  assert "pip install -e '.[test]' && pytest" in lines
