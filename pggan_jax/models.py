"""The PGGAN generator and discriminator (the paper's Table 2), with fade-in.

Both networks hold the layers of every resolution from 4x4 to `resolution`
(including a toRGB / fromRGB at each), and are called at the current training
resolution `res`. While a new resolution fades in (`fading=True`), G outputs

    upscale2d(toRGB_{res/2}(features_{res/2})) blended with toRGB_res(features_res)

with weight `alpha` on the new branch, and D blends its new block (applied to
fromRGB_res(x)) with fromRGB_{res/2}(downscale2d(x)) the same way. `alpha` is a
traced scalar, so one compiled function serves a whole fade-in; `res` and
`fading` are static (at most two compilations per resolution). Working at the
current resolution is equivalent to the official code's full-size networks
with nearest upscaling of G's output and of the reals.

Widths: nf(stage) = min(fmap_base / 2**(stage * fmap_decay), fmap_max); the
block at resolution 2**r has nf(r - 1) channels. G's first dense output is a
(C, 4, 4) view and D's dense input a (C, 4, 4) flattening, as in the official
NCHW code, so its weights import as plain copies.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gan_core.errors import ConfigError
from pggan_jax.layers import (SQRT2, EqualizedConv, EqualizedDense, downscale2d, leaky_relu,
                              minibatch_stddev, pixel_norm, upscale2d)


def log2_exact(value: int, what: str) -> int:
  r = int(round(math.log2(value))) if value > 0 else -1
  if r < 2 or 2 ** r != value:
    raise ConfigError(f"{what}={value} must be a power of two >= 4")
  return r


def num_features(stage: int, fmap_base: int, fmap_max: int, fmap_decay: float = 1.0) -> int:
  return min(int(fmap_base / (2.0 ** (stage * fmap_decay))), fmap_max)


def _pixel_norm_or_identity(enabled: bool, epsilon: float):
  return (lambda v: pixel_norm(v, epsilon)) if enabled else (lambda v: v)


def _lerp(a, b, t):
  """a + (b - a) * clip(t, 0, 1): the official `lerp_clip`."""
  return a + (b - a) * jnp.clip(t, 0.0, 1.0).astype(a.dtype)


class GBlock4(nn.Module):
  """Latent -> 4x4: dense (viewed as C x 4 x 4) + bias, LReLU, PN; 3x3 conv, LReLU, PN."""
  features: int
  use_pixelnorm: bool = True
  pixelnorm_eps: float = 1e-8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latents: jax.Array) -> jax.Array:
    pn = _pixel_norm_or_identity(self.use_pixelnorm, self.pixelnorm_eps)
    c = self.features
    x = EqualizedDense(c * 16, gain=SQRT2 / 4, use_bias=False, dtype=self.dtype,
                       name="dense")(latents)
    x = x.reshape(-1, c, 4, 4).transpose(0, 2, 3, 1)
    x = x + self.param("bias", nn.initializers.zeros, (c,)).astype(self.dtype)
    x = pn(leaky_relu(x))
    return pn(leaky_relu(EqualizedConv(c, 3, dtype=self.dtype, name="conv")(x)))


class GBlock(nn.Module):
  """Nearest 2x upsample, then two 3x3 convs, each followed by LReLU and PN."""
  features: int
  use_pixelnorm: bool = True
  pixelnorm_eps: float = 1e-8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pn = _pixel_norm_or_identity(self.use_pixelnorm, self.pixelnorm_eps)
    x = upscale2d(x)
    x = pn(leaky_relu(EqualizedConv(self.features, 3, dtype=self.dtype, name="conv0")(x)))
    return pn(leaky_relu(EqualizedConv(self.features, 3, dtype=self.dtype, name="conv1")(x)))


class DBlock(nn.Module):
  """Two 3x3 convs with LReLU (the second to the next width), then 2x2 average pooling."""
  features: int
  out_features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = leaky_relu(EqualizedConv(self.features, 3, dtype=self.dtype, name="conv0")(x))
    x = leaky_relu(EqualizedConv(self.out_features, 3, dtype=self.dtype, name="conv1")(x))
    return downscale2d(x)


class DBlock4(nn.Module):
  """Minibatch stddev, 3x3 conv, dense to nf(0), dense to 1 (+ label logits)."""
  features: int
  dense_features: int
  num_classes: int = 0
  mbstd_group_size: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    if self.mbstd_group_size > 1:
      x = minibatch_stddev(x, self.mbstd_group_size)
    x = leaky_relu(EqualizedConv(self.features, 3, dtype=self.dtype, name="conv")(x))
    x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # NCHW flattening, as officially.
    x = leaky_relu(EqualizedDense(self.dense_features, dtype=self.dtype, name="dense0")(x))
    out = EqualizedDense(1 + self.num_classes, gain=1.0, dtype=self.dtype, name="dense1")(x)
    out = out.astype(jnp.float32)
    return out[:, 0], (out[:, 1:] if self.num_classes else None)


class Generator(nn.Module):
  resolution: int = 1024
  num_channels: int = 3
  num_classes: int = 0
  latent_size: int = 512
  fmap_base: int = 8192
  fmap_max: int = 512
  fmap_decay: float = 1.0
  normalize_latents: bool = True
  use_pixelnorm: bool = True
  pixelnorm_eps: float = 1e-8
  dtype: Any = jnp.float32

  def nf(self, stage: int) -> int:
    return num_features(stage, self.fmap_base, self.fmap_max, self.fmap_decay)

  @nn.compact
  def __call__(self, latents: jax.Array, labels: jax.Array | None = None, *,
               res: int | None = None, alpha: jax.Array | float = 1.0,
               fading: bool = False) -> jax.Array:
    """latents [N, latent_size] (+ int labels [N]) -> images [N, res, res, C] (float32).

    At initialisation every resolution's layers (all toRGBs too) are created.
    """
    max_log2 = log2_exact(self.resolution, "resolution")
    res = self.resolution if res is None else res
    res_log2 = log2_exact(res, "res")
    if res_log2 > max_log2:
      raise ValueError(f"res={res} exceeds the network's resolution {self.resolution}")
    fading = fading and res_log2 > 2
    init = self.is_initializing()
    kw = dict(use_pixelnorm=self.use_pixelnorm, pixelnorm_eps=self.pixelnorm_eps, dtype=self.dtype)
    to_rgb = {r: EqualizedConv(self.num_channels, 1, gain=1.0, dtype=self.dtype,
                               name=f"to_rgb_{2 ** r}") for r in range(2, max_log2 + 1)}
    x = latents.astype(jnp.float32)
    if self.num_classes:
      x = jnp.concatenate([x, jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)], -1)
    if self.normalize_latents:
      x = pixel_norm(x, self.pixelnorm_eps)
    x = GBlock4(self.nf(1), **kw, name="b4")(x.astype(self.dtype))
    previous = x
    last = max_log2 if init else res_log2
    for r in range(3, last + 1):
      if init:
        to_rgb[r - 1](x)
      previous = x
      x = GBlock(self.nf(r - 1), **kw, name=f"b{2 ** r}")(x)
    images = to_rgb[last](x)
    if fading:
      images = _lerp(images, upscale2d(to_rgb[res_log2 - 1](previous)), 1.0 - alpha)
    return images.astype(jnp.float32)


class Discriminator(nn.Module):
  resolution: int = 1024
  num_classes: int = 0
  fmap_base: int = 8192
  fmap_max: int = 512
  fmap_decay: float = 1.0
  mbstd_group_size: int = 4
  dtype: Any = jnp.float32

  def nf(self, stage: int) -> int:
    return num_features(stage, self.fmap_base, self.fmap_max, self.fmap_decay)

  @nn.compact
  def __call__(self, images: jax.Array, *, res: int | None = None,
               alpha: jax.Array | float = 1.0, fading: bool = False
               ) -> tuple[jax.Array, jax.Array | None]:
    """images [N, res, res, C] -> (scores [N], label logits [N, classes] or None), float32."""
    max_log2 = log2_exact(self.resolution, "resolution")
    res = images.shape[1] if res is None else res
    res_log2 = log2_exact(res, "res")
    if res_log2 > max_log2 or images.shape[1:3] != (res, res):
      raise ValueError(f"images of shape {images.shape} do not match res={res} "
                       f"(network resolution {self.resolution})")
    fading = fading and res_log2 > 2
    from_rgb = {r: EqualizedConv(self.nf(r - 1), 1, dtype=self.dtype, name=f"from_rgb_{2 ** r}")
                for r in range(2, max_log2 + 1)}
    blocks = {r: DBlock(self.nf(r - 1), self.nf(r - 2), dtype=self.dtype, name=f"b{2 ** r}")
              for r in range(3, max_log2 + 1)}
    images = images.astype(self.dtype)
    if self.is_initializing():  # Create every resolution's layers.
      small = images
      for r in range(res_log2, 1, -1):
        from_rgb[r](small)
        small = downscale2d(small)
      x = jnp.zeros(images.shape[:1] + (2 ** max_log2, 2 ** max_log2, self.nf(max_log2 - 1)),
                    self.dtype)
      for r in range(max_log2, res_log2, -1):
        x = blocks[r](x)
    x = leaky_relu(from_rgb[res_log2](images))
    for r in range(res_log2, 2, -1):
      x = blocks[r](x)
      if fading and r == res_log2:
        y = leaky_relu(from_rgb[r - 1](downscale2d(images)))
        x = _lerp(x, y, 1.0 - alpha)
    return DBlock4(self.nf(1), self.nf(0), self.num_classes, self.mbstd_group_size,
                   dtype=self.dtype, name="b4")(x)


def build_models(model: ml_collections.ConfigDict, num_classes: int
                 ) -> tuple[Generator, Discriminator]:
  """G and D from a config's `model` section (num_classes 0: unconditional)."""
  dtype = jnp.dtype(model.compute_dtype)
  common = dict(resolution=model.resolution, num_classes=num_classes, fmap_base=model.fmap_base,
                fmap_max=model.fmap_max, fmap_decay=model.fmap_decay, dtype=dtype)
  latent_size = model.latent_size or num_features(0, model.fmap_base, model.fmap_max,
                                                  model.fmap_decay)
  generator = Generator(num_channels=model.num_channels, latent_size=latent_size,
                        normalize_latents=model.normalize_latents,
                        use_pixelnorm=model.use_pixelnorm, pixelnorm_eps=model.pixelnorm_eps,
                        **common)
  discriminator = Discriminator(mbstd_group_size=model.mbstd_group_size, **common)
  return generator, discriminator
