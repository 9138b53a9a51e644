"""PGGAN building blocks: equalized learning rate, pixel norm, minibatch stddev.

Equalized learning rate (paper section 4.1): every weight is stored as N(0, 1)
and scaled at run time by gain / sqrt(fan_in), so Adam's per-parameter step
sizes act on a uniform scale. Biases start at zero and are not scaled. Kernel
layouts follow the official TF code (dense [in, out], conv [k, k, in, out]),
so importing its weights is a plain copy.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

SQRT2 = math.sqrt(2.0)


def leaky_relu(x: jax.Array) -> jax.Array:
  return jnp.where(x >= 0, x, x * jnp.asarray(0.2, x.dtype))


def pixel_norm(x: jax.Array, epsilon: float = 1e-8) -> jax.Array:
  """x / sqrt(mean over channels of x^2 + eps), per pixel (channels last); f32 inside."""
  x32 = x.astype(jnp.float32)
  return (x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + epsilon)
          ).astype(x.dtype)


def minibatch_stddev(x: jax.Array, group_size: int = 4) -> jax.Array:
  """Appends the minibatch standard deviation as one extra feature map (NHWC).

  Groups have size G = min(group_size, N) and are strided: the batch is viewed
  as [G, N/G, ...], so sample n belongs to group n mod (N/G). Per group: the
  standard deviation over the group of every feature and pixel (sqrt(var + 1e-8)),
  averaged into one scalar, broadcast to a map. Computed in float32.
  """
  n, h, w, c = x.shape
  g = min(group_size, n)
  if n % g:
    raise ValueError(f"minibatch stddev: batch {n} is not divisible by the group size {g}")
  y = x.astype(jnp.float32).reshape(g, n // g, h, w, c)
  y = y - jnp.mean(y, axis=0, keepdims=True)
  y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)  # [M, H, W, C]
  y = jnp.mean(y, axis=(1, 2, 3))  # [M]
  y = jnp.tile(y, g).astype(x.dtype)  # Sample n -> group n mod M.
  return jnp.concatenate([x, jnp.broadcast_to(y[:, None, None, None], (n, h, w, 1))], axis=-1)


def upscale2d(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling (NHWC)."""
  if factor == 1:
    return x
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def downscale2d(x: jax.Array, factor: int = 2) -> jax.Array:
  """Box (average) downsampling by `factor` (NHWC)."""
  if factor == 1:
    return x
  n, h, w, c = x.shape
  return jnp.mean(x.reshape(n, h // factor, factor, w // factor, factor, c), axis=(2, 4))


def _standard_normal(key, shape, dtype=jnp.float32):
  return jax.random.normal(key, shape, dtype)


class EqualizedDense(nn.Module):
  """Dense layer with equalized learning rate: x @ (W * gain / sqrt(fan_in)) + b."""
  features: int
  gain: float = SQRT2
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", _standard_normal, (fan_in, self.features))
    scale = self.gain / math.sqrt(fan_in)
    y = jnp.dot(x.astype(self.dtype), (kernel * scale).astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
    return y


class EqualizedConv(nn.Module):
  """Stride-1 'same' convolution with equalized learning rate (NHWC, HWIO kernel)."""
  features: int
  kernel_size: int = 3
  gain: float = SQRT2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, fan_in = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", _standard_normal, (k, k, fan_in, self.features))
    scale = self.gain / math.sqrt(k * k * fan_in)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), (kernel * scale).astype(self.dtype), (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
