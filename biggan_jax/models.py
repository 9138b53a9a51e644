"""BigGAN and BigGAN-deep generators and discriminators.

Architectures (channel multipliers of `ch` per block, per output resolution)
follow BigGAN-PyTorch, so parameter counts equal the published models'.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from biggan_jax.layers import (SN_EVAL_MODES, BatchNorm, DBlock, DBlockDeep, GBlock, GBlockDeep,
                               SelfAttention, SNConv, SNDense, SNEmbed, orthogonal_init)
from gan_core.errors import ConfigError

Dtype = Any

# Generator: (input multipliers, output multipliers) per block; every block upsamples 2x.
G_ARCH = {
    32: ((4, 4, 4), (4, 4, 4)),
    64: ((16, 16, 8, 4), (16, 8, 4, 2)),
    128: ((16, 16, 8, 4, 2), (16, 8, 4, 2, 1)),
    256: ((16, 16, 8, 8, 4, 2), (16, 8, 8, 4, 2, 1)),
    512: ((16, 16, 8, 8, 4, 2, 1), (16, 8, 8, 4, 2, 1, 1)),
}
# Discriminator: (input multipliers, output multipliers, downsample per block); the image
# (3 channels) enters the first block.
D_ARCH = {
    32: ((4, 4, 4), (4, 4, 4, 4), (True, True, False, False)),
    64: ((1, 2, 4, 8), (1, 2, 4, 8, 16), (True, True, True, True, False)),
    128: ((1, 2, 4, 8, 16), (1, 2, 4, 8, 16, 16), (True,) * 5 + (False,)),
    256: ((1, 2, 4, 8, 8, 16), (1, 2, 4, 8, 8, 16, 16), (True,) * 6 + (False,)),
    512: ((1, 1, 2, 4, 8, 8, 16), (1, 1, 2, 4, 8, 8, 16, 16), (True,) * 7 + (False,)),
}
# BigGAN-deep discriminator: (input multipliers, output multipliers, downsample per stage).
D_DEEP_ARCH = {
    32: ((4, 4, 4), (4, 4, 4), (True, True, False)),
    64: ((1, 2, 4, 8), (2, 4, 8, 16), (True,) * 4),
    128: ((1, 2, 4, 8, 16), (2, 4, 8, 16, 16), (True,) * 5),
    256: ((1, 2, 4, 8, 8, 16), (2, 4, 8, 8, 16, 16), (True,) * 6),
    512: ((1, 1, 2, 4, 8, 8, 16), (1, 2, 4, 8, 8, 16, 16), (True,) * 7),
}
BOTTOM_WIDTH = 4
# BigGAN-PyTorch builds G's output BN with eps 1e-5 whatever its BN_eps (which only reaches
# the conditional BNs); so do we by default (`model.output_bn_eps`), so that its checkpoints
# import exactly. The TF-Hub BigGAN-deep modules use 1e-4 there as everywhere.
OUTPUT_BN_EPS = 1e-5


def _check_resolution(resolution: int) -> None:
  if resolution not in G_ARCH:
    raise ConfigError(f"model.resolution={resolution} is not supported; choose one of "
                     f"{sorted(G_ARCH)}")


def _linear_to_feature_map(h: jax.Array, channels: int) -> jax.Array:
  # BigGAN-PyTorch views the linear output as (N, C, 4, 4); keeping that order makes
  # its weights a plain transpose away.
  h = h.reshape(h.shape[0], channels, BOTTOM_WIDTH, BOTTOM_WIDTH)
  return jnp.transpose(h, (0, 2, 3, 1))


class Generator(nn.Module):
  """BigGAN generator (Brock et al. 2019, BigGAN-PyTorch layout).

  With `hierarchical` latents, z (dim_z) is split into num_blocks + 1 equal
  chunks: chunk 0 feeds the first linear layer and block i is conditioned on
  concat(shared_embedding(y), chunk i+1). `train=True` normalises with batch
  statistics (cross-replica under a sharded jit).
  """
  resolution: int = 128
  ch: int = 96
  dim_z: int = 120
  num_classes: int = 1000
  shared_dim: int = 128
  hierarchical: bool = True
  attention_resolutions: Sequence[int] = (64,)
  bn_eps: float = 1e-5
  bn_momentum: float = 0.1
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  output_bn_eps: float = OUTPUT_BN_EPS
  remat: bool = False
  attention_query_chunk: int = 0

  @property
  def num_blocks(self) -> int:
    return len(G_ARCH[self.resolution][0])

  @nn.compact
  def __call__(self, z: jax.Array, y: jax.Array, train: bool = True,
               truncation: float | None = None) -> jax.Array:
    del truncation  # Only the TF-Hub BigGAN-deep variant's statistics depend on it.
    _check_resolution(self.resolution)
    in_mults, out_mults = G_ARCH[self.resolution]
    shared = nn.Embed(self.num_classes, self.shared_dim, embedding_init=orthogonal_init,
                      name="shared")(y)
    if self.hierarchical:
      num_slots = self.num_blocks + 1
      if self.dim_z % num_slots:
        raise ConfigError(f"model.dim_z={self.dim_z} must be divisible by the number of latent "
                         f"chunks ({num_slots} = blocks + 1) for hierarchical latents")
      chunks = jnp.split(z, num_slots, axis=-1)
      z_first = chunks[0]
      conds = [jnp.concatenate([shared, c], axis=-1) for c in chunks[1:]]
    else:
      z_first, conds = z, [shared] * self.num_blocks
    channels = in_mults[0] * self.ch
    h = SNDense(channels * BOTTOM_WIDTH ** 2, sn_eps=self.sn_eps, dtype=self.dtype,
                name="linear")(z_first)
    h = _linear_to_feature_map(h, channels)
    resolution = BOTTOM_WIDTH
    for index, out_mult in enumerate(out_mults):
      h = _remat(GBlock, self.remat, 3)(
          out_mult * self.ch, True, self.bn_eps, self.bn_momentum, self.sn_eps, self.dtype,
          name=f"block{index}")(h, conds[index], train)
      resolution *= 2
      if resolution in self.attention_resolutions:
        h = SelfAttention(self.sn_eps, self.dtype, query_chunk=self.attention_query_chunk,
                          name=f"attention{index}")(h)
    return _generator_output(self, h, train)


class Discriminator(nn.Module):
  """BigGAN projection discriminator: residual down-blocks, ReLU, sum pooling,
  linear output plus <embed(y), features>."""
  resolution: int = 128
  ch: int = 96
  num_classes: int = 1000
  attention_resolutions: Sequence[int] = (64,)
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  remat: bool = False
  attention_query_chunk: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    _check_resolution(self.resolution)
    _, out_mults, downsample = D_ARCH[self.resolution]
    h = x.astype(self.dtype)
    resolution = self.resolution
    for index, (out_mult, down) in enumerate(zip(out_mults, downsample)):
      h = _remat(DBlock, self.remat)(out_mult * self.ch, down, index > 0, self.sn_eps,
                                     self.dtype, name=f"block{index}")(h)
      resolution //= 2 if down else 1
      if resolution in self.attention_resolutions:
        h = SelfAttention(self.sn_eps, self.dtype, query_chunk=self.attention_query_chunk,
                          name=f"attention{index}")(h)
    return _projection_head(h, y, self.num_classes, self.sn_eps)


def _remat(block: type[nn.Module], remat: bool, *static_argnums: int) -> type[nn.Module]:
  """`block`, or its rematerialised form (activations recomputed in the backward pass
  instead of stored; same parameters, same function). static_argnums count `self` as 0."""
  return nn.remat(block, static_argnums=static_argnums) if remat else block


def _generator_output(g: nn.Module, h: jax.Array, train: bool,
                      truncation: float | None = None) -> jax.Array:
  """BN -> ReLU -> 3x3 SN conv to RGB -> tanh (float32), created inside `g`'s scope."""
  stats, sn_eval = getattr(g, "truncation_stats", 0), getattr(g, "sn_eval", "power_iteration")
  h = BatchNorm(g.output_bn_eps, g.bn_momentum, g.dtype, stats, name="output_bn")(
      h, not train, truncation)
  h = SNConv(3, 3, sn_eps=g.sn_eps, dtype=g.dtype, sn_eval=sn_eval,
             name="output_conv")(nn.relu(h))
  return jnp.tanh(h.astype(jnp.float32))


def _projection_head(h: jax.Array, y: jax.Array, num_classes: int, sn_eps: float) -> jax.Array:
  features = jnp.sum(nn.relu(h).astype(jnp.float32), axis=(1, 2))
  out = SNDense(1, sn_eps=sn_eps, name="linear")(features)[:, 0]
  embedding = SNEmbed(num_classes, features.shape[-1], sn_eps, name="embed")(y)
  return out + jnp.sum(embedding * features, axis=-1)


class GeneratorDeep(nn.Module):
  """BigGAN-deep generator: `depth` bottleneck blocks per stage, the whole z
  concatenated with the shared embedding conditions the first linear layer and
  every conditional BN.

  `truncation_stats` > 0 and `sn_eval='stored'` make it the TF-Hub BigGAN-deep
  modules' generator in evaluation (per-truncation BN statistics read at the static
  `truncation`, torch spectral_norm's stored sigma); see biggan_jax/layers.py.
  """
  resolution: int = 128
  ch: int = 128
  dim_z: int = 128
  num_classes: int = 1000
  shared_dim: int = 128
  depth: int = 2
  attention_resolutions: Sequence[int] = (64,)
  bn_eps: float = 1e-5
  bn_momentum: float = 0.1
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  output_bn_eps: float = OUTPUT_BN_EPS
  truncation_stats: int = 0
  sn_eval: str = "power_iteration"
  remat: bool = False
  attention_query_chunk: int = 0

  @nn.compact
  def __call__(self, z: jax.Array, y: jax.Array, train: bool = True,
               truncation: float | None = None) -> jax.Array:
    _check_resolution(self.resolution)
    in_mults, out_mults = G_ARCH[self.resolution]
    shared = nn.Embed(self.num_classes, self.shared_dim, embedding_init=orthogonal_init,
                      name="shared")(y)
    cond = jnp.concatenate([shared, z], axis=-1)
    channels = in_mults[0] * self.ch
    h = SNDense(channels * BOTTOM_WIDTH ** 2, sn_eps=self.sn_eps, dtype=self.dtype,
                sn_eval=self.sn_eval, name="linear")(cond)
    h = _linear_to_feature_map(h, channels)
    resolution = BOTTOM_WIDTH
    for index, (in_mult, out_mult) in enumerate(zip(in_mults, out_mults)):
      for sub in range(self.depth):
        last = sub == self.depth - 1
        h = _remat(GBlockDeep, self.remat, 3, 4)(
            (out_mult if last else in_mult) * self.ch, last, 4, self.bn_eps,
            self.bn_momentum, self.sn_eps, self.dtype, self.truncation_stats,
            self.sn_eval, name=f"block{index}_{sub}")(h, cond, train, truncation)
      resolution *= 2
      if resolution in self.attention_resolutions:
        h = SelfAttention(self.sn_eps, self.dtype, self.sn_eval, self.attention_query_chunk,
                          name=f"attention{index}")(h)
    return _generator_output(self, h, train, truncation)


class DiscriminatorDeep(nn.Module):
  """BigGAN-deep discriminator: 3x3 input conv, `depth` bottleneck blocks per
  stage (the first of each stage downsamples), projection head."""
  resolution: int = 128
  ch: int = 128
  num_classes: int = 1000
  depth: int = 2
  attention_resolutions: Sequence[int] = (64,)
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  remat: bool = False
  attention_query_chunk: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    _check_resolution(self.resolution)
    in_mults, out_mults, downsample = D_DEEP_ARCH[self.resolution]
    h = SNConv(in_mults[0] * self.ch, 3, sn_eps=self.sn_eps, dtype=self.dtype,
               name="input_conv")(x.astype(self.dtype))
    resolution = self.resolution
    for index, (out_mult, down) in enumerate(zip(out_mults, downsample)):
      for sub in range(self.depth):
        h = _remat(DBlockDeep, self.remat)(out_mult * self.ch, down and sub == 0, 4,
                                           self.sn_eps, self.dtype,
                                           name=f"block{index}_{sub}")(h)
      resolution //= 2 if down else 1
      if resolution in self.attention_resolutions:
        h = SelfAttention(self.sn_eps, self.dtype, query_chunk=self.attention_query_chunk,
                          name=f"attention{index}")(h)
    return _projection_head(h, y, self.num_classes, self.sn_eps)


@dataclasses.dataclass(frozen=True)
class ModelPair:
  generator: nn.Module
  discriminator: nn.Module
  dim_z: int
  num_classes: int
  resolution: int


# model.attention_query_chunk=-1 ('auto') on CPU: the attention in chunks of this many query
# positions where it divides them. On XLA:CPU that is faster, not only smaller (README,
# "Benchmarks and performance"); on GPU/TPU 'auto' keeps the whole map until a device times it.
CPU_ATTENTION_QUERY_CHUNK = 1024


def resolve_attention_query_chunk(setting: int, platform: str | None = None) -> int:
  """The `query_chunk` of `layers.attend` for `model.attention_query_chunk` on `platform`
  (default: JAX's default backend): -1 is 'auto', 0 the whole map, N > 0 chunks of N."""
  if setting < -1:
    raise ConfigError(f"model.attention_query_chunk={setting}: -1 (auto: chunks of "
                      f"{CPU_ATTENTION_QUERY_CHUNK} on CPU where they divide the attention's "
                      "positions, the whole map elsewhere), 0 (the whole attention map at "
                      "once) or a positive divisor of the attention's positions")
  if setting == -1:
    platform = platform or jax.default_backend()
    return -CPU_ATTENTION_QUERY_CHUNK if platform == "cpu" else 0
  return setting


def build_models(model_config: Any, num_classes: int,
                 platform: str | None = None) -> ModelPair:
  """Builds G and D from `config.model` (see biggan_jax/config.py). `platform` ('cpu',
  'gpu', 'tpu'; default JAX's default backend) is the one the models will run on: it
  resolves `model.attention_query_chunk=-1`."""
  m = model_config
  dtype = jnp.dtype(m.compute_dtype)
  num_classes = max(num_classes, 1)  # Unconditional data: one class everybody shares.
  common = dict(resolution=m.resolution, num_classes=num_classes, sn_eps=m.sn_eps, dtype=dtype,
                remat=bool(m.get("remat", False)),
                attention_query_chunk=resolve_attention_query_chunk(
                    int(m.get("attention_query_chunk", 0)), platform))
  # Fields added after the first checkpoints were written: absent means the old behaviour.
  output_bn_eps = m.get("output_bn_eps", OUTPUT_BN_EPS)
  truncation_stats = m.get("truncation_bn_stats", 0)
  sn_eval = m.get("sn_eval", "power_iteration")
  if sn_eval not in SN_EVAL_MODES:
    raise ConfigError(f"model.sn_eval={sn_eval!r}: choose one of {SN_EVAL_MODES}")
  if truncation_stats < 0 or truncation_stats == 1:
    raise ConfigError(f"model.truncation_bn_stats={truncation_stats}: 0 (ordinary running "
                      "statistics) or the number of stored truncation values (51 for TF-Hub)")
  if m.architecture == "biggan" and (truncation_stats or sn_eval != "power_iteration"):
    raise ConfigError("model.truncation_bn_stats and model.sn_eval='stored' describe the "
                      "TF-Hub BigGAN-deep generators; they need model.architecture="
                      "'biggan_deep'")
  if m.architecture == "biggan":
    g = Generator(ch=m.ch, dim_z=m.dim_z, shared_dim=m.shared_dim, hierarchical=m.hierarchical,
                  attention_resolutions=tuple(m.g_attention), bn_eps=m.bn_eps,
                  output_bn_eps=output_bn_eps, **common)
    d = Discriminator(ch=m.ch, attention_resolutions=tuple(m.d_attention), **common)
  elif m.architecture == "biggan_deep":
    g = GeneratorDeep(ch=m.ch, dim_z=m.dim_z, shared_dim=m.shared_dim, depth=m.depth,
                      attention_resolutions=tuple(m.g_attention), bn_eps=m.bn_eps,
                      output_bn_eps=output_bn_eps, truncation_stats=truncation_stats,
                      sn_eval=sn_eval, **common)
    d = DiscriminatorDeep(ch=m.ch, depth=m.depth, attention_resolutions=tuple(m.d_attention),
                          **common)
  else:
    raise ConfigError(f"model.architecture={m.architecture!r}: choose 'biggan' or 'biggan_deep'")
  return ModelPair(g, d, m.dim_z, num_classes, m.resolution)
