"""Fréchet Inception Distance, as TTUR / pytorch-fid / torch-fidelity compute it.

Statistics are float64: `mu` the feature mean, `sigma` the covariance with
N - 1. The distance uses the eigenvalue form
`|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 * sum(Re(sqrt(eig(s1 @ s2))))`, with no
`sqrtm` and no epsilon, on the host (numpy), where float64 is reliable.
Statistics files are `.npz` with `mu` and `sigma`, the format pytorch-fid and
TTUR publish, so their precomputed dataset statistics can be used directly.
"""
from __future__ import annotations

import os

import numpy as np

from gan_core.images import save_npz_atomic


class StatisticsFileError(ValueError):
  """A statistics file is missing, unreadable or lacks `mu` / `sigma`."""


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) of (N, D) features in float64; N must be at least 2."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"FID statistics need at least 2 feature vectors of shape (N, D), got "
                     f"{features.shape}.")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """The Fréchet distance between two Gaussians, in float64 (the FID formula)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f"Statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma "
                     f"{sigma1.shape} vs {sigma2.shape}.")
  diff = mu1 - mu2
  eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)
  trace_sqrt = np.sum(np.sqrt(eigenvalues).real)
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
  return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def save_statistics(path: str, mu: np.ndarray, sigma: np.ndarray, **extra: np.ndarray) -> None:
  """Writes `mu`, `sigma` (and extra arrays, e.g. `num_images`) atomically to an `.npz`."""
  save_npz_atomic(path, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64),
                  **extra)


def load_statistics(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads (mu, sigma) from an `.npz` statistics file (pytorch-fid / TTUR format)."""
  if not os.path.isfile(path):
    raise StatisticsFileError(f"Statistics file {path} does not exist.")
  try:
    with np.load(path, allow_pickle=False) as data:
      if "mu" not in data.files or "sigma" not in data.files:
        raise StatisticsFileError(
            f"{path} is not an FID statistics file: it has {sorted(data.files)}, expected 'mu' "
            "and 'sigma' (write one with --save_stats).")
      mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
  except (OSError, ValueError) as e:
    if isinstance(e, StatisticsFileError):
      raise
    raise StatisticsFileError(f"Cannot read statistics file {path}: {e}") from e
  if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
    raise StatisticsFileError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit "
                              "together (expected (D,) and (D, D)).")
  return mu, sigma
