"""The metrics gan_core computes, in one table: what each needs and how it is computed.

Every consumer (the Python API `gan_core.eval.compute`, the `gan_core.metrics` CLI, the
in-training `Evaluator` and the `evaluate` commands of both models) asks this registry,
so a metric is added once:

  name      needs                                       returns
  fid       Inception pool features of A; B's (mu,      fid
            sigma) or features
  is        Inception unbiased logits of A              is_mean, is_std
  kid       Inception pool features of A and B          kid_mean, kid_std
  swd       images of A and B (square, 2^k >= 16)       swd_<res>..., swd_avg (x 1e3)
  ms_ssim   images of A (multiples of 16)               ms_ssim

A is the evaluated set (generated samples), B the reference (real data). Lower is
better for fid, kid, swd; higher for is; ms_ssim is a diversity measure (lower:
more varied), compared with the real data's own value.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from gan_core.errors import UserError


class MetricError(UserError, ValueError):
  """A metric request the inputs cannot satisfy (unknown name, missing set, wrong size)."""


@dataclasses.dataclass
class Inputs:
  """What the requested metrics read; each field only when some metric needs it."""
  fake_features: dict[str, np.ndarray] | None = None  # pool (N, 2048), logits_unbiased.
  real_statistics: tuple[np.ndarray, np.ndarray] | None = None  # FID's (mu, sigma) of B.
  real_pool: np.ndarray | None = None  # B's pool features (KID).
  fake_images: np.ndarray | None = None  # uint8 NHWC (SWD, MS-SSIM).
  real_images: np.ndarray | None = None  # uint8 NHWC (SWD).


@dataclasses.dataclass(frozen=True)
class Options:
  seed: int | None = None  # KID subsets (default 2020, as torch-fidelity), SWD (default 0).
  kid_subset_size: int = 1000
  kid_subsets: int = 100


@dataclasses.dataclass(frozen=True)
class Metric:
  name: str
  compares: bool  # Needs the reference set B.
  fake_features: bool = False  # Inception features of A.
  real_statistics: bool = False  # FID statistics of B (from features or a stats file).
  real_pool: bool = False  # B's Inception pool features themselves.
  fake_images: bool = False
  real_images: bool = False
  min_resolution: int = 0  # Smaller images: the metric is not defined (skipped in training).
  compute: Callable[[Inputs, Options], dict[str, float]] = None  # type: ignore[assignment]


def _fid(inputs: Inputs, options: Options) -> dict[str, float]:
  from gan_core.eval import fid
  mu, sigma = fid.feature_statistics(inputs.fake_features["pool"])
  return {"fid": fid.frechet_distance(mu, sigma, *inputs.real_statistics)}


def _inception_score(inputs: Inputs, options: Options) -> dict[str, float]:
  from gan_core.eval import inception_score
  mean, std = inception_score.inception_score(inputs.fake_features["logits_unbiased"])
  return {"is_mean": mean, "is_std": std}


def _kid(inputs: Inputs, options: Options) -> dict[str, float]:
  from gan_core.eval import kid
  fake, real = inputs.fake_features["pool"], inputs.real_pool
  mean, std = kid.kernel_inception_distance(
      fake, real, num_subsets=options.kid_subsets, subset_size=options.kid_subset_size,
      seed=kid.DEFAULT_SEED if options.seed is None else options.seed)
  return {"kid_mean": mean, "kid_std": std}


def _swd(inputs: Inputs, options: Options) -> dict[str, float]:
  from gan_core.eval import swd
  real, fake = inputs.real_images, inputs.fake_images
  count = min(len(real), len(fake))  # The sorted-projection comparison needs equal counts.
  return swd.sliced_wasserstein_distance(real[:count], fake[:count], seed=options.seed or 0)


def _ms_ssim(inputs: Inputs, options: Options) -> dict[str, float]:
  from gan_core.eval import ms_ssim
  images = inputs.fake_images
  return {"ms_ssim": ms_ssim.ms_ssim(images[:len(images) // 2 * 2])}


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("fid", compares=True, fake_features=True, real_statistics=True, compute=_fid),
    Metric("is", compares=False, fake_features=True, compute=_inception_score),
    Metric("kid", compares=True, fake_features=True, real_pool=True, compute=_kid),
    Metric("swd", compares=True, fake_images=True, real_images=True, min_resolution=16,
           compute=_swd),
    Metric("ms_ssim", compares=False, fake_images=True, min_resolution=16, compute=_ms_ssim),
)}


def parse(spec: str | Sequence[str], what: str = "metrics") -> list[str]:
  """Metric names from 'fid,is' or a sequence; unknown names are a MetricError."""
  names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec)
           if m.strip()]
  unknown = [m for m in names if m not in METRICS]
  if unknown:
    raise MetricError(f"Unknown metrics {unknown} in {what}; choose from {','.join(METRICS)}.")
  return list(dict.fromkeys(names))


def needs(names: Sequence[str], field: str) -> bool:
  return any(getattr(METRICS[name], field) for name in names)


def defined_at(names: Sequence[str], resolution: int) -> list[str]:
  """The metrics defined for images of `resolution` (SWD and MS-SSIM need >= 16)."""
  return [name for name in names if resolution >= METRICS[name].min_resolution]


def evaluate(names: Sequence[str], inputs: Inputs, options: Options = Options()
             ) -> dict[str, float]:
  """Every requested metric's values, in the order requested."""
  results: dict[str, float] = {}
  for name in names:
    results.update(METRICS[name].compute(inputs, options))
  return results
