"""Preemption: SIGTERM (what cloud schedulers, SLURM and TPU maintenance send) asks
the training loop to save a checkpoint at the current step and stop cleanly.

One process: a Python SIGTERM handler sets `requested`. Several processes: they
must all stop at the same step (a checkpoint save is collective), but the signal
may reach them at different steps or reach only one. JAX's preemption service
(started by `jax.distributed.initialize`) catches SIGTERM in every process,
spreads the notice through the coordinator and picks a common step;
`check(step)` asks it (`multihost_utils.reached_preemption_sync_point`).
"""
from __future__ import annotations

import signal

import jax
from absl import logging


class PreemptionFlag:
  """`requested` becomes True once the run should save and stop.

  Call `check(step)` once after every training iteration (with the number of
  completed iterations); `restore()` reinstates the previous SIGTERM handler.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self._synchronised = jax.process_count() > 1
    if self._synchronised:
      return  # JAX's preemption notifier owns SIGTERM; a Python handler would replace it.
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. inside some test runners).
      pass

  def _handle(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint at the current step and stopping.")
    self.requested = True

  def check(self, step: int) -> bool:
    """True when the run must stop after `step`: the same answer on every process."""
    if self._synchronised and not self.requested:
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):
        logging.warning("SIGTERM received by the job: all processes save a checkpoint at "
                        "step %d and stop.", step)
        self.requested = True
    return self.requested

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
