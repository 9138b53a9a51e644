"""Differentiable augmentation of every image the discriminator sees, for both GANs.

Two methods, chosen by `config.augment.kind`:

- `diffaugment` (Zhao et al., 2020, "Differentiable Augmentation for Data-Efficient
  GAN Training"): the policy's ops applied to every image, real and fake, in D's and
  G's updates. `color` (brightness, saturation, contrast), `translation` (up to 1/8 of
  the image, zero fill), `cutout` (a square of half the image zeroed).
- `ada` (Karras et al., 2020, "Training Generative Adversarial Networks with Limited
  Data"): the `bgc` pipeline, each op applied with probability `p`: x-flip, 90-degree
  rotations, integer translation; isotropic scaling, rotation, anisotropic scaling,
  fractional translation (resampled with the paper's anti-aliasing: 2x upsampling and
  downsampling with the symlet-6 low-pass filter, reflection at the borders); brightness,
  contrast, luma flip, hue rotation, saturation. `p` adapts every `ada_interval`
  iterations from the overfitting heuristic r_t = E[sign(D(real))]: up when r_t is above
  `ada_target`, down when below, by (images since the last update) / (ada_kimg * 1000),
  so it can cross [0, 1] in `ada_kimg` thousand real images.

Images are float NHWC in [-1, 1]. Every random number comes from the key the caller
passes (a function of the train state's key and step), drawn per example with the
batch's shape, so a run is deterministic, resumes bit-identically and gives the same
augmentation on any number of devices. The ADA state (`p` and the running sum of signs)
is a field of the train state: checkpointed, restored on resume, rolled back by the
divergence guard with everything else.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gan_core.errors import ConfigError

KINDS = ("none", "diffaugment", "ada")
DIFFAUGMENT_OPS = ("color", "translation", "cutout")

# The symlet-6 wavelet's decomposition low-pass filter (the values of PyWavelets'
# pywt.Wavelet('sym6').dec_lo): ADA's anti-aliasing filter for geometric resampling.
SYM6 = np.array([0.015404109327027373, 0.0034907120842174702, -0.11799011114819057,
                 -0.048311742585633, 0.4910559419267466, 0.787641141030194,
                 0.3379294217276218, -0.07263752278646252, -0.021060292512300564,
                 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148])


def augment_config() -> ml_collections.ConfigDict:
  """`config.augment` of both GANs (off by default)."""
  c = ml_collections.ConfigDict()
  c.kind = "none"  # 'none', 'diffaugment' or 'ada'.
  # DiffAugment.
  c.policy = "color,translation,cutout"
  c.translation_ratio = 0.125
  c.cutout_ratio = 0.5
  # ADA.
  c.p = 0.0  # The starting p (adaptive) or the fixed p (adaptive=False).
  c.adaptive = True
  c.ada_target = 0.6
  c.ada_interval = 4  # Iterations between p updates.
  c.ada_kimg = 500.0  # Thousands of real images for p to go from 0 to 1.
  return c


def check_config(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for an augmentation setting that cannot run."""
  if c.kind not in KINDS:
    raise ConfigError(f"augment.kind={c.kind!r}: choose one of {', '.join(KINDS)}")
  if c.kind == "diffaugment":
    ops = [op for op in c.policy.split(",") if op]
    unknown = [op for op in ops if op not in DIFFAUGMENT_OPS]
    if unknown or not ops:
      raise ConfigError(f"augment.policy={c.policy!r}: a comma-separated list of "
                        f"{', '.join(DIFFAUGMENT_OPS)}")
  if c.kind == "ada":
    if not 0.0 <= c.p <= 1.0:
      raise ConfigError(f"augment.p={c.p}: a probability in [0, 1]")
    if c.ada_interval < 1 or c.ada_kimg <= 0:
      raise ConfigError("augment.ada_interval must be >= 1 and augment.ada_kimg > 0")


# ====================================================================== DiffAugment
def _uniform(key, batch):
  return jax.random.uniform(key, (batch, 1, 1, 1), jnp.float32)


def brightness(x: jax.Array, key: jax.Array) -> jax.Array:
  """Adds one value in [-0.5, 0.5) per image."""
  return x + (_uniform(key, x.shape[0]) - 0.5).astype(x.dtype)


def saturation(x: jax.Array, key: jax.Array) -> jax.Array:
  """Scales each pixel's deviation from its channel mean by a factor in [0, 2) per image."""
  mean = jnp.mean(x, axis=3, keepdims=True)
  return (x - mean) * (_uniform(key, x.shape[0]) * 2.0).astype(x.dtype) + mean


def contrast(x: jax.Array, key: jax.Array) -> jax.Array:
  """Scales the deviation from the image's mean by a factor in [0.5, 1.5) per image."""
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (_uniform(key, x.shape[0]) + 0.5).astype(x.dtype) + mean


def translation_offsets(key: jax.Array, batch: int, height: int, width: int,
                        ratio: float) -> tuple[jax.Array, jax.Array]:
  """Per-image integer shifts (rows, columns), each uniform in [-s, s], s = ratio * side."""
  sh, sw = int(height * ratio + 0.5), int(width * ratio + 0.5)
  kh, kw = jax.random.split(key)
  return (jax.random.randint(kh, (batch,), -sh, sh + 1),
          jax.random.randint(kw, (batch,), -sw, sw + 1))


def translate(x: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """out[b, i, j] = x[b, i + rows[b], j + cols[b]], zero where that falls outside."""
  _, h, w, _ = x.shape
  src_i = jnp.arange(h)[None] + rows[:, None]  # (B, H)
  src_j = jnp.arange(w)[None] + cols[:, None]  # (B, W)
  valid = (((src_i >= 0) & (src_i < h))[:, :, None] & ((src_j >= 0) & (src_j < w))[:, None, :])
  out = jnp.take_along_axis(x, jnp.clip(src_i, 0, h - 1)[:, :, None, None], axis=1)
  out = jnp.take_along_axis(out, jnp.clip(src_j, 0, w - 1)[:, None, :, None], axis=2)
  return jnp.where(valid[..., None], out, jnp.zeros((), x.dtype))


def cutout_boxes(key: jax.Array, batch: int, height: int, width: int,
                 ratio: float) -> tuple[jax.Array, jax.Array, int, int]:
  """Per-image top-left corners (may lie outside the image) and the box size."""
  sh, sw = int(height * ratio + 0.5), int(width * ratio + 0.5)
  kh, kw = jax.random.split(key)
  # The centre is uniform over [0, side + (1 - size % 2)), as the paper's code draws it.
  ci = jax.random.randint(kh, (batch,), 0, height + (1 - sh % 2))
  cj = jax.random.randint(kw, (batch,), 0, width + (1 - sw % 2))
  return ci - sh // 2, cj - sw // 2, sh, sw


def cut(x: jax.Array, top: jax.Array, left: jax.Array, size_h: int, size_w: int) -> jax.Array:
  """Zeroes rows [top, top + size_h) x columns [left, left + size_w) of each image."""
  _, h, w, _ = x.shape
  i = jnp.arange(h)[None]
  j = jnp.arange(w)[None]
  in_rows = (i >= top[:, None]) & (i < top[:, None] + size_h)
  in_cols = (j >= left[:, None]) & (j < left[:, None] + size_w)
  inside = in_rows[:, :, None] & in_cols[:, None, :]
  return jnp.where(inside[..., None], jnp.zeros((), x.dtype), x)


def diff_augment(x: jax.Array, key: jax.Array, policy: str, translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5) -> jax.Array:
  """DiffAugment's policy (ops in the order color, translation, cutout) on a batch."""
  ops = [op for op in policy.split(",") if op]
  b, h, w, _ = x.shape
  keys = iter(jax.random.split(key, 6))
  if "color" in ops:
    x = contrast(saturation(brightness(x, next(keys)), next(keys)), next(keys))
  if "translation" in ops:
    x = translate(x, *translation_offsets(next(keys), b, h, w, translation_ratio))
  if "cutout" in ops:
    x = cut(x, *cutout_boxes(next(keys), b, h, w, cutout_ratio))
  return x


# ====================================================================== ADA
def _eye(batch: int, n: int) -> jax.Array:
  return jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), (batch, n, n))


def _matrix(rows) -> jax.Array:
  """(B, n, n) from nested lists of (B,) arrays or Python numbers."""
  batch = next(jnp.shape(v)[0] for row in rows for v in row if jnp.ndim(v))
  return jnp.stack([jnp.stack([jnp.broadcast_to(jnp.asarray(v, jnp.float32), (batch,))
                               for v in row], -1) for row in rows], -2)


def _translate2d(tx, ty):
  return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _scale2d(sx, sy):
  return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _rotate2d(theta):
  c, s = jnp.cos(theta), jnp.sin(theta)
  return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _gate(key: jax.Array, batch: int, p: jax.Array) -> jax.Array:
  return jax.random.uniform(key, (batch,)) < p


def geometric_matrices(key: jax.Array, batch: int, height: int, width: int,
                       p: jax.Array) -> jax.Array:
  """(B, 3, 3) inverse transforms of ADA's geometric ops, in pixel units about the image
  centre (x: column, y: row): output pixel q samples the input at G_inv @ q."""
  keys = iter(jax.random.split(key, 16))
  g_inv = _eye(batch, 3)
  one = jnp.ones((batch,), jnp.float32)

  def gated(value, neutral):
    return jnp.where(_gate(next(keys), batch, p), value, neutral)

  # x-flip: a mirror with probability 1/2 when applied.
  i = gated(jax.random.randint(next(keys), (batch,), 0, 2), 0).astype(jnp.float32)
  g_inv = g_inv @ _scale2d(1.0 - 2.0 * i, one)
  # 90-degree rotations: 0, 1, 2 or 3 quarter turns.
  i = gated(jax.random.randint(next(keys), (batch,), 0, 4), 0).astype(jnp.float32)
  g_inv = g_inv @ _rotate2d(-math.pi / 2 * i)
  # Integer translation: up to 1/8 of the side, rounded to whole pixels.
  t = jax.random.uniform(next(keys), (batch, 2), minval=-0.125, maxval=0.125)
  t = gated(t.T, 0.0)
  g_inv = g_inv @ _translate2d(-jnp.round(t[0] * width), -jnp.round(t[1] * height))
  # Isotropic scaling: lognormal, std 0.2 octaves.
  s = gated(jnp.exp2(0.2 * jax.random.normal(next(keys), (batch,))), 1.0)
  g_inv = g_inv @ _scale2d(1.0 / s, 1.0 / s)
  # Rotation before and after the anisotropic scaling, each with 1 - sqrt(1 - p), so that
  # some rotation happens with probability p.
  p_rot = 1.0 - jnp.sqrt(jnp.maximum(1.0 - p, 0.0))
  theta = jnp.where(_gate(next(keys), batch, p_rot),
                    jax.random.uniform(next(keys), (batch,), minval=-math.pi, maxval=math.pi), 0.0)
  g_inv = g_inv @ _rotate2d(-theta)
  s = gated(jnp.exp2(0.2 * jax.random.normal(next(keys), (batch,))), 1.0)
  g_inv = g_inv @ _scale2d(1.0 / s, s)
  theta = jnp.where(_gate(next(keys), batch, p_rot),
                    jax.random.uniform(next(keys), (batch,), minval=-math.pi, maxval=math.pi), 0.0)
  g_inv = g_inv @ _rotate2d(-theta)
  # Fractional translation: normal, std 1/8 of the side.
  t = gated(0.125 * jax.random.normal(next(keys), (2, batch)), 0.0)
  g_inv = g_inv @ _translate2d(-t[0] * width, -t[1] * height)
  return g_inv


def color_matrices(key: jax.Array, batch: int, p: jax.Array) -> jax.Array:
  """(B, 4, 4) affine colour transforms of ADA's colour ops, acting on (r, g, b, 1)."""
  keys = iter(jax.random.split(key, 10))
  c = _eye(batch, 4)
  eye = jnp.eye(4, dtype=jnp.float32)
  luma = jnp.asarray([1.0, 1.0, 1.0, 0.0], jnp.float32) / math.sqrt(3.0)
  luma_outer = jnp.outer(luma, luma)

  def gated(value, neutral):
    return jnp.where(_gate(next(keys), batch, p), value, neutral)

  b = gated(0.2 * jax.random.normal(next(keys), (batch,)), 0.0)  # Brightness.
  c = _matrix([[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]]) @ c
  s = gated(jnp.exp2(0.5 * jax.random.normal(next(keys), (batch,))), 1.0)  # Contrast.
  c = _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]]) @ c
  i = gated(jax.random.randint(next(keys), (batch,), 0, 2), 0).astype(jnp.float32)  # Luma flip.
  c = (eye - 2.0 * luma_outer * i[:, None, None]) @ c
  theta = gated(jax.random.uniform(next(keys), (batch,), minval=-math.pi, maxval=math.pi), 0.0)
  c = _rotate_about(luma[:3], theta) @ c  # Hue rotation.
  s = gated(jnp.exp2(1.0 * jax.random.normal(next(keys), (batch,))), 1.0)  # Saturation.
  rgb = jnp.diag(jnp.asarray([1.0, 1.0, 1.0, 0.0], jnp.float32))
  c = (eye - rgb + luma_outer + (rgb - luma_outer) * s[:, None, None]) @ c
  return c


def _rotate_about(axis: jax.Array, theta: jax.Array) -> jax.Array:
  """(B, 4, 4) rotations by `theta` about the unit 3-vector `axis` (Rodrigues)."""
  x, y, z = axis[0], axis[1], axis[2]
  c, s = jnp.cos(theta), jnp.sin(theta)
  cc = 1.0 - c
  return _matrix([[x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s, 0],
                  [y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s, 0],
                  [z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c, 0],
                  [0, 0, 0, 1]])


def _reflect(u: jax.Array, n: int) -> jax.Array:
  """Indices or coordinates reflected about pixel centres 0 and n - 1 into [0, n - 1],
  without repeating the edge (…2 1 0 1 2…, as reflect padding)."""
  if n == 1:
    return jnp.zeros_like(u)
  period = 2 * (n - 1)
  u = jnp.mod(u, period)
  return jnp.where(u > n - 1, period - u, u)


def _filter_axis(x: jax.Array, taps: np.ndarray, axis: int, start: int) -> jax.Array:
  """y[m] = sum_k taps[k] * x[m + start + k] along `axis`, edges reflected (same length)."""
  n = x.shape[axis]
  out = 0.0
  for k, tap in enumerate(taps):
    index = _reflect(jnp.arange(n) + start + k, n)
    out = out + float(tap) * jnp.take(x, index, axis=axis)
  return out


# Where upsample2x's output sample m sits: at input coordinate m / 2 + UP_PHASE (exactly,
# for linear images: symlet-6 has vanishing moments), from the filter's centroid.
RESAMPLE_MARGIN = 4  # Pixels of reflected border around the image while resampling.
UP_PHASE = float(len(SYM6) // 2 - np.sum(np.arange(len(SYM6)) * SYM6) / SYM6.sum()) / 2


def upsample2x(x: jax.Array) -> jax.Array:
  """2x along H and W: zero insertion, then the symlet-6 low-pass (gain 2 per axis).
  Output sample m sits at input coordinate m / 2 + UP_PHASE."""
  taps = SYM6 / SYM6.sum() * 2.0
  for axis in (1, 2):
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 2 * n
    zeros = jnp.zeros_like(x)
    inserted = jnp.stack([x, zeros], axis=axis + 1).reshape(shape)
    x = _filter_axis(inserted, taps[::-1], axis, start=-(len(taps) // 2 - 1))
  return x


def downsample2x(x: jax.Array) -> jax.Array:
  """Inverse of `upsample2x` for the orthogonal symlet-6 filter: low-pass, keep every
  second sample (downsample2x(upsample2x(x)) == x away from the borders)."""
  taps = SYM6 / SYM6.sum()
  for axis in (1, 2):
    x = _filter_axis(x, taps, axis, start=-(len(taps) // 2))
    x = jax.lax.slice_in_dim(x, 0, x.shape[axis], 2, axis=axis)
  return x


def _bilinear(image: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """image (B, H, W, C) sampled at per-example coordinates rows/cols (B, h, w), clamped."""
  b, h, w, c = image.shape
  r0 = jnp.floor(rows)
  c0 = jnp.floor(cols)
  fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
  flat = image.reshape(b, h * w, c)

  def at(r, cc):
    r = jnp.clip(r, 0, h - 1).astype(jnp.int32)
    cc = jnp.clip(cc, 0, w - 1).astype(jnp.int32)
    index = (r * w + cc).reshape(b, -1, 1)
    return jnp.take_along_axis(flat, index, axis=1).reshape(rows.shape + (c,))

  top = at(r0, c0) * (1 - fc) + at(r0, c0 + 1) * fc
  bottom = at(r0 + 1, c0) * (1 - fc) + at(r0 + 1, c0 + 1) * fc
  return top * (1 - fr) + bottom * fr


def _border(u: jax.Array, n: int, pad: int) -> jax.Array:
  """Source coordinates: as they are inside the padded image (whose margin already holds
  the reflection), reflected into the image beyond it."""
  inside = (u >= 1 - pad) & (u <= n - 2 + pad)
  return jnp.where(inside, u, _reflect(u, n))


def resample(x: jax.Array, g_inv: jax.Array) -> jax.Array:
  """Applies per-example affine transforms (inverse matrices from `geometric_matrices`)
  with ADA's anti-aliasing: upsample 2x, sample bilinearly at the 2x grid, downsample 2x.
  Borders are reflected (about the edge pixels, as the paper's code pads): the image is
  padded before upsampling and the output grid extends past it by the same margin, so
  that a transform that moves nothing returns the image (to float rounding)."""
  _, h, w, _ = x.shape
  pad = RESAMPLE_MARGIN
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
  up = upsample2x(padded)
  # Output grid: the 2x samples of the padded image, in pixel units about the centre.
  ys = jnp.arange(2 * (h + 2 * pad), dtype=jnp.float32) / 2 + UP_PHASE - pad - (h - 1) / 2
  xs = jnp.arange(2 * (w + 2 * pad), dtype=jnp.float32) / 2 + UP_PHASE - pad - (w - 1) / 2
  grid = jnp.stack(jnp.broadcast_arrays(xs[None, :], ys[:, None], jnp.ones(())), -1)
  src = jnp.einsum("bij,hwj->bhwi", g_inv, grid)
  src_cols = _border(src[..., 0] + (w - 1) / 2, w, pad)
  src_rows = _border(src[..., 1] + (h - 1) / 2, h, pad)
  sampled = _bilinear(up, 2 * (src_rows + pad - UP_PHASE), 2 * (src_cols + pad - UP_PHASE))
  return downsample2x(sampled)[:, pad:pad + h, pad:pad + w]


def ada_augment(x: jax.Array, key: jax.Array, p: jax.Array) -> jax.Array:
  """ADA's `bgc` pipeline with probability `p` per op and image. An image that draws no
  geometric op keeps its pixels exactly; at p = 0 the batch is returned unchanged."""
  b, h, w, ch = x.shape
  kg, kc = jax.random.split(key)
  p = jnp.asarray(p, jnp.float32)
  g_inv = geometric_matrices(kg, b, h, w, p)
  moved = jnp.any(jnp.abs(g_inv - jnp.eye(3)) > 0, axis=(1, 2))
  dtype = x.dtype
  xf = x.astype(jnp.float32)
  xf = jnp.where(moved[:, None, None, None], resample(xf, g_inv), xf)
  c = color_matrices(kc, b, p)
  if ch == 3:
    colored = jnp.einsum("bij,bhwj->bhwi", c[:, :3, :3], xf) + c[:, None, None, :3, 3]
  else:  # Gray (or other) images: the brightness and contrast part only.
    colored = xf * c[:, None, None, 0:1, 0] + c[:, None, None, 0:1, 3]
  changed = jnp.any(jnp.abs(c - jnp.eye(4)) > 0, axis=(1, 2))
  xf = jnp.where(changed[:, None, None, None], colored, xf)
  return xf.astype(dtype)


# ====================================================================== in a train step
def init_state(config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """The augmentation part of a train state: ADA's p and its running r_t statistics
  (present, and inert, for every kind, so that switching kind on resume works)."""
  return {"p": jnp.asarray(config.augment.p if config.augment.kind == "ada" else 0.0,
                           jnp.float32),
          "sign_sum": jnp.zeros((), jnp.float32),  # Sum of sign(D(real)) since the last update.
          "count": jnp.zeros((), jnp.float32),  # Number of real scores in sign_sum.
          "rt": jnp.zeros((), jnp.float32)}  # r_t at the last update (for logging).


class Augmenter:
  """`config.augment` as functions of the train step: `apply` to D's input, `observe`
  D's scores on reals, `adapt` p at the end of an iteration."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.c = config.augment
    check_config(self.c)
    self.kind = self.c.kind
    self.enabled = self.kind != "none"
    self.adaptive = self.kind == "ada" and self.c.adaptive

  def p(self, state: dict[str, jax.Array]) -> jax.Array:
    return state["p"] if self.adaptive else jnp.float32(self.c.p)

  def apply(self, x: jax.Array, key: jax.Array, state: dict[str, jax.Array]) -> jax.Array:
    """Augments a batch of D's input (reals and fakes alike); identity when off. Draws
    from a stream of its own folded out of `key`, so the caller's other uses of `key`
    (latents) stay what they are without augmentation."""
    key = jax.random.fold_in(key, 0xA06)
    if self.kind == "diffaugment":
      return diff_augment(x, key, self.c.policy, self.c.translation_ratio, self.c.cutout_ratio)
    if self.kind == "ada":
      return ada_augment(x, key, self.p(state))
    return x

  def observe(self, state: dict[str, jax.Array], real_scores: jax.Array
              ) -> dict[str, jax.Array]:
    """Adds D's scores on real images to the r_t statistics."""
    if not self.adaptive:
      return state
    scores = real_scores.astype(jnp.float32).reshape(-1)
    return dict(state, sign_sum=state["sign_sum"] + jnp.sum(jnp.sign(scores)),
                count=state["count"] + scores.size)

  def adapt(self, state: dict[str, jax.Array], step: jax.Array,
            images_per_iteration: int | jax.Array) -> dict[str, jax.Array]:
    """After iteration `step` (0-based): every `ada_interval` iterations, move p by
    sign(r_t - target) * images / (ada_kimg * 1000) and restart the statistics."""
    if not self.adaptive:
      return state
    due = (step + 1) % self.c.ada_interval == 0
    rt = state["sign_sum"] / jnp.maximum(state["count"], 1.0)
    images = jnp.asarray(images_per_iteration, jnp.float32) * self.c.ada_interval
    p = jnp.clip(state["p"] + jnp.sign(rt - self.c.ada_target) * images /
                 (self.c.ada_kimg * 1000.0), 0.0, 1.0)
    zero = jnp.zeros((), jnp.float32)
    return {"p": jnp.where(due, p, state["p"]),
            "sign_sum": jnp.where(due, zero, state["sign_sum"]),
            "count": jnp.where(due, zero, state["count"]),
            "rt": jnp.where(due, rt, state["rt"])}

  def metrics(self, state: dict[str, jax.Array]) -> dict[str, jax.Array]:
    if self.kind != "ada":
      return {}
    return {"augment/p": self.p(state), "augment/rt": state["rt"]}
