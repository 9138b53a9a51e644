"""The progressive-growing schedule as a pure function of images seen.

As in the official `TrainingSchedule`: a phase is `stable_kimg` at a fixed
level of detail followed by `transition_kimg` of fade-in to the next
resolution. The level of detail `lod` counts halvings below the final
resolution (0 = full resolution); during a fade-in it decreases linearly, and
the training resolution is already the new one. We call the new layers'
weight `alpha = 1 - frac(lod)` (0 when a fade-in starts, 1 when stable).

The training loop re-evaluates the schedule every `minibatch_repeats`
iterations, as the official loop does; batch size and learning rate come from
the per-resolution config dicts.
"""
from __future__ import annotations

import dataclasses
import math

import ml_collections

from gan_core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Phase:
  kimg: float
  lod: float
  resolution: int
  alpha: float  # Weight of the newest layers (1.0 when stable).
  batch_size: int
  learning_rate: float

  @property
  def fading(self) -> bool:
    return self.alpha < 1.0

  @property
  def lod_floor_ceil(self) -> tuple[int, int]:
    return math.floor(self.lod), math.ceil(self.lod)


def _per_resolution(table: ml_collections.ConfigDict, resolution: int, what: str):
  key = f"r{resolution}"
  if key not in table:
    raise ConfigError(f"config.{what} has no entry {key} (resolution {resolution}); add "
                   f"--config.{what}.{key}=VALUE")
  return table[key]


def phase_at(images_seen: int, config: ml_collections.ConfigDict) -> Phase:
  """Resolution, alpha, batch size and learning rate after `images_seen` real images."""
  final_log2 = int(round(math.log2(config.model.resolution)))
  kimg = images_seen / 1000.0
  phase_dur = config.stable_kimg + config.transition_kimg
  phase_idx = int(math.floor(kimg / phase_dur)) if phase_dur > 0 else 0
  phase_kimg = kimg - phase_idx * phase_dur
  lod = final_log2 - math.floor(math.log2(config.initial_resolution)) - phase_idx
  if config.transition_kimg > 0:
    lod -= max(phase_kimg - config.stable_kimg, 0.0) / config.transition_kimg
  lod = max(lod, 0.0)
  resolution = 2 ** (final_log2 - int(math.floor(lod)))
  alpha = 1.0 - (lod - math.floor(lod))
  return Phase(kimg=kimg, lod=lod, resolution=resolution, alpha=alpha,
               batch_size=int(_per_resolution(config.batch_size, resolution, "batch_size")),
               learning_rate=float(_per_resolution(config.learning_rate, resolution,
                                                   "learning_rate")))


def needs_optimizer_reset(previous: Phase | None, current: Phase) -> bool:
  """The official rule: reset Adam when floor(lod) or ceil(lod) changes, i.e. when a
  fade-in starts (new resolution) and when it ends (the new level becomes stable)."""
  return previous is not None and previous.lod_floor_ceil != current.lod_floor_ceil


def validate(config: ml_collections.ConfigDict) -> None:
  """Clear errors for schedule settings that cannot work."""
  res = config.model.resolution
  if res < 4 or 2 ** int(round(math.log2(res))) != res:
    raise ConfigError(f"model.resolution={res} must be a power of two >= 4")
  init = config.initial_resolution
  if init < 4 or init > res or 2 ** int(round(math.log2(init))) != init:
    raise ConfigError(f"initial_resolution={init} must be a power of two in [4, {res}]")
  if config.stable_kimg < 0 or config.transition_kimg < 0 or config.total_kimg <= 0:
    raise ConfigError("stable_kimg and transition_kimg must be >= 0 and total_kimg > 0")
  if config.minibatch_repeats < 1:
    raise ConfigError("minibatch_repeats must be >= 1")
  r = init
  while r <= res:
    _per_resolution(config.batch_size, r, "batch_size")
    _per_resolution(config.learning_rate, r, "learning_rate")
    r *= 2
