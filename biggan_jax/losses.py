"""GAN losses (means over the global batch, computed in float32)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from gan_core.errors import ConfigError


def hinge_d_loss(d_real: jax.Array, d_fake: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Returns (E[relu(1 - D(x))], E[relu(1 + D(G(z)))]); D's loss is their sum."""
  return (jnp.mean(jax.nn.relu(1.0 - d_real.astype(jnp.float32))),
          jnp.mean(jax.nn.relu(1.0 + d_fake.astype(jnp.float32))))


def hinge_g_loss(d_fake: jax.Array) -> jax.Array:
  return -jnp.mean(d_fake.astype(jnp.float32))


def non_saturating_d_loss(d_real: jax.Array, d_fake: jax.Array) -> tuple[jax.Array, jax.Array]:
  return (jnp.mean(jax.nn.softplus(-d_real.astype(jnp.float32))),
          jnp.mean(jax.nn.softplus(d_fake.astype(jnp.float32))))


def non_saturating_g_loss(d_fake: jax.Array) -> jax.Array:
  return jnp.mean(jax.nn.softplus(-d_fake.astype(jnp.float32)))


def pair_diversity(images: jax.Array, z: jax.Array) -> jax.Array:
  """DSGAN's ratio for the pairs of rows (2i, 2i + 1): mean|x_a - x_b| / mean|z_a - z_b|.

  images: (2n, ...) generator outputs, z: (2n, dim_z) their latents; returns (n,) float32.
  """
  x = images.astype(jnp.float32).reshape((-1, 2) + images.shape[1:])
  dx = jnp.mean(jnp.abs(x[:, 0] - x[:, 1]), axis=tuple(range(1, x.ndim - 1)))
  z = z.astype(jnp.float32).reshape(-1, 2, z.shape[-1])
  return dx / jnp.mean(jnp.abs(z[:, 0] - z[:, 1]), axis=-1)


LOSSES = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "non_saturating": (non_saturating_d_loss, non_saturating_g_loss),
}


def get_losses(name: str):
  if name not in LOSSES:
    raise ConfigError(f"config.loss={name!r}: choose one of {sorted(LOSSES)}")
  return LOSSES[name]
