"""Preemption: SIGTERM (what cloud schedulers and TPU maintenance send) asks the
training loop to save a checkpoint at the current step and stop cleanly."""
from __future__ import annotations

import signal

from absl import logging


class PreemptionFlag:
  """`requested` becomes True on SIGTERM; `restore()` reinstates the previous handler."""

  def __init__(self):
    self.requested = False
    self._previous = None
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. inside some test runners).
      pass

  def _handle(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint at the current step and stopping.")
    self.requested = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
