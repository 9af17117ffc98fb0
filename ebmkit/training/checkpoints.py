"""Checkpoints of the whole training state: weights, optimizer, buffer, RNG."""

import os
import re
import shutil
import time

from absl import logging
import keras
import tensorflow as tf

from ebmkit import compat
from ebmkit import workdir as workdir_lib


def _by_position(variables):
  """Variables keyed by their position: the layout of checkpoints written
  before variables were named (`_named`), still read (`_restore_one`)."""
  return {f"v{i:04d}": v for i, v in enumerate(variables)}


def _snake(name):
  """Keras' automatic layer-name base of a class name (EnergyModel →
  energy_model)."""
  name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
  return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _stable(path, bases):
  """A Keras path without the per-process counters of automatic names
  (`energy_model_1/replay_buffer/samples` → `energy_model/...`): a component
  that is an automatic base (`bases`) plus `_<n>` loses the `_<n>`."""
  parts = []
  for part in path.split("/"):
    match = re.fullmatch(r"(.+)_\d+", part)
    parts.append(match.group(1) if match and match.group(1) in bases
                 else part)
  return "/".join(parts)


def _nest(flat):
  """{"a/b/c": v} → {"a": {"b": {"c": v}}}: checkpoint keys that read
  `a/b/c/.ATTRIBUTES/VARIABLE_VALUE`."""
  tree = {}
  for name, value in flat.items():
    node = tree
    *folders, leaf = name.split("/")
    for folder in folders:
      node = node.setdefault(folder, {})
    node[leaf] = value
  return tree


def _unique(name, taken):
  candidate, k = name, 2
  while candidate in taken or any(t.startswith(candidate + "/")
                                  for t in taken):
    candidate, k = f"{name}_{k}", k + 1
  return candidate


def _named(model, optimizers):
  """Every variable of `model` and `optimizers` by a name a person can read
  and that does not depend on the process or on where a layer was built:
  `<attribute>/<path inside that layer>` for the model's layer attributes
  (`replay_buffer/samples`, `backbone/conv0/kernel`,
  `sampler/seed_generator`), automatic-name counters dropped; an
  optimizer's slot variables under the variable they belong to
  (`backbone/conv0/kernel/momentum`).

  Keras 3 models do not expose all their variables as checkpoint children
  (backbone weights would be saved only through the optimizer's
  references), so ebmkit lists them explicitly.

  Returns:
    ({name: variable} of the model, [{name: variable} per optimizer]).
  """
  children = [(a, l) for a, l in vars(model).items()
              if not a.startswith("_") and isinstance(l, keras.layers.Layer)
              and l is not model]
  layers = [model] + compat.flatten_layers(model)
  bases = {"seed_generator"} | {_snake(type(l).__name__) for l in layers}
  bases |= {_snake(type(o).__name__) for o in optimizers}

  def inside(path, name):
    """`path` after its component `name` (the layer's own), counters
    dropped; all of it when the layer was built outside that scope."""
    parts = path.split("/")
    if name in parts:
      parts = parts[parts.index(name) + 1:]
    return _stable("/".join(parts), bases)

  owner = {}  # id(variable) → name.
  for attr, child in children:
    for layer in [child] + compat.flatten_layers(child):
      where = attr if layer is child else (
          f"{attr}/{inside(layer.path or layer.name, child.name)}")
      for a, value in vars(layer).items():
        if isinstance(value, keras.random.SeedGenerator):
          owner.setdefault(id(value.state), f"{where}/{a}")
    for v in child.variables:
      owner.setdefault(id(v), f"{attr}/{inside(v.path, child.name)}")
  for a, value in vars(model).items():
    if isinstance(value, keras.random.SeedGenerator):
      owner.setdefault(id(value.state), a)
  model_names, by_id = {}, {}
  for v in model.variables:
    name = _unique(owner.get(id(v)) or inside(v.path, model.name),
                   model_names)
    model_names[name] = v
    by_id[v.path.replace("/", "_")] = name
  prefixes = sorted(by_id, key=len, reverse=True)
  optimizer_names = []
  for optimizer in optimizers:
    names = {}
    for v in optimizer.variables:
      ref = next((p for p in prefixes if v.name.startswith(p + "_")), None)
      name = f"{by_id[ref]}/{v.name[len(ref) + 1:]}" if ref else v.name
      names[_unique(name, names)] = v
    optimizer_names.append(names)
  return model_names, optimizer_names


def _optimizers(model, with_optimizer):
  return ([model.optimizer] + list(model.other_optimizers)
          if with_optimizer else [])


def variables_by_name(model, with_optimizer=True):
  """{name: variable} under the names checkpoints give them ("model/
  replay_buffer/samples", "optimizer/backbone/conv0/kernel/momentum"; a
  checkpoint's keys are these plus "/.ATTRIBUTES/VARIABLE_VALUE")."""
  model_names, optimizer_names = _named(model,
                                        _optimizers(model, with_optimizer))
  found = {f"model/{n}": v for n, v in model_names.items()}
  for i, names in enumerate(optimizer_names):
    prefix = "optimizer" if i == 0 else f"optimizer_{i}"
    found.update({f"{prefix}/{n}": v for n, v in names.items()})
  return found


def make_checkpoint(model, with_optimizer=True, layout="named"):
  """A `tf.train.Checkpoint` of every model (and optimizer) variable.

  Args:
    model: a built model (with its optimizer(s) built, for
      `with_optimizer`).
    with_optimizer: include the optimizer state (and a GAN's other
      optimizers').
    layout: "named" (`_named`: what ebmkit writes) or "positional" (the
      variables numbered in order, as checkpoints written before 2026-12
      hold them; read only).
  """
  optimizers = _optimizers(model, with_optimizer)
  if layout == "positional":
    parts = {"model": _by_position(model.variables)}
    named = [_by_position(o.variables) for o in optimizers]
  else:
    model_names, named = _named(model, optimizers)
    parts = {"model": _nest(model_names)}
    named = [_nest(n) for n in named]
  for i, variables in enumerate(named):
    parts["optimizer" if i == 0 else f"optimizer_{i}"] = variables
  return tf.train.Checkpoint(**parts)


class UnreadableCheckpointsError(RuntimeError):
  """Checkpoints exist but none fits the configured model."""


def _step(path):
  return int(os.path.basename(path).rsplit("-", 1)[1])


def checkpoints_on_disk(workdir):
  """Every complete checkpoint in the workdir (has its .index), by step."""
  folder = workdir_lib.checkpoints_dir(workdir)
  if not os.path.isdir(folder):
    return []
  found = [os.path.join(folder, m.group(1)) for f in os.listdir(folder)
           if (m := re.fullmatch(r"(ckpt-\d+)\.index", f))]
  return sorted(found, key=_step)


def remove_orphans(workdir):
  """Deletes what interrupted saves leave behind: `ckpt-N_temp/` folders and
  `checkpoint.tmp*` files (never a complete checkpoint). Returns them."""
  folder = workdir_lib.checkpoints_dir(workdir)
  if not os.path.isdir(folder):
    return []
  orphans = [os.path.join(folder, f) for f in os.listdir(folder)
             if re.fullmatch(r"ckpt-\d+_temp.*", f) or f.startswith(
                 "checkpoint.tmp") or f.endswith(".tmp")]
  for orphan in orphans:
    if os.path.isdir(orphan):
      shutil.rmtree(orphan, ignore_errors=True)
    else:
      os.remove(orphan)
  return orphans


def make_manager(model, workdir):
  """A `tf.train.CheckpointManager` for `model` (built, with an optimizer).

  Writes are atomic: a checkpoint becomes visible only once complete. Files
  go to `workdir/checkpoints/ckpt-<step>`. The manager itself deletes
  nothing (`prune` rotates), and it adopts complete checkpoints that its
  index file does not list (a lost or stale `checkpoint` file), so that no
  save can overwrite them.
  """
  if model.optimizer is None:
    raise ValueError("Compile the model with an optimizer before making its "
                     "checkpoint manager.")
  if not model.optimizer.built:
    model.optimizer.build(model.trainable_variables)
  manager = tf.train.CheckpointManager(
      make_checkpoint(model), workdir_lib.checkpoints_dir(workdir),
      max_to_keep=None)
  on_disk = checkpoints_on_disk(workdir)
  names = {os.path.basename(p) for p in on_disk}
  listed = {os.path.basename(p) for p in manager.checkpoints}
  unlisted = [p for p in on_disk if os.path.basename(p) not in listed]
  gone = [p for p in manager.checkpoints if os.path.basename(p) not in names]
  if unlisted:
    logging.warning("Adopting checkpoints missing from the index file: %s.",
                    ", ".join(os.path.basename(p) for p in unlisted))
  if gone:
    logging.warning("The index file lists checkpoints whose files are gone: "
                    "%s.", ", ".join(os.path.basename(p) for p in gone))
  if unlisted or gone:
    _set_checkpoints(manager, on_disk)
  return manager


def _set_checkpoints(manager, paths):
  """Makes `manager` list exactly `paths` (oldest first) and writes its index.

  tf.train.CheckpointManager has no public way to adopt or forget a
  checkpoint (`compat.set_manager_checkpoints`).
  """
  compat.set_manager_checkpoints(manager, paths, time.time())


def _delete(path):
  for f in tf.io.gfile.glob(path + ".*"):
    tf.io.gfile.remove(f)


def verified(workdir):
  """Names of the checkpoints whose weights were seen to give a finite,
  in-bound training step (rollback targets)."""
  return set(workdir_lib.read_json(_verified_file(workdir), []))


def _verified_file(workdir):
  return workdir_lib.path(workdir, workdir_lib.CHECKPOINTS,
                          workdir_lib.VERIFIED)


def _write_verified(workdir, names):
  workdir_lib.write_json(_verified_file(workdir), sorted(names, key=lambda n:
                                                         int(n[5:])))


def mark_verified(workdir, path):
  _write_verified(workdir, verified(workdir) | {os.path.basename(path)})


def _forget_verified(workdir, paths):
  """Drops deleted checkpoints from the verified list, so that a later
  checkpoint of the same step (training again after a rollback) is not taken
  for verified before its own next step has passed the guard."""
  names = verified(workdir)
  gone = names & {os.path.basename(p) for p in paths}
  if gone:
    _write_verified(workdir, names - gone)


def newest_verified(manager, workdir):
  good = verified_on_disk(manager, workdir)
  return good[-1] if good else None


def verified_on_disk(manager, workdir):
  """The verified checkpoints the manager holds, oldest first."""
  names = verified(workdir)
  return [p for p in manager.checkpoints if os.path.basename(p) in names]


def rollback_target(paths, verified_paths, previous=None):
  """Where a recovery rolls back to.

  The newest verified checkpoint, except when it is `previous`, the target
  of this run's last rollback, and training diverged again from it before
  any newer checkpoint was verified: a state whose next step passed the
  guard can still be on its way to diverging. Then the rollback steps
  further back, to the newest verified checkpoint older than `previous`
  and, when there is none, to the oldest checkpoint (the state training
  started from); from there it goes no further.

  Args:
    paths: the checkpoints on disk, oldest first.
    verified_paths: those of them verified, oldest first.
    previous: the last rollback's target in this run, or None.

  Returns:
    (target path, whether it stepped back past the newest verified one).
  """
  if not paths:
    raise ValueError("No checkpoint to roll back to.")
  newest = verified_paths[-1] if verified_paths else None
  if newest is None:
    return paths[0], False
  if previous is None or newest != previous:
    return newest, False
  older = [p for p in verified_paths if paths.index(p) < paths.index(newest)]
  if older:
    return older[-1], True
  return paths[0], paths[0] != newest


def prune(manager, workdir, keep, protect_anchor=False):
  """Keeps the newest `keep` checkpoints and the two newest verified ones
  (the second is where a rollback steps back to when the newest proves
  ruined: `rollback_target`), and, with `protect_anchor`, the oldest (ckpt-0
  while recoveries are possible); deletes the others."""
  paths = manager.checkpoints
  kept = set(paths[-keep:]) if keep else set(paths)
  kept.update(verified_on_disk(manager, workdir)[-2:])
  if protect_anchor and paths:
    kept.add(paths[0])
  doomed = [p for p in paths if p not in kept]
  for p in doomed:
    _delete(p)
  if doomed:
    _set_checkpoints(manager, [p for p in paths if p in kept])
    _forget_verified(workdir, doomed)
  return doomed


def discard_newer_than(manager, path, workdir=None):
  """Deletes the checkpoints newer than `path` (known to have diverged), and
  with `workdir` their entries in the verified list."""
  paths = manager.checkpoints
  newer = paths[paths.index(path) + 1:]
  for p in newer:
    _delete(p)
  if newer:
    _set_checkpoints(manager, paths[:paths.index(path) + 1])
    if workdir is not None:
      _forget_verified(workdir, newer)
  return newer


def _layout(path):
  """"positional" for a checkpoint written before variables were named."""
  names = [n for n, _ in tf.train.list_variables(path)]
  return ("positional" if any(re.match(r"model/v\d{4}/", n) for n in names)
          else "named")


def _restore_one(model, checkpoint, path):
  """Restores `path`; falls back to the model alone when the file has no
  (matching) optimizer state. Returns None, or raises."""
  layout = _layout(path)
  if layout != "named":
    checkpoint = make_checkpoint(model, layout=layout)
  try:
    checkpoint.restore(path).assert_existing_objects_matched()
  except Exception:  # pylint: disable=broad-except
    # A checkpoint without (matching) optimizer state, e.g. one converted
    # from the reference, still gives the model; if this fails too, the
    # file does not fit (its error is the one to report).
    make_checkpoint(model, with_optimizer=False, layout=layout).restore(
        path).expect_partial().assert_existing_objects_matched()
    logging.warning("Restored the model (weights, buffer) from %s but not "
                    "the optimizer state, which it lacks or which belongs to "
                    "another optimizer; the optimizer starts fresh.", path)


def restore(manager, model, path):
  """Restores one checkpoint of `manager` into `model`."""
  _restore_one(model, manager.checkpoint, path)
  logging.info("Restored %s.", path)
  return path


def _unreadable(workdir, failures):
  lines = "\n  ".join(f"{os.path.basename(p)}: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200]}" for p, e in failures)
  return UnreadableCheckpointsError(
      f"{workdir_lib.checkpoints_dir(workdir)} holds checkpoints, but none "
      f"can be restored into the configured model:\n  {lines}\nCorrupt "
      f"files do this, and so does a changed binding that shapes a variable "
      f"(e.g. BUFFER_SIZE, WIDTH, NUM_CLASSES). "
      f"Nothing was deleted. Resume with the config the workdir was trained "
      f"with (its operative_config.gin), or start fresh on purpose: a new "
      f"--workdir, or --fresh (moves the old checkpoints aside).")


def restore_latest(manager, model, workdir=None):
  """Restores the newest readable checkpoint; returns its path or None if
  there are none.

  A newest checkpoint that cannot be read (e.g. a partial copy) is skipped
  with a warning and the previous one is tried. One that holds the model but
  no matching optimizer state restores the model, with a warning.

  Raises:
    UnreadableCheckpointsError: checkpoints exist and none can be restored
      (nothing is deleted).
  """
  failures = []
  for path in reversed(manager.checkpoints):
    try:
      return restore(manager, model, path)
    except Exception as e:  # pylint: disable=broad-except
      # A truncated or corrupt file fails in many ways (OpError, IndexError,
      # ValueError, ...).
      logging.warning("Could not restore checkpoint %s (%s: %.300s); trying "
                      "the previous one.", path, type(e).__name__, e)
      failures.append((path, e))
  if failures:
    raise _unreadable(workdir or os.path.dirname(os.path.dirname(
        failures[0][0])), failures)
  return None


def save_model_only(model, workdir, step=0):
  """Writes a checkpoint of the model's variables alone (no optimizer).

  `restore_latest` restores such a checkpoint's model and starts the
  optimizer fresh; `restore_model` reads it as any other.
  """
  manager = tf.train.CheckpointManager(
      make_checkpoint(model, with_optimizer=False),
      workdir_lib.checkpoints_dir(workdir), max_to_keep=None)
  return manager.save(checkpoint_number=step)


def restore_model(model, workdir):
  """Restores only the model's variables from the newest readable checkpoint.

  For evaluation and export: the optimizer's state is not needed. A newest
  checkpoint that cannot be read is skipped with a warning, as in training.

  Returns:
    The checkpoint path, or None if `workdir` holds no checkpoint.

  Raises:
    UnreadableCheckpointsError: checkpoints exist and none can be read.
  """
  state = tf.train.get_checkpoint_state(workdir_lib.checkpoints_dir(workdir))
  listed = list(state.all_model_checkpoint_paths) if state else []
  paths = sorted(set(listed) | set(checkpoints_on_disk(workdir)), key=_step)
  failures = []
  for path in reversed(paths):
    try:
      status = make_checkpoint(model, with_optimizer=False,
                               layout=_layout(path)).restore(path)
      status.expect_partial().assert_existing_objects_matched()
      return path
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Could not read checkpoint %s (%s: %.300s); trying the "
                      "previous one.", path, type(e).__name__, e)
      failures.append((path, e))
  if failures:
    raise _unreadable(workdir, failures)
  return None
