"""Shipped experiment configs bind exactly what the snapshot says.

Each top-level gin/*.gin is parsed on its own and reduced to its bindings
after macros: {"scope/selector.param": value}, macros (`%EPOCHS`) evaluated to
their final value, references shown as "@selector()" (or "@selector" when not
called). Selectors are canonicalised through gin's registry to the minimal
selector that names the configurable unambiguously (`EnergyModel.px_weight`
and `ebmkit.EnergyModel.px_weight` are the same key, "EnergyModel.px_weight"),
not to the full module path: moving `get_model` from ebmkit.train to another
module does not change what a config means. The macro definitions
themselves are left out: only the values the bindings receive count, so the
files may be rearranged (parts, includes, shared blocks) as long as every
experiment still means the same thing.

Next to the values, the snapshot keeps which bindings each macro reaches
("macro_uses": {"EPOCHS": ["train.epochs"]}), so that a refactor which inlines
a value people override (`EPOCHS = 200` on the command line) also fails.

The snapshot is tests/data/config_bindings.json. It is a reference, not a
mirror: regenerate it only when an experiment is meant to change (or one is
added or removed), and review its diff (a run with the variable set writes the
snapshot first, so it compares nothing):

    EBMKIT_WRITE_CONFIG_BINDINGS=1 python -m pytest -q tests/test_gin_bindings.py
    # or: python tests/test_gin_bindings.py
"""

import json
import os

import gin
import pytest

from ebmkit import gin_utils

SNAPSHOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                        "config_bindings.json")
REGENERATE = "EBMKIT_WRITE_CONFIG_BINDINGS"
EXPERIMENTS = [c for c in gin_utils.shipped_configs() if "/" not in c]


def _canonical_selector(selector):
  """The shortest selector that names `selector`'s configurable unambiguously."""
  registry = gin.config._REGISTRY  # pylint: disable=protected-access
  configurable = registry.get_match(selector)
  if configurable is None:
    return selector
  return registry.minimal_selector(configurable.selector)


def _is_macro(ref):
  return ref.configurable.wrapped in (gin.config.macro,
                                      gin.config._retrieve_constant)  # pylint: disable=protected-access


def _format(value, used_macros):
  """A stable string for a bound value, macros evaluated.

  Python literals keep their repr (so 1 and 1.0, (1,) and [1] differ);
  references become "@scope/selector()". Adds every macro met on the way
  (also inside other macros) to `used_macros`.
  """
  if isinstance(value, gin.config.ConfigurableReference):
    if _is_macro(value) and value.evaluate:
      name = "/".join(value.scopes)
      used_macros.add(name)
      if value.configurable.wrapped is gin.config.macro:
        config = gin.config._CONFIG  # pylint: disable=protected-access
        if value.config_key not in config:
          raise ValueError(f"macro %{name} is used but never defined")
        return _format(config[value.config_key]["value"], used_macros)
      return _format(gin.config._CONSTANTS[name], used_macros)  # pylint: disable=protected-access
    selector = "/".join(
        [*value.scopes, _canonical_selector(value.configurable.selector)])
    return "@" + selector + ("()" if value.evaluate else "")
  if isinstance(value, tuple):
    items = [_format(v, used_macros) for v in value]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
  if isinstance(value, list):
    return "[" + ", ".join(_format(v, used_macros) for v in value) + "]"
  if isinstance(value, dict):
    items = sorted((_format(k, used_macros), _format(v, used_macros))
                   for k, v in value.items())
    return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
  return repr(value)


def config_bindings(name, extra_bindings=()):
  """Parses one shipped config; returns its bindings and macro uses.

  Args:
    name: a shipped config ("jem_digits.gin").
    extra_bindings: gin bindings parsed after it.

  Returns:
    {"bindings": {"scope/selector.param": formatted value},
     "macro_uses": {"MACRO": sorted binding keys whose value it feeds}}.
  """
  gin.clear_config()
  try:
    gin_utils.parse([name], list(extra_bindings), finalize=False)
    bindings, macro_uses = {}, {}
    for (scope, selector), params in gin.config._CONFIG.items():  # pylint: disable=protected-access
      if selector == "gin.macro":
        continue
      prefix = (scope + "/" if scope else "") + _canonical_selector(selector)
      for param, value in params.items():
        key = f"{prefix}.{param}"
        used = set()
        bindings[key] = _format(value, used)
        for macro in used:
          macro_uses.setdefault(macro, []).append(key)
  finally:
    gin.clear_config()
  return {"bindings": dict(sorted(bindings.items())),
          "macro_uses": {m: sorted(k) for m, k in sorted(macro_uses.items())}}


def all_config_bindings():
  return {name: config_bindings(name) for name in EXPERIMENTS}


def write_snapshot(path=SNAPSHOT):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(all_config_bindings(), f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(path + ".tmp", path)


@pytest.fixture(name="snapshot", scope="module")
def fixture_snapshot():
  if os.environ.get(REGENERATE):
    write_snapshot()
  with open(SNAPSHOT) as f:
    return json.load(f)


def _diff(expected, actual):
  lines = []
  for key in sorted(set(expected) | set(actual)):
    if key not in actual:
      lines.append(f"  - {key} = {expected[key]}   (gone)")
    elif key not in expected:
      lines.append(f"  + {key} = {actual[key]}   (new)")
    elif expected[key] != actual[key]:
      lines.append(f"  ~ {key}: {expected[key]} -> {actual[key]}")
  return lines


def test_snapshot_lists_exactly_the_shipped_configs(snapshot):
  missing = sorted(set(EXPERIMENTS) - set(snapshot))
  stale = sorted(set(snapshot) - set(EXPERIMENTS))
  assert not missing and not stale, (
      f"Shipped configs without a snapshot: {missing}; snapshot entries for "
      f"configs no longer shipped: {stale}. If intended, regenerate with "
      f"{REGENERATE}=1 (see this module's docstring).")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_config_binds_what_the_snapshot_says(name, snapshot):
  assert name in snapshot, f"{name} has no snapshot entry; see the docstring."
  actual = config_bindings(name)
  problems = []
  for part in ("bindings", "macro_uses"):
    lines = _diff(snapshot[name][part], actual[part])
    if lines:
      problems.append(f"{part} of {name} differ from {SNAPSHOT} "
                      "(- snapshot, + now):\n" + "\n".join(lines))
  assert not problems, "\n".join(problems)


def test_snapshot_catches_a_changed_binding(snapshot):
  """The comparison is not vacuous: changed values and macros show up."""
  name = "jem_digits.gin"
  changed = config_bindings(name, ["train.epochs = 61",
                                   "EnergyModel.px_weight = 0.5"])
  assert _diff(snapshot[name]["bindings"], changed["bindings"]) == [
      "  ~ EnergyModel.px_weight: 1.0 -> 0.5",
      "  ~ train.epochs: 60 -> 61"]
  # train.epochs no longer reads %EPOCHS, so EPOCHS reaches nothing.
  assert _diff(snapshot[name]["macro_uses"], changed["macro_uses"]) == [
      "  - EPOCHS = ['train.epochs']   (gone)"]


if __name__ == "__main__":
  write_snapshot()
  print(f"Wrote {SNAPSHOT} for {len(EXPERIMENTS)} configs.")
