"""Exponential moving average of model variables (G-EMA)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_update(average: Any, current: Any, decay: jax.Array | float) -> Any:
  """`decay * average + (1 - decay) * current` leaf-wise; decay=0 copies `current` exactly."""
  decay = jnp.asarray(decay, jnp.float32)
  return jax.tree.map(lambda a, c: (decay * a + (1.0 - decay) * c).astype(a.dtype),
                      average, current)
