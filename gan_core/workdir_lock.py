"""One training run per workdir.

Two runs writing one workdir (a second launch, a scheduler requeueing while the old
job still runs) corrupt each other's checkpoints. The training entry points therefore
take `WORKDIR/run.lock` before writing anything else there: a small JSON file naming
the holder (host, pid, start time), created atomically (O_EXCL) and touched every
`HEARTBEAT_S` seconds while the run lives. A second run refuses at once, naming the
holder, without writing a byte to the workdir.

A lock is *stale*, and is taken over with a warning, when its holder is on this host
and its process is gone (a SIGKILLed or crashed run), or when its heartbeat is older
than `STALE_S` (a run on another host that died without removing it). In a multi-process
run, process 0 holds the lock and tells the others whether it got it.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

from absl import logging

from gan_core import files
from gan_core.errors import UserError

LOCK_NAME = "run.lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0


class WorkdirLockedError(UserError):
  """Another live run holds the workdir."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Exists, owned by another user.
    return True
  return True


def _read_holder(path: str) -> dict[str, Any] | None:
  try:
    return json.loads(files.read_text(path))
  except FileNotFoundError:
    return None
  except (ValueError, OSError):
    return {}  # Unreadable (half-written by a run killed at that instant): treat as stale.


def _age_s(path: str) -> float:
  if files.is_url(path):
    import tensorflow as tf
    return time.time() - tf.io.gfile.stat(path).mtime_nsec / 1e9
  return time.time() - os.path.getmtime(path)


def stale_reason(holder: dict[str, Any], age_s: float) -> str | None:
  """Why the lock of `holder` (whose heartbeat is `age_s` old) is stale; None if it is live."""
  if not holder:
    return "the lock file is unreadable"
  if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
    return f"process {holder.get('pid')} no longer exists on this host"
  if age_s > STALE_S:
    return f"its heartbeat stopped {age_s:.0f} s ago"
  return None


class WorkdirLock:
  """The lock on one workdir, held by this process until `release`."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_NAME)
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self.holder = {"host": socket.gethostname(), "pid": os.getpid(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

  def _create(self) -> bool:
    """Creates the lock file if absent (atomically for local paths)."""
    data = json.dumps(self.holder)
    if files.is_url(self.path):  # Object stores have no O_EXCL: check, then write.
      if files.exists(self.path):
        return False
      files.write_bytes(self.path, data.encode())
      return True
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(data)
    return True

  def acquire(self) -> "WorkdirLock":
    files.makedirs(self.workdir)
    for _ in range(3):  # A race with another starting run: one of them wins.
      if self._create():
        self._start_heartbeat()
        return self
      holder = _read_holder(self.path)
      if holder is None:
        continue  # Released meanwhile.
      reason = stale_reason(holder, _age_s(self.path))
      if reason is None:
        raise WorkdirLockedError(
            f"workdir {self.workdir!r} is in use by another run (host {holder.get('host')}, "
            f"pid {holder.get('pid')}, started {holder.get('started')}). Two runs on one "
            "workdir would overwrite each other's checkpoints. Wait for it to finish or stop "
            "it, or use another --workdir. If that run is gone, delete "
            f"{self.path!r}.")
      logging.warning("Taking over the stale lock %s of host %s pid %s: %s.", self.path,
                      holder.get("host"), holder.get("pid"), reason)
      try:
        files.remove(self.path)
      except FileNotFoundError:
        pass
    raise WorkdirLockedError(f"could not take the lock {self.path!r}: other runs keep "
                             "creating it. Start one run per workdir.")

  def _start_heartbeat(self) -> None:
    def beat():
      while not self._stop.wait(HEARTBEAT_S):
        try:
          if files.is_url(self.path):
            files.write_bytes(self.path, json.dumps(self.holder).encode())
          else:
            os.utime(self.path)
        except OSError as e:  # A full disk must not kill the run; staleness is a fallback.
          logging.warning("could not refresh %s: %s", self.path, e)
    self._thread = threading.Thread(target=beat, name="workdir-lock-heartbeat", daemon=True)
    self._thread.start()

  def release(self) -> None:
    self._stop.set()
    if self._thread:
      self._thread.join()
    holder = _read_holder(self.path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == self.holder["host"]:
      files.remove(self.path)


@contextlib.contextmanager
def hold(workdir: str):
  """Holds the workdir lock for the duration (process 0; the others learn the outcome)."""
  import jax
  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = WorkdirLock(workdir).acquire()
    except WorkdirLockedError as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    import numpy as np
    refused = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if int(refused) and error is None:
      error = WorkdirLockedError(f"workdir {workdir!r} is in use by another run (process 0 "
                                 "could not take its lock; see its error).")
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()

