"""A console progress display for long jobs made of parts (an evaluation):
below both training and evaluation, so either can use it."""

import functools
import shutil
import sys
import threading
import time


class PartProgress:
  """Says as each part of a long job starts and ends (with its time), and
  shows that a running part is alive: on a terminal a progress bar over the
  parts, redrawn in place; elsewhere (a log file) a line every `every_s`
  seconds.

  Wrap each part's call: `parts("OOD detection", ood_detection)(model, ...)`.

  Args:
    total: the number of parts.
    title: what the job is (starts every line).
    stream: where it writes (default: sys.stdout at construction).
    tty: whether `stream` is a terminal (default: its `isatty()`).
    every_s: seconds between redraws on a terminal (default 1) or between
      "still running" lines elsewhere (default 30).
  """

  def __init__(self, total, title="Evaluation", stream=None, tty=None,
               every_s=None):
    self.total = total
    self.title = title
    self.stream = stream or sys.stdout
    self.tty = (self.stream.isatty() if tty is None and hasattr(
        self.stream, "isatty") else bool(tty))
    self.every_s = every_s or (1.0 if self.tty else 30.0)
    self.index = 0
    self.times = {}  # part name -> seconds it took (finished parts)
    self._lock = threading.Lock()

  def _write(self, text):
    with self._lock:
      self.stream.write(text)
      self.stream.flush()

  def _bar(self, name, started):
    width = 20
    done = width * (self.index - 1) // max(self.total, self.index)
    line = (f"{self.title} {'█' * done}{'░' * (width - done)} "
            f"{self.index}/{max(self.total, self.index)} {name} "
            f"{time.time() - started:.0f} s")
    # A line longer than the terminal wraps, and "\r" would redraw only its
    # last row.
    columns = shutil.get_terminal_size().columns
    return f"\r{line[:max(columns - 1, 1)]}\x1b[K"

  def _tick(self, label, name, started, stop):
    while not stop.wait(self.every_s):
      if self.tty:
        self._write(self._bar(name, started))
      else:
        self._write(f"{label}: running for {time.time() - started:.0f} s\n")

  def __call__(self, name, fn):
    """`fn` wrapped to report part `name`; returns what `fn` returns."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
      self.index += 1
      total = max(self.total, self.index)
      label = f"{self.title} [{self.index}/{total}] {name}"
      self._write(f"{label}: started\n")
      started, stop = time.time(), threading.Event()
      ticker = threading.Thread(target=self._tick, daemon=True,
                                args=(label, name, started, stop))
      ticker.start()
      outcome = "failed after"
      try:
        value = fn(*args, **kwargs)
        outcome = "done in"
        return value
      finally:
        stop.set()
        ticker.join()
        self.times[name] = round(time.time() - started, 1)
        self._write(("\r\x1b[K" if self.tty else "")
                    + f"{label}: {outcome} {time.time() - started:.1f} s\n")
    return run
