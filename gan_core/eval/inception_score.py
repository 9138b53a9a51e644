"""Inception Score, as the TF reference (improved-GAN) and torch-fidelity compute it.

Softmax of the 1008-way logits without bias, in float64; 10 splits of
consecutive rows `[k N / 10, (k + 1) N / 10)` (the TF reference does not
shuffle); per split `exp(mean_i KL(p_i || mean p))`; mean and std (ddof 0).
"""
from __future__ import annotations

import numpy as np


def inception_score(logits: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
  """(mean, std) of the Inception Score over `num_splits` consecutive splits."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or len(logits) < num_splits:
    raise ValueError(f"The Inception Score needs at least {num_splits} logit rows (N, C), got "
                     f"{logits.shape}.")
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  p = np.exp(log_p)
  n = len(logits)
  scores = []
  for k in range(num_splits):
    rows = slice(k * n // num_splits, (k + 1) * n // num_splits)
    p_split, log_p_split = p[rows], log_p[rows]
    log_marginal = np.log(p_split.mean(axis=0, keepdims=True))
    kl = (p_split * (log_p_split - log_marginal)).sum(axis=1).mean()
    scores.append(np.exp(kl))
  return float(np.mean(scores)), float(np.std(scores))
