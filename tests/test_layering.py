"""The package's import graph: no cycles, and imports go one way (layers →
model → training/evaluation/serving → configurables → the command line)."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "ebmkit")

# A module may import only modules of a lower rank. A new module must be
# placed here, which is the point: its place in the layering is a decision.
RANKS = {
    # The private Keras/TensorFlow/TFDS/gin APIs, under everything.
    "ebmkit.compat": -1,
    # Foundations: no ebmkit imports but compat.
    "ebmkit.workdir": 0, "ebmkit.validation": 0, "ebmkit.images": 0,
    "ebmkit.schedules": 0, "ebmkit.replicas": 0, "ebmkit.torch_checkpoint": 0,
    "ebmkit.progress": 0,
    "ebmkit.datasets.sklearn_digits": 0, "ebmkit.datasets.mixture": 0,
    "ebmkit.datasets.idx": 0,
    # Layers and file formats.
    "ebmkit.datasets": 1, "ebmkit.gin_utils": 1, "ebmkit.energy": 1, "ebmkit.buffer": 1,
    "ebmkit.sampling": 1, "ebmkit.backbones": 1, "ebmkit.checkpoints": 1,
    "ebmkit.gan_networks": 1, "ebmkit.ddls": 1,
    # The objective's terms, then what the model reports to Keras.
    "ebmkit.objective": 1.5, "ebmkit.model_metrics": 1.6,
    # The model.
    "ebmkit.models": 2, "ebmkit.gan": 2,
    # Data, experiment assembly, training parts, the four uses.
    "ebmkit.data": 3, "ebmkit.callbacks": 3, "ebmkit.recovery": 3,
    "ebmkit.inference": 3, "ebmkit.distribute": 3,
    "ebmkit.experiment": 4, "ebmkit.worker_loop": 4,
    "ebmkit.evaluation": 4, "ebmkit.evaluation.metrics": 4,
    "ebmkit.evaluation.plots": 4, "ebmkit.evaluation.judge": 4,
    "ebmkit.evaluation.summaries": 4,
    "ebmkit.evaluation.ood": 4, "ebmkit.evaluation.adversarial": 4,
    # Markdown of GAN evaluations (asks nothing), below render.
    "ebmkit.evaluation.gan_report": 3.9,
    # Markdown of evaluation dicts (asks only the workdir), below evaluate.
    "ebmkit.evaluation.render": 4,
    # What the evaluation's parts share, then the parts (one module each).
    "ebmkit.evaluation.common": 4.5,
    "ebmkit.evaluation.classification": 4.7,
    "ebmkit.evaluation.ood_detection": 4.7,
    "ebmkit.evaluation.robustness": 4.7,
    "ebmkit.evaluation.sample_quality": 4.7,
    "ebmkit.evaluation.gan_eval": 4.7,
    # Training, evaluation, serving, conversion.
    "ebmkit.train": 5, "ebmkit.serving": 5, "ebmkit.convert": 5,
    "ebmkit.evaluation.evaluate": 5,
    # Registration of every configurable, then the entry points.
    "ebmkit.configurables": 8, "ebmkit.run": 9, "ebmkit": 9,
}


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


def test_every_module_has_a_place_in_the_layering():
  assert set(modules()) == set(RANKS), set(modules()) ^ set(RANKS)


@pytest.mark.parametrize("module", sorted(RANKS))
def test_imports_go_one_way(module):
  known = modules()
  if module not in known:
    pytest.skip(f"{module} is gone; the test above names it.")
  upward = sorted(m for m in imports(known[module], known)
                  if RANKS.get(m, 99) >= RANKS[module] and m != module)
  assert not upward, (f"{module} (rank {RANKS[module]}) imports "
                      f"{upward}, of rank >= its own.")
