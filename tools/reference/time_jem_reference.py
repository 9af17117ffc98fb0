"""Times the JEM reference's own training loop on this machine.

The reference is github.com/wgrathwohl/JEM (`train_wrn_ebm.py`, PyTorch; this
harness was written against commit 3d01161547109b464eee87304f07b2dac8519d03).
It is not part of ebmkit and is never copied into it: tools/reference/README.md
says how to get it and build the Python environment it needs. Run this file
with that environment's Python, not ebmkit's:

  REF_JEM_DIR=<checkout> <venv>/bin/python tools/reference/time_jem_reference.py \
      --depth=10 --width=2 --iterations=30 --json=ref.json

What runs is the reference's script itself, executed as `__main__`: its own
argparse parser reads the flags (only those that differ from its defaults are
passed, see `overrides`), and its own `main` trains as written. Two things are
put in place before it starts, without touching its files:
  - `torchvision.datasets.CIFAR10` becomes a stand-in with seeded random uint8
    images of CIFAR-10's shape, handed out as PIL images like the real class,
    so that the reference's transforms and DataLoaders (4 worker processes)
    do their usual work and nothing is downloaded;
  - a global optimizer-step hook stamps the end of every training iteration
    and stops the run after --iterations.
A wrapper around `tqdm` stamps the start of the training loop.

One iteration's time is the difference of consecutive stamps (the first from
the loop's start), so it holds everything the loop does: the DataLoader fetch,
the SGLD chain, the loss, backward and Adam. The figure is the median after
--warmup iterations. At every stamp the harness also reads the machine's busy
CPU time (/proc/stat) and the CPU time of this process and its descendants
(the DataLoader workers): `other_cpu_frac` is the share of the machine that
anything else used during the timed window; above 0.10 the result is marked
contended.

Output: one JSON line (also written to --json), then the line
`ref_jem_s_per_iter=<median>` that tools/compare_reference.sh reads.
"""

import argparse
import json
import os
import platform
import runpy
import statistics
import sys
import tempfile
import time

# The benchmark's settings, as differences from the reference's argparse
# defaults (its defaults already give 20 SGLD steps, α = 1, σ = 0.01, ρ = 0.05,
# Adam 1e-4, p(x) and p(y|x) weights 1, no norm). --warmup_iters stays at its
# default -1 (no warm-up): 0 would divide by zero on the first iteration.
# --n_valid 0 keeps every fake image for training; --n_epochs 1 because the
# run is stopped inside the first epoch anyway.
FIXED_FLAGS = {"--batch_size": "32", "--buffer_size": "1000",
               "--n_valid": "0", "--n_epochs": "1"}
CONTENDED_FRAC = 0.10


class _Stop(Exception):
  """Raised from the optimizer hook once enough iterations are stamped."""


def overrides(depth, width, save_dir, data_root, extra=()):
  """The reference's command line: our fixed flags, network size, folders."""
  argv = []
  for flag, value in FIXED_FLAGS.items():
    argv += [flag, value]
  argv += ["--depth", str(depth), "--width", str(width),
           "--save_dir", save_dir, "--data_root", data_root]
  return argv + list(extra)


def _clock_ticks():
  return os.sysconf("SC_CLK_TCK")


def machine_busy_s():
  """Non-idle CPU seconds of the whole machine since boot (/proc/stat)."""
  with open("/proc/stat") as fh:
    fields = [int(v) for v in fh.readline().split()[1:]]
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
  guest = sum(fields[8:10])  # already counted in user and nice
  return (sum(fields) - idle - guest) / _clock_ticks()


def _proc_stat(pid):
  """(ppid, utime + stime in seconds) of a process, or None if it is gone."""
  try:
    with open(f"/proc/{pid}/stat") as fh:
      text = fh.read()
  except OSError:
    return None
  # The command name may contain spaces: split after its closing parenthesis.
  rest = text[text.rindex(")") + 2:].split()
  ppid, utime, stime = int(rest[1]), int(rest[11]), int(rest[12])
  return ppid, (utime + stime) / _clock_ticks()


def tree_cpu_s(root=None):
  """CPU seconds used so far by process `root` and all its descendants."""
  root = os.getpid() if root is None else root
  parents, cpu = {}, {}
  for name in os.listdir("/proc"):
    if name.isdigit():
      stat = _proc_stat(int(name))
      if stat is not None:
        parents[int(name)], cpu[int(name)] = stat
  total, todo = 0.0, [root]
  while todo:
    pid = todo.pop()
    total += cpu.get(pid, 0.0)
    todo += [child for child, parent in parents.items() if parent == pid]
  return total


def cpu_model():
  try:
    with open("/proc/cpuinfo") as fh:
      for line in fh:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def summarise(stamps, machine, own, warmup, ncpu):
  """Per-iteration times and the contention check from the stamps.

  stamps, machine, own: wall time, machine busy CPU and the process tree's
  CPU at the loop's start and after each iteration (same length).
  """
  if len(stamps) < warmup + 2:
    raise ValueError(f"{len(stamps) - 1} iterations stamped; need more than "
                     f"--warmup={warmup}.")
  per_iter = [b - a for a, b in zip(stamps, stamps[1:])]
  timed = per_iter[warmup:]
  window = stamps[-1] - stamps[warmup]
  other = max(0.0, (machine[-1] - machine[warmup]) - (own[-1] - own[warmup]))
  other_frac = other / (window * ncpu)
  return {
      "s_per_iter_median": statistics.median(timed),
      "s_per_iter_min": min(timed), "s_per_iter_max": max(timed),
      "iterations_timed": len(timed), "warmup_excluded": warmup,
      "first_iteration_s": per_iter[0], "per_iter_s": per_iter,
      "own_cpu_s_per_iter": (own[-1] - own[warmup]) / len(timed),
      "other_cpu_frac": other_frac, "contended": other_frac > CONTENDED_FRAC,
  }


def fake_cifar10_class(num_train, num_test=1000):
  """A stand-in for `torchvision.datasets.CIFAR10`: seeded random images."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel

  class FakeCIFAR10:
    """Random uint8 32x32x3 images and labels 0..9, as PIL images."""

    def __init__(self, root=None, train=True, transform=None,
                 target_transform=None, download=False):
      del root, download
      rng = np.random.default_rng(0 if train else 1)
      count = num_train if train else num_test
      self.data = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
      self.targets = rng.integers(0, 10, count).tolist()
      self.transform, self.target_transform = transform, target_transform

    def __len__(self):
      return len(self.data)

    def __getitem__(self, index):
      image, label = Image.fromarray(self.data[index]), self.targets[index]
      if self.transform is not None:
        image = self.transform(image)
      if self.target_transform is not None:
        label = self.target_transform(label)
      return image, label

  return FakeCIFAR10


def run(ref_dir, depth, width, iterations, warmup, threads, extra=()):
  """Runs the reference's script until `iterations` are stamped."""
  script = os.path.join(ref_dir, "train_wrn_ebm.py")
  if not os.path.isfile(script):
    raise SystemExit(f"time_jem_reference: no train_wrn_ebm.py in {ref_dir!r}; "
                     "name the reference's checkout (tools/reference/README.md).")
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import torchvision  # pylint: disable=import-outside-toplevel
    import tqdm  # pylint: disable=import-outside-toplevel
    from torch.optim.optimizer import register_optimizer_step_post_hook  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SystemExit(f"time_jem_reference: {e}. Run this file with the "
                     "reference's Python (a venv with torch, torchvision, "
                     "numpy, tqdm; tools/reference/README.md).") from e
  torch.set_num_threads(threads)
  batch_size = int(FIXED_FLAGS["--batch_size"])
  # One epoch must hold every iteration (the DataLoader drops the last batch).
  torchvision.datasets.CIFAR10 = fake_cifar10_class(
      max(2048, batch_size * (iterations + 2)))

  stamps, machine, own = [], [], []

  def stamp():
    stamps.append(time.perf_counter())
    machine.append(machine_busy_s())
    own.append(tree_cpu_s())

  original_tqdm = tqdm.tqdm

  def loop_start(*args, **kwargs):
    if not stamps:
      stamp()
    return original_tqdm(*args, **kwargs)

  def after_step(optimizer, args, kwargs):
    del optimizer, args, kwargs
    stamp()
    if len(stamps) > iterations:
      raise _Stop()

  tqdm.tqdm = loop_start
  hook = register_optimizer_step_post_hook(after_step)
  work = tempfile.mkdtemp(prefix="ref_jem_")
  argv = overrides(depth, width, os.path.join(work, "run"),
                   os.path.join(work, "data"), extra)
  saved_argv, saved_path, saved_stdout = sys.argv, list(sys.path), sys.stdout
  sys.argv = [script] + argv
  sys.path.insert(0, ref_dir)  # its `import utils`, `import wideresnet`
  load_before = os.getloadavg()
  try:
    runpy.run_path(script, run_name="__main__")
    finished = False
  except _Stop:
    finished = True
  finally:
    hook.remove()
    tqdm.tqdm = original_tqdm
    sys.argv, sys.path[:], sys.stdout = saved_argv, saved_path, saved_stdout
  if not finished:
    raise SystemExit("time_jem_reference: the reference's loop ended before "
                     f"{iterations} iterations.")
  result = summarise(stamps, machine, own, warmup, os.cpu_count() or 1)
  result.update({
      "depth": depth, "width": width, "batch_size": batch_size,
      "reference_argv": argv, "torch": torch.__version__,
      "torchvision": torchvision.__version__, "threads": torch.get_num_threads(),
      "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
      "python": platform.python_version(), "loadavg_before": load_before,
      "loadavg_after": os.getloadavg(),
  })
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--ref_dir", default=os.environ.get("REF_JEM_DIR"),
                      help="the reference's checkout (default $REF_JEM_DIR)")
  parser.add_argument("--depth", type=int, default=10)
  parser.add_argument("--width", type=int, default=2)
  parser.add_argument("--iterations", type=int, default=30,
                      help="iterations run, warm-up included")
  parser.add_argument("--warmup", type=int, default=5,
                      help="leading iterations left out of the statistics")
  parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                      help="torch.set_num_threads")
  parser.add_argument("--json", help="also write the result here")
  parser.add_argument("extra", nargs="*",
                      help="after --: more flags for the reference's parser")
  args = parser.parse_args(argv)
  if not args.ref_dir:
    parser.error("name the reference's checkout: --ref_dir or REF_JEM_DIR "
                 "(tools/reference/README.md says how to get it).")
  if args.iterations <= args.warmup:
    parser.error(f"--iterations ({args.iterations}) must exceed --warmup "
                 f"({args.warmup}).")
  result = run(args.ref_dir, args.depth, args.width, args.iterations,
               args.warmup, args.threads, args.extra)
  line = json.dumps(result)
  if args.json:
    with open(args.json, "w") as fh:
      fh.write(line + "\n")
  print(line)
  if result["contended"]:
    print(f"# WARNING: other processes used {result['other_cpu_frac']:.0%} of "
          "the machine during the timed window; run again on a quiet machine.")
  print(f"ref_jem_s_per_iter={result['s_per_iter_median']:.6f}", flush=True)


if __name__ == "__main__":
  main()
