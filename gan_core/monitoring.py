"""Metric writers (TensorBoard + console through clu), throughput and ETA."""
from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging


def create_writer(workdir: str):
  """A clu writer: TensorBoard under workdir/tensorboard and the console (process 0 only)."""
  from clu import metric_writers
  return metric_writers.create_default_writer(
      os.path.join(workdir, "tensorboard"), just_logging=jax.process_index() > 0,
      asynchronous=True)


def to_host(tree: Any) -> Any:
  """Replicated (possibly multi-host) arrays -> numpy, from this process's local copy."""
  def leaf(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return np.asarray(jax.device_get(x))
  return jax.tree.map(leaf, tree)


class Progress:
  """Steps/s, images/s and ETA between `report` calls."""

  def __init__(self, start_step: int, total_steps: int, images_per_step: int):
    self.total_steps = total_steps
    self.images_per_step = images_per_step
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def report(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    elapsed = max(now - self._last_time, 1e-9)
    steps_per_sec = (step - self._last_step) / elapsed
    self._last_step, self._last_time = step, now
    remaining = max(self.total_steps - step, 0)
    return {"steps_per_sec": steps_per_sec,
            "images_per_sec": steps_per_sec * self.images_per_step,
            "eta_hours": remaining / steps_per_sec / 3600 if steps_per_sec > 0 else float("inf")}


def log_parameter_overview(name: str, params: Any) -> int:
  """Logs clu's parameter table for `params`; returns the parameter count."""
  from clu import parameter_overview
  if jax.process_index() == 0:
    logging.info("%s parameters:\n%s", name, parameter_overview.get_parameter_overview(
        params, include_stats=False))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
