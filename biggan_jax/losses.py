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


LOSSES = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "non_saturating": (non_saturating_d_loss, non_saturating_g_loss),
}


def get_losses(name: str):
  if name not in LOSSES:
    raise ConfigError(f"config.loss={name!r}: choose one of {sorted(LOSSES)}")
  return LOSSES[name]
