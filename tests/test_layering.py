"""The package's import graph: no cycles, and imports go one way, from the
foundations up through the model, training, evaluation and serving to the
command line. Ranks are per sub-package (a folder of ebmkit/) or top-level
module; inside a sub-package its modules may import each other, without cycles."""

import ast
import os
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "ebmkit")

# A unit (sub-package or top-level module) may import only units of a lower
# rank. A new unit must be placed here, which is the point: its place in the
# layering is a decision.
RANKS = {
    # The private Keras/TensorFlow/TFDS/gin APIs, under everything.
    "ebmkit.compat": 0,
    # What everything shares: the workdir's layout, progress display, images.
    "ebmkit.workdir": 1, "ebmkit.progress": 1, "ebmkit.images": 1,
    # Finding, checking and parsing .gin files; the preset folder's format
    # (every model kind writes one: `model.save_to_preset`).
    "ebmkit.gin_utils": 2, "ebmkit.preset_format": 2,
    # Networks, and the energy model with its parts.
    "ebmkit.networks": 3, "ebmkit.models": 3,
    # Data pipelines (they build the model's input dicts); GANs and DDLS.
    "ebmkit.data": 4, "ebmkit.gan": 4,
    # tf.distribute's strategies and loop.
    "ebmkit.distribute": 5,
    # Training: the runner, callbacks, checkpoints, recovery, assembly.
    "ebmkit.training": 6,
    # Evaluation and conversion use trained models.
    "ebmkit.evaluation": 7, "ebmkit.convert": 7,
    # Export serves the model and evaluation's OOD threshold; presets.
    "ebmkit.serving": 8, "ebmkit.presets": 8,
    # Registration of every configurable, then the entry points.
    "ebmkit.configurables": 9, "ebmkit.run": 10, "ebmkit": 10,
}


def unit(module):
  """The ranked unit a module belongs to: its sub-package or itself."""
  parts = module.split(".")
  return ".".join(parts[:2])


def modules():
  found = {}
  for root, _, files in os.walk(PACKAGE):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PACKAGE))
        name = rel[:-3].replace(os.sep, ".")
        found[name[:-len(".__init__")] if name.endswith(".__init__")
              else name] = os.path.join(root, f)
  return found


def imports(path, known):
  """The ebmkit modules a file imports (anywhere in it, functions too)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.split(".")[0] == "ebmkit")
    elif isinstance(node, ast.ImportFrom) and node.module and (
        node.module.split(".")[0] == "ebmkit"):
      for a in node.names:
        full = f"{node.module}.{a.name}"
        out.add(full if full in known else node.module)
  return out


def test_ranks_are_whole_numbers():
  assert all(isinstance(r, int) for r in RANKS.values()), RANKS


def test_every_unit_has_a_place_in_the_layering():
  units = {unit(m) for m in modules()}
  assert units == set(RANKS), units ^ set(RANKS)


@pytest.mark.parametrize("name", sorted(RANKS))
def test_imports_go_one_way(name):
  known = modules()
  mine = [m for m in known if unit(m) == name]
  if not mine:
    pytest.skip(f"{name} is gone; the test above names it.")
  upward = sorted({f"{m} imports {i}" for m in mine
                   for i in imports(known[m], known)
                   if unit(i) != name and RANKS.get(unit(i), 99) >= RANKS[name]})
  assert not upward, (f"{name} (rank {RANKS[name]}): {upward}, of rank >= "
                      "its own.")


def test_no_import_cycles():
  known = modules()
  graph = {m: sorted(imports(p, known) - {m}) for m, p in known.items()}
  state = {}

  def visit(m, path):
    if state.get(m) == "done":
      return
    assert state.get(m) != "open", f"import cycle: {' -> '.join(path + [m])}"
    state[m] = "open"
    for i in graph.get(m, ()):
      visit(i, path + [m])
    state[m] = "done"

  for m in sorted(graph):
    visit(m, [])


def test_the_cycle_check_can_fail(tmp_path, monkeypatch):
  """Two modules importing each other are found."""
  pkg = tmp_path / "ebmkit"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("")
  (pkg / "sub" / "a.py").write_text("from ebmkit.sub import b\n")
  (pkg / "sub" / "b.py").write_text("from ebmkit.sub import a\n")
  monkeypatch.setattr(sys.modules[__name__], "PACKAGE", str(pkg))
  with pytest.raises(AssertionError, match="import cycle"):
    test_no_import_cycles()


# -- function length ------------------------------------------------------------

MAX_FUNCTION_LINES = 80  # Code lines, the docstring not counted.
LONG_REASON = "# Long:"  # On the line above a def: why it may be longer.


def long_functions(source):
  """(name, code lines) of each function over MAX_FUNCTION_LINES without a
  `# Long:` reason on the line above its def."""
  lines = source.split("\n")
  found = []
  for node in ast.walk(ast.parse(source)):
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      continue
    doc = 0
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(
        getattr(first, "value", None), ast.Constant) and isinstance(
            first.value.value, str):
      doc = first.end_lineno - first.lineno + 1
    first_line = min([node.lineno] + [d.lineno for d in node.decorator_list])
    length = node.end_lineno - node.lineno + 1 - doc
    above = lines[first_line - 2].strip() if first_line >= 2 else ""
    if length > MAX_FUNCTION_LINES and not above.startswith(LONG_REASON):
      found.append((node.name, length))
  return found


def test_no_function_is_longer_than_80_lines_without_a_reason():
  too_long = {}
  for name, path in modules().items():
    with open(path) as f:
      for fn, length in long_functions(f.read()):
        too_long[f"{name}.{fn}"] = length
  assert not too_long, (
      f"Functions over {MAX_FUNCTION_LINES} code lines: {too_long}. Split "
      f"them into named steps, or write why on the line above the def "
      f"('{LONG_REASON} ...').")


def test_the_length_check_counts_code_not_docstrings():
  doc = '  """' + "\n".join(["doc"] * 50) + '"""\n'
  body = lambda n: "\n".join(f"  x{i} = {i}" for i in range(n))
  fits = f"def f():\n{doc}{body(MAX_FUNCTION_LINES - 1)}\n"  # def + 79
  over = f"def g():\n{doc}{body(MAX_FUNCTION_LINES)}\n"      # def + 80
  reasoned = f"{LONG_REASON} one table, read top to bottom.\n{over}"
  assert long_functions(fits) == []
  assert long_functions(over) == [("g", MAX_FUNCTION_LINES + 1)]
  assert long_functions(reasoned) == []
