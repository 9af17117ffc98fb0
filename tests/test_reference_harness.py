"""tools/reference/time_jem_reference.py: the parts that need no PyTorch.

The harness itself runs under the reference's own environment (PyTorch),
which the test environment does not have; BENCHMARKS.md records it run
against the real reference. Here: its statistics by hand, the CPU accounting
of a process tree, and its errors.
"""

import os
import subprocess
import sys
import time

import pytest

HARNESS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "tools", "reference", "time_jem_reference.py")
sys.path.insert(0, os.path.dirname(HARNESS))
import time_jem_reference as harness  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.pop(0)


def test_summary_by_hand():
  # Loop start at 0, iterations end at 1, 3, 6, 10, 15: 1, 2, 3, 4, 5 s.
  stamps = [0.0, 1.0, 3.0, 6.0, 10.0, 15.0]
  # Over the window after the first iteration (t = 1 to 15, 14 s, 2 CPUs =
  # 28 CPU seconds) the machine was busy 20 s, this process tree 13 s:
  # others used 7 / 28 = 0.25.
  machine = [0.0, 1.0, 5.0, 9.0, 14.0, 21.0]
  own = [0.0, 1.0, 4.0, 7.0, 10.0, 14.0]
  out = harness.summarise(stamps, machine, own, warmup=1, ncpu=2)
  assert out["per_iter_s"] == [1.0, 2.0, 3.0, 4.0, 5.0]
  assert out["s_per_iter_median"] == 3.5  # of 2, 3, 4, 5
  assert (out["s_per_iter_min"], out["s_per_iter_max"]) == (2.0, 5.0)
  assert out["iterations_timed"] == 4
  assert out["own_cpu_s_per_iter"] == pytest.approx(13.0 / 4)
  assert out["other_cpu_frac"] == pytest.approx(0.25)
  assert out["contended"]  # above 0.10


def test_summary_needs_more_iterations_than_warmup():
  with pytest.raises(ValueError, match="need more than --warmup=5"):
    harness.summarise([0.0, 1.0, 2.0], [0.0] * 3, [0.0] * 3, warmup=5,
                      ncpu=2)


def test_process_tree_cpu_counts_a_busy_child():
  # The child burns about 1 s of CPU, then waits (alive) to be read.
  child = subprocess.Popen([sys.executable, "-c", (
      "import time, sys\n"
      "t = time.process_time()\n"
      "while time.process_time() - t < 1.0: pass\n"
      "print('done', flush=True)\n"
      "time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
  try:
    before_self = harness.tree_cpu_s(child.pid)
    assert child.stdout.readline().strip() == "done"
    burnt = harness.tree_cpu_s(child.pid) - before_self
    assert burnt >= 0.8
    # The tree of this test process holds the child.
    assert harness.tree_cpu_s() >= burnt
  finally:
    child.kill()
    child.wait()


def test_machine_busy_time_grows_with_work():
  before = harness.machine_busy_s()
  t = time.process_time()
  while time.process_time() - t < 0.5:
    pass
  assert harness.machine_busy_s() - before >= 0.4


def test_command_line_errors_name_what_to_do(tmp_path):
  run = lambda *args: subprocess.run(
      [sys.executable, HARNESS, *args], capture_output=True, text=True,
      env={k: v for k, v in os.environ.items() if k != "REF_JEM_DIR"})
  missing = run()
  assert missing.returncode == 2
  assert "REF_JEM_DIR" in missing.stderr
  empty = run(f"--ref_dir={tmp_path}")
  assert empty.returncode == 1
  assert "no train_wrn_ebm.py" in empty.stderr
  assert "tools/reference/README.md" in empty.stderr
  short = run(f"--ref_dir={tmp_path}", "--iterations=3", "--warmup=5")
  assert short.returncode == 2 and "must exceed --warmup" in short.stderr


def test_only_flags_that_differ_from_the_reference_defaults():
  argv = harness.overrides(10, 2, "/s", "/d")
  pairs = dict(zip(argv[::2], argv[1::2]))
  assert pairs == {"--batch_size": "32", "--buffer_size": "1000",
                   "--n_valid": "0", "--n_epochs": "1", "--depth": "10",
                   "--width": "2", "--save_dir": "/s", "--data_root": "/d"}
