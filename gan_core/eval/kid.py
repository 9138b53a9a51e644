"""Kernel Inception Distance (Binkowski et al. 2018), as torch-fidelity computes it.

`num_subsets` draws of `subset_size` rows without replacement from each set
(a seeded `numpy.random.RandomState`; per subset the first set, then the
second, as torch-fidelity does, so the same seed gives the same subsets);
polynomial kernel `(x.y / d + 1)^3`; unbiased MMD^2 (kernel diagonals excluded
within a set); mean and std (ddof 0) over subsets. float64 throughout.
"""
from __future__ import annotations

import numpy as np

DEFAULT_SEED = 2020


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3,
                      coef0: float = 1.0) -> np.ndarray:
  return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
  """Unbiased MMD^2 from kernel matrices of two equally sized samples."""
  m = len(k_xx)
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(within - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *,
                              num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = DEFAULT_SEED) -> tuple[float, float]:
  """(mean, std) of the KID over `num_subsets` random subsets of `subset_size`."""
  features1 = np.asarray(features1, np.float64)
  features2 = np.asarray(features2, np.float64)
  if features1.ndim != 2 or features1.shape[1:] != features2.shape[1:]:
    raise ValueError(f"KID needs two (N, D) feature sets of the same D, got {features1.shape} "
                     f"and {features2.shape}.")
  if min(len(features1), len(features2)) < subset_size or subset_size < 2:
    raise ValueError(
        f"KID subset size {subset_size} is larger than the sets ({len(features1)} and "
        f"{len(features2)} samples) or below 2; pass a subset size of at most "
        f"{min(len(features1), len(features2))} (--kid_subset_size).")
  rng = np.random.RandomState(seed)
  values = np.zeros(num_subsets)
  for i in range(num_subsets):
    x = features1[rng.choice(len(features1), subset_size, replace=False)]
    y = features2[rng.choice(len(features2), subset_size, replace=False)]
    values[i] = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y),
                              polynomial_kernel(y, y))
  return float(values.mean()), float(values.std())
