"""Divergence and collapse guard: never keep a broken step, roll back, give up in time.

At every check (the training loops check at each log step and before every
checkpoint save) the guard looks at the step's host-side scalars:

- always: any non-finite loss, margin, norm or parameter flag, and a run whose every
  update since the last check was skipped (`skipped_fraction` 1: PGGAN skips updates
  with non-finite gradients, as the official code does);
- optionally, when its threshold in `config.guard` is > 0, a divergence signal:
  `max_d_margin` (mean D(real) - D(fake): D has won outright, G gets no signal),
  `max_g_sigma` / `max_d_sigma` (the largest per-layer top singular value of G's /
  D's weights; BigGAN's collapse is preceded by these exploding).

On a problem the loop restores the last good checkpoint and continues with a
re-seeded random stream (another path through the same data, since an exactly
repeated run would diverge the same way); after `max_rollbacks` rollbacks in a
run's whole history it stops with a `DivergenceError` instead of burning compute.
"""
from __future__ import annotations

import math
from typing import Mapping

import jax
import ml_collections
from absl import logging

from gan_core.errors import UserError

# config.guard field -> the scalar it bounds.
SIGNALS = {"max_d_margin": "d_margin", "max_g_sigma": "sigma_max/G", "max_d_sigma": "sigma_max/D"}


class DivergenceError(UserError, FloatingPointError):
  """Training diverged more often than `guard.max_rollbacks` allows."""


def guard_config(spectral_norm_signals: bool = True) -> ml_collections.ConfigDict:
  """The `config.guard` block. Thresholds of 0 switch a signal off."""
  c = ml_collections.ConfigDict()
  c.max_rollbacks = 3  # Rollbacks allowed over the run's whole history, then stop.
  c.max_d_margin = 0.0  # Roll back when mean D(real) - D(fake) exceeds this (0: off).
  if spectral_norm_signals:
    c.max_g_sigma = 0.0  # ... when some G layer's top singular value exceeds this (0: off).
    c.max_d_sigma = 0.0  # ... when some D layer's top singular value exceeds this (0: off).
  return c


def find_problem(scalars: Mapping[str, float], config: ml_collections.ConfigDict) -> str | None:
  """A sentence naming what is wrong with this step's scalars, or None."""
  bad = sorted(k for k, v in scalars.items() if not math.isfinite(v))
  if bad:
    return f"non-finite {', '.join(bad)}"
  if scalars.get("skipped_fraction", 0.0) >= 1.0:  # Tasks that skip non-finite updates.
    return "stuck: every update since the last check was skipped for non-finite gradients"
  for field, signal in SIGNALS.items():
    limit = config.get(field, 0.0)
    if limit and signal in scalars and scalars[signal] > limit:
      return f"{signal} = {scalars[signal]:.4g} exceeds guard.{field} = {limit:g}"
  return None


def rollback_key(key: jax.Array, rollbacks: int) -> jax.Array:
  """The random stream after the `rollbacks`-th rollback (deterministic, so a run that
  rolled back still resumes exactly)."""
  return jax.random.fold_in(key, 0x7FFF_0000 + rollbacks)


class Guard:
  """Counts rollbacks (persisted in checkpoint meta as `rollbacks`) and explains them."""

  def __init__(self, config: ml_collections.ConfigDict, rollbacks: int = 0):
    self.config = config
    self.rollbacks = rollbacks

  def check(self, scalars: Mapping[str, float]) -> str | None:
    return find_problem(scalars, self.config)

  def start_rollback(self, step: int, problem: str, checkpoints) -> int | None:
    """Logs the rollback loudly and returns the step to restore (None: the initial state),
    or raises DivergenceError when no rollback is left. `checkpoints` is the run's
    `gan_core.checkpointing.Checkpointer`; pending saves are waited for first."""
    checkpoints.wait()
    good_step, directory = checkpoints.latest_step(), checkpoints.directory
    if self.rollbacks >= self.config.max_rollbacks:
      raise DivergenceError(
          f"training diverged at step {step} ({problem}) after {self.rollbacks} rollback(s); "
          f"guard.max_rollbacks={self.config.max_rollbacks} reached, stopping. The latest good "
          f"checkpoint is step {good_step} in {directory}, untouched. Lower the learning "
          "rates, change the seed or raise --config.guard.max_rollbacks, then rerun.")
    self.rollbacks += 1
    target = "the initial state" if good_step is None else f"checkpoint step {good_step}"
    logging.error(
        "\n%s\nDIVERGENCE at step %d: %s.\nNot keeping this state; rolling back to %s with a "
        "re-seeded random stream (rollback %d of at most %d).\n%s", "!" * 72, step, problem,
        target, self.rollbacks, self.config.max_rollbacks, "!" * 72)
    return good_step
