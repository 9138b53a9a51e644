"""The FID Inception network ("inception-2015-12-05") in Flax, NHWC.

This is the network TTUR, pytorch-fid and torch-fidelity use for FID, IS and
KID, not torchvision's ImageNet InceptionV3. It differs from the latter in four
places that each move the features by tens of percent: the input is resized
with TensorFlow 1's legacy bilinear rule; the average-pool branches of the A,
C and first E blocks do not count padding; the pool branch of the last block
is a max pool; the classifier has 1008 outputs. Inputs are uint8 images of any
size; outputs are the 2048-d pool features (FID, KID), the 1008-way logits
without bias (IS) and, on request, the 64/192/768-d intermediate features.

Parameters mirror the `.pth` layout: each `Conv + BatchNorm` unit holds
`conv/kernel` (HWIO) and `bn/{scale,bias,mean,var}`; `weights.py` converts.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

INPUT_SIZE = 299
BN_EPSILON = 1e-3
POOL_DIM = 2048
NUM_LOGITS = 1008
# Names of the outputs `FIDInceptionV3` can return, in network order.
OUTPUT_NAMES = ("64", "192", "768", "pool", "logits_unbiased", "logits")


# ----------------------------------------------------------------------------- resize


@functools.lru_cache(maxsize=64)
def tf1_resize_tables(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Index and weight tables of TF1's legacy bilinear resize along one axis.

  TF1 (`align_corners=False`, no half-pixel centres) samples output pixel i at
  `float32(i) * float32(in/out)`. The tables are built on the host in float32
  because building them inside jit (in a fused computation) rounds differently
  and drifts by ~1e-5.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  source = np.arange(out_size, dtype=np.float32) * scale
  lower = np.floor(source)
  frac = (source - lower).astype(np.float32)
  lower = lower.astype(np.int32)
  upper = np.minimum(lower + 1, in_size - 1).astype(np.int32)
  return lower, upper, frac


def resize_bilinear_tf1(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """Resizes float32 NHWC images to `size` x `size` exactly as TF1's legacy bilinear.

  Interpolates along the width first, then the height, with TF's
  `a + (b - a) * t` form. A `size` x `size` input comes back unchanged.
  """
  _, height, width, _ = images.shape
  if (height, width) == (size, size):
    return images
  y_lo, y_hi, y_t = tf1_resize_tables(height, size)
  x_lo, x_hi, x_t = tf1_resize_tables(width, size)
  top = jnp.take(images, y_lo, axis=1)
  bottom = jnp.take(images, y_hi, axis=1)
  x_t = jnp.asarray(x_t)[None, None, :, None]
  y_t = jnp.asarray(y_t)[None, :, None, None]

  def along_width(rows):
    left = jnp.take(rows, x_lo, axis=2)
    right = jnp.take(rows, x_hi, axis=2)
    return left + (right - left) * x_t

  top, bottom = along_width(top), along_width(bottom)
  return top + (bottom - top) * y_t


# ----------------------------------------------------------------------------- layers


def _pairs(value: int | Sequence[int]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class ConvBN(nn.Module):
  """Conv (no bias) -> inference BatchNorm (eps 1e-3) -> ReLU, BN folded into the conv."""
  features: int
  kernel_size: int | tuple[int, int]
  strides: int = 1
  padding: int | tuple[int, int] = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, folded_only: bool = False):
    """relu(bn(conv(x))); with `folded_only`, the BN-folded (kernel, bias) instead."""
    kh, kw = _pairs(self.kernel_size)
    ph, pw = _pairs(self.padding)
    kernel = _ConvKernel((kh, kw, x.shape[-1], self.features), name="conv")()
    scale, bias, mean, var = _BatchNormStats(self.features, name="bn")()
    # (conv(x) - mean) * s + b == conv(x, W * s) + (b - mean * s): one pass over the output.
    multiplier = scale * lax.rsqrt(var + BN_EPSILON)
    kernel, bias = kernel * multiplier, bias - mean * multiplier
    if folded_only:
      return kernel, bias
    y = lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype),
        window_strides=(self.strides, self.strides), padding=((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32)
    return nn.relu(y + bias)


def pointwise_siblings(x: jax.Array, units: Sequence[ConvBN]) -> list[jax.Array]:
  """Several 1x1 ConvBN units on the same input as one wider matmul, split afterwards.

  Same arithmetic per output as separate convolutions; one large matrix product
  uses the CPU (and accelerators) better than three narrow ones.
  """
  folded = [unit(x, folded_only=True) for unit in units]
  kernel = jnp.concatenate([k[0, 0] for k, _ in folded], axis=-1)
  bias = jnp.concatenate([b for _, b in folded])
  dtype = units[0].dtype
  y = jnp.einsum("nhwc,co->nhwo", x.astype(dtype), kernel.astype(dtype),
                 precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32)
  y = nn.relu(y + bias)
  splits = np.cumsum([unit.features for unit in units])[:-1]
  return jnp.split(y, splits, axis=-1)


class _ConvKernel(nn.Module):
  """`conv/kernel` (HWIO), as the file's `X.conv.weight` (OIHW)."""
  shape: tuple[int, int, int, int]

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param("kernel", nn.initializers.lecun_normal(), self.shape)


class _BatchNormStats(nn.Module):
  """`bn/{scale,bias,mean,var}`, as the file's `X.bn.{weight,bias,running_mean,running_var}`."""
  features: int

  @nn.compact
  def __call__(self) -> tuple[jax.Array, ...]:
    shape = (self.features,)
    return (self.param("scale", nn.initializers.ones, shape),
            self.param("bias", nn.initializers.zeros, shape),
            self.param("mean", nn.initializers.zeros, shape),
            self.param("var", nn.initializers.ones, shape))


def max_pool(x: jax.Array, stride: int, padding: int = 0) -> jax.Array:
  """3x3 max pool as two separable passes of shifted maxima (XLA:CPU's reduce_window is slow)."""
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                constant_values=-jnp.inf)

  def along(axis, value):
    out = (value.shape[axis] - 3) // stride + 1
    taps = [lax.slice_in_dim(value, k, k + (out - 1) * stride + 1, stride, axis)
            for k in range(3)]
    return jnp.maximum(jnp.maximum(taps[0], taps[1]), taps[2])

  return along(2, along(1, x))


def avg_pool_excluding_padding(x: jax.Array) -> jax.Array:
  """3x3 stride-1 average pool with padding 1 that divides by the in-image count (TF).

  Separable sums of shifted slices, then one multiply by the host-computed
  reciprocal counts (2 or 3 taps per axis).
  """
  _, height, width, _ = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]
  sums = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]

  def taps(n):
    counts = np.full(n, 3.0)
    counts[0] = counts[-1] = 2.0
    return counts

  reciprocal = (1.0 / np.outer(taps(height), taps(width))).astype(np.float32)
  return sums * jnp.asarray(reciprocal)[None, :, :, None]


# ----------------------------------------------------------------------------- blocks


class BlockA(nn.Module):
  """Mixed_5b/5c/5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""
  pool_features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, dtype=self.dtype)
    b1, b5, b3 = pointwise_siblings(x, [conv(64, 1, name="branch1x1"),
                                        conv(48, 1, name="branch5x5_1"),
                                        conv(64, 1, name="branch3x3dbl_1")])
    b5 = conv(64, 5, padding=2, name="branch5x5_2")(b5)
    b3 = conv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = conv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    bp = conv(self.pool_features, 1, name="branch_pool")(avg_pool_excluding_padding(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class BlockB(nn.Module):
  """Mixed_6a: stride-2 reduction 35 -> 17."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, dtype=self.dtype)
    b3 = conv(384, 3, strides=2, name="branch3x3")(x)
    bd = conv(64, 1, name="branch3x3dbl_1")(x)
    bd = conv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = conv(96, 3, strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, max_pool(x, 2)], axis=-1)


class BlockC(nn.Module):
  """Mixed_6b..6e: factorised 7x7 convolutions."""
  channels_7x7: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, dtype=self.dtype)
    c7 = self.channels_7x7
    b1, b7, bd = pointwise_siblings(x, [conv(192, 1, name="branch1x1"),
                                        conv(c7, 1, name="branch7x7_1"),
                                        conv(c7, 1, name="branch7x7dbl_1")])
    b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = conv(192, 1, name="branch_pool")(avg_pool_excluding_padding(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class BlockD(nn.Module):
  """Mixed_7a: stride-2 reduction 17 -> 8."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, dtype=self.dtype)
    b3, b7 = pointwise_siblings(x, [conv(192, 1, name="branch3x3_1"),
                                    conv(192, 1, name="branch7x7x3_1")])
    b3 = conv(320, 3, strides=2, name="branch3x3_2")(b3)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, 3, strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, max_pool(x, 2)], axis=-1)


class BlockE(nn.Module):
  """Mixed_7b (average pool branch) and Mixed_7c (max pool branch, the FID graph's quirk)."""
  pool: str
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, dtype=self.dtype)
    b1, b3, bd = pointwise_siblings(x, [conv(320, 1, name="branch1x1"),
                                        conv(384, 1, name="branch3x3_1"),
                                        conv(448, 1, name="branch3x3dbl_1")])
    b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = conv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    pooled = avg_pool_excluding_padding(x) if self.pool == "avg" else max_pool(x, 1, padding=1)
    bp = conv(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


# ----------------------------------------------------------------------------- network


class _Classifier(nn.Module):
  """`fc/kernel` (2048, 1008) and `fc/bias`, as the file's `fc.weight` (transposed), `fc.bias`."""

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    return (self.param("kernel", nn.initializers.lecun_normal(), (POOL_DIM, NUM_LOGITS)),
            self.param("bias", nn.initializers.zeros, (NUM_LOGITS,)))


class FIDInceptionV3(nn.Module):
  """The FID InceptionV3. Call with uint8 NHWC images of any size.

  Returns a dict with the requested `outputs` (names from `OUTPUT_NAMES`):
  `pool` (N, 2048), `logits_unbiased` (N, 1008), `logits` (N, 1008) and the
  spatially averaged intermediate maps `64`, `192`, `768`; all float32. The
  network stops after the last requested output.
  """
  outputs: tuple[str, ...] = ("pool", "logits_unbiased")
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    unknown = set(self.outputs) - set(OUTPUT_NAMES)
    if unknown:
      raise ValueError(f"Unknown Inception outputs {sorted(unknown)}; choose from {OUTPUT_NAMES}.")
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"Expected uint8 images of shape (N, H, W, 3), got {images.shape}.")
    if images.dtype != jnp.uint8:
      raise ValueError(f"Expected uint8 images, got {images.dtype}.")
    wanted = set(self.outputs)
    result: dict[str, jax.Array] = {}

    def emit(name, value):
      if name in wanted:
        result[name] = value.astype(jnp.float32)
      return wanted <= result.keys()

    conv = functools.partial(ConvBN, dtype=self.dtype)
    x = resize_bilinear_tf1(images.astype(jnp.float32))
    x = (x - 128.0) / 128.0
    x = conv(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, 3, name="Conv2d_2a_3x3")(x)
    x = conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = max_pool(x, 2)
    if emit("64", x.mean(axis=(1, 2))):
      return result
    x = conv(80, 1, name="Conv2d_3b_1x1")(x)
    x = conv(192, 3, name="Conv2d_4a_3x3")(x)
    x = max_pool(x, 2)
    if emit("192", x.mean(axis=(1, 2))):
      return result
    x = BlockA(32, dtype=self.dtype, name="Mixed_5b")(x)
    x = BlockA(64, dtype=self.dtype, name="Mixed_5c")(x)
    x = BlockA(64, dtype=self.dtype, name="Mixed_5d")(x)
    x = BlockB(dtype=self.dtype, name="Mixed_6a")(x)
    for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                           ("Mixed_6e", 192)):
      x = BlockC(channels, dtype=self.dtype, name=name)(x)
    if emit("768", x.mean(axis=(1, 2))):
      return result
    x = BlockD(dtype=self.dtype, name="Mixed_7a")(x)
    x = BlockE("avg", dtype=self.dtype, name="Mixed_7b")(x)
    x = BlockE("max", dtype=self.dtype, name="Mixed_7c")(x)
    pool = x.astype(jnp.float32).mean(axis=(1, 2))
    # The classifier is created even when only `pool` is wanted, so that the
    # parameter tree always matches the weight file.
    fc_kernel, fc_bias = _Classifier(name="fc")()
    if emit("pool", pool):
      return result
    logits = jnp.dot(pool, fc_kernel, precision=lax.Precision.HIGHEST)
    emit("logits_unbiased", logits)
    emit("logits", logits + fc_bias)
    return result
