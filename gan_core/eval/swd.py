"""Sliced Wasserstein Distance (SWD) on Laplacian pyramids, the PGGAN metric.

This follows the metric of Karras et al. (2018), "Progressive Growing of GANs",
as the official `progressive_growing_of_gans` code computes it, for NHWC images:

1. Each image (uint8, 3 colour channels, square, power-of-two side S >= 16) is
   turned into a Laplacian pyramid with one level per resolution S, S/2, ..., 16.
   Gaussian levels come from `pyr_down` (5x5 binomial blur, mirror boundary, keep
   every second pixel: cv2.pyrDown); each level except the last is replaced by
   itself minus `pyr_up` of the next one (cv2.pyrUp); the 16x16 level stays the
   low-pass residual.
2. Per level, 128 random 7x7 neighbourhoods per image are cut out. A descriptor
   is the 7x7x3 patch flattened in the official NCHW code's component order:
   channel, then x offset, then y offset (that code's `np.ogrid` puts x before
   y, so each channel's 7x7 block is the transposed patch; the order changes
   nothing statistically since the projection directions are isotropic).
3. Each descriptor set is normalised per colour channel by its own mean and
   standard deviation (over all descriptors and all 49 positions).
4. The distance between two sets: 4 repeats of 128 random unit directions in
   the 147-d descriptor space; project both sets, sort each projection, average
   the absolute differences of the sorted values (the 1-D Wasserstein-1 distance
   between the empirical projections, averaged over directions); average over
   repeats. Levels are reported x 1e3, as in the paper, plus their mean.

Differences from the official code, none of which changes what is measured:
- randomness comes from `numpy.random.default_rng(seed)` instead of the global
  RNG, so a result is reproducible from its seed and independent of the chunk
  size;
- the same neighbourhood positions are used for both sets (common random
  numbers): this lowers the estimator's noise, and a set compared with itself
  gives exactly 0, as the official code's reals-vs-reals pass does;
- normalisation statistics are accumulated in float64 (the official code
  reduces in float32), and a channel with zero spread is divided by 1 instead
  of producing NaNs.

Random draws, in order (documented so that the result can be checked against an
independent implementation): for each level from the largest, the x centres then
the y centres of all N * nhoods_per_image neighbourhoods (`rng.integers(h, S - h)`
with h = nhood_size // 2; image i owns neighbourhoods i * nhoods_per_image onward);
then for each level, for each repeat, a (dim, dirs_per_repeat) standard normal
direction matrix.

Memory: the descriptors of all levels of both sets are held at once, about
2 * levels * N * nhoods_per_image * 147 * 4 bytes (7.4 GB for 16384 images of
64x64), plus two (dirs_per_repeat, N * nhoods_per_image) float32 projections.

  from gan_core.eval.swd import sliced_wasserstein_distance
  sliced_wasserstein_distance(real_uint8_nhwc, fake_uint8_nhwc)
  # {'swd_64': ..., 'swd_32': ..., 'swd_16': ..., 'swd_avg': ...}
"""
from __future__ import annotations

import numpy as np
import scipy.ndimage

# The 5x5 binomial kernel of cv2.pyrDown / cv2.pyrUp: outer([1, 4, 6, 4, 1]) / 256.
_BINOMIAL_1D = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32)
GAUSSIAN_KERNEL = (np.outer(_BINOMIAL_1D, _BINOMIAL_1D) / 256.0).astype(np.float32)
# Shaped (1, 5, 5, 1) so that scipy.ndimage blurs only the spatial axes of NHWC arrays.
_KERNEL_NHWC = GAUSSIAN_KERNEL[None, :, :, None]

_MIN_RESOLUTION = 16
# Rows of a descriptor set reduced at once when computing normalisation statistics in
# float64; bounds the temporary copies at about 64 MiB.
_STATS_ROWS = 1 << 16


def _is_power_of_two(n: int) -> bool:
  return n > 0 and n & (n - 1) == 0


def pyr_down(images: np.ndarray) -> np.ndarray:
  """Blurs float NHWC images with the binomial kernel and keeps every second pixel.

  Matches cv2.pyrDown: scipy's 'mirror' boundary is OpenCV's default
  BORDER_REFLECT_101 (d c b | a b c d | c b a).
  """
  return scipy.ndimage.convolve(images, _KERNEL_NHWC, mode="mirror")[:, ::2, ::2]


def pyr_up(images: np.ndarray) -> np.ndarray:
  """Doubles the size of float NHWC images (cv2.pyrUp).

  The input goes to the even positions of a zero image twice the size, which is
  blurred with 4x the binomial kernel (the factor makes up for the zeros).
  """
  n, h, w, c = images.shape
  up = np.zeros((n, 2 * h, 2 * w, c), images.dtype)
  up[:, ::2, ::2] = images
  return scipy.ndimage.convolve(up, _KERNEL_NHWC * 4.0, mode="mirror")


def laplacian_pyramid(images: np.ndarray, num_levels: int) -> list[np.ndarray]:
  """Laplacian pyramid of NHWC images, finest level first.

  Args:
    images: (N, H, W, C) array, converted to float32; H and W must be divisible
      by 2 ** (num_levels - 1).
    num_levels: number of levels, >= 1.

  Returns:
    `num_levels` float32 arrays; level k has shape (N, H / 2**k, W / 2**k, C).
    Every level but the last is a band-pass image (Gaussian level k minus the
    upsampled Gaussian level k + 1); the last is the low-pass Gaussian level.
    Adding `pyr_up` of each coarser reconstruction back, from the last level,
    recovers `images`.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4:
    raise ValueError(f"laplacian_pyramid: expected NHWC images (4-D), got shape {images.shape}")
  if num_levels < 1:
    raise ValueError(f"laplacian_pyramid: num_levels must be >= 1, got {num_levels}")
  factor = 2 ** (num_levels - 1)
  if images.shape[1] % factor or images.shape[2] % factor:
    raise ValueError(f"laplacian_pyramid: height and width {images.shape[1:3]} must be divisible "
                     f"by 2 ** (num_levels - 1) = {factor}")
  pyramid = [images]
  for _ in range(1, num_levels):
    pyramid.append(pyr_down(pyramid[-1]))
    # Not in place: level 0 may be the caller's own float32 array.
    pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])
  return pyramid


def swd_levels(image_size: int) -> list[int]:
  """The pyramid resolutions SWD reports for square images of side `image_size`.

  One per power of two from `image_size` down to 16, e.g. 64 -> [64, 32, 16].
  """
  if not _is_power_of_two(int(image_size)) or image_size < _MIN_RESOLUTION:
    raise ValueError(f"swd_levels: image size must be a power of two >= {_MIN_RESOLUTION}, "
                     f"got {image_size}")
  levels = []
  res = int(image_size)
  while res >= _MIN_RESOLUTION:
    levels.append(res)
    res //= 2
  return levels


def _patch_offsets(size: int, channels: int, nhood_size: int) -> np.ndarray:
  """Flat-index offsets, relative to a neighbourhood's centre pixel (channel 0), of the
  components of a descriptor cut from one C-contiguous (size, size, channels) image.

  Component order is (channel, dx, dy), the order of the official NCHW code, whose
  np.ogrid puts the x offset on the axis before the y offset.
  """
  h = nhood_size // 2
  c = np.arange(channels)[:, None, None]
  dx = np.arange(-h, h + 1)[None, :, None]
  dy = np.arange(-h, h + 1)[None, None, :]
  return (c + (dy * size + dx) * channels).reshape(-1)


def extract_descriptors(level: np.ndarray, x: np.ndarray, y: np.ndarray,
                        nhoods_per_image: int, nhood_size: int = 7) -> np.ndarray:
  """Cuts neighbourhoods out of one pyramid level.

  Args:
    level: (n, S, S, C) float32 pyramid level of n images.
    x, y: (n * nhoods_per_image,) integer centre columns and rows; entry k belongs
      to image k // nhoods_per_image. Centres must keep the patch inside the image.
    nhoods_per_image: neighbourhoods per image.
    nhood_size: odd side of the square neighbourhood.

  Returns:
    (n * nhoods_per_image, C * nhood_size**2) float32 descriptors, components in
    (channel, dx, dy) order.
  """
  n, size, _, channels = level.shape
  level = np.ascontiguousarray(level)
  image = np.arange(x.shape[0]) // nhoods_per_image
  centre = ((image * size + y) * size + x) * channels
  offsets = _patch_offsets(size, channels, nhood_size)
  return level.reshape(-1)[centre[:, None] + offsets[None, :]]


def normalize_descriptors(desc: np.ndarray, channels: int = 3) -> np.ndarray:
  """Normalises a descriptor set in place per colour channel; returns it.

  Args:
    desc: (M, channels * P) float32 descriptors whose components are grouped by
      channel (channel-major), P positions per channel.
    channels: number of colour channels.

  Each channel's components have the mean subtracted and are divided by the
  standard deviation (ddof 0), both over all M descriptors and P positions. The
  statistics are accumulated in float64, in row chunks to bound memory; a channel
  with zero spread is left centred rather than turned into NaNs.
  """
  m, dim = desc.shape
  if dim % channels:
    raise ValueError(f"normalize_descriptors: {dim} components do not split into {channels} "
                     "channels")
  grouped = desc.reshape(m, channels, dim // channels)
  count = m * (dim // channels)
  total = np.zeros(channels)
  for start in range(0, m, _STATS_ROWS):
    total += grouped[start:start + _STATS_ROWS].sum((0, 2), dtype=np.float64)
  mean = total / count
  # Second pass around the mean: no cancellation, unlike E[x^2] - E[x]^2.
  squares = np.zeros(channels)
  for start in range(0, m, _STATS_ROWS):
    centred = grouped[start:start + _STATS_ROWS].astype(np.float64) - mean[None, :, None]
    squares += np.square(centred).sum((0, 2))
  std = np.sqrt(squares / count)
  std[std == 0] = 1.0
  grouped -= mean.astype(np.float32)[None, :, None]
  grouped /= std.astype(np.float32)[None, :, None]
  return desc


def projected_wasserstein(a: np.ndarray, b: np.ndarray, directions: np.ndarray) -> float:
  """Mean 1-D Wasserstein-1 distance between two point sets along given directions.

  Args:
    a, b: (M, D) float point sets of equal size.
    directions: (D, K) projection directions, one per column (used as given; the
      SWD normalises them to unit length).

  Returns:
    The mean, over the K directions and M ranks, of |sorted(a @ d) - sorted(b @ d)|.
  """
  if a.ndim != 2 or a.shape != b.shape:
    raise ValueError(f"projected_wasserstein: need two (M, D) sets of equal shape, got {a.shape} "
                     f"and {b.shape}")
  if directions.ndim != 2 or directions.shape[0] != a.shape[1]:
    raise ValueError(f"projected_wasserstein: directions must be ({a.shape[1]}, K), "
                     f"got {directions.shape}")
  # Projections laid out (K, M), each direction's values contiguous: both the matmul
  # (transposes are free for BLAS) and the row sorts are several times faster than
  # sorting the columns of a (M, K) array.
  proj_a = directions.T @ a.T
  proj_b = directions.T @ b.T
  proj_a.sort(axis=1)
  proj_b.sort(axis=1)
  total = 0.0
  # A few directions at a time: |a - b| of the whole would be another full-size copy.
  for start in range(0, proj_a.shape[0], 8):
    diff = proj_a[start:start + 8] - proj_b[start:start + 8]
    total += float(np.abs(diff).sum(dtype=np.float64))
  return total / proj_a.size


def _check_images(name: str, images: np.ndarray) -> None:
  if not isinstance(images, np.ndarray):
    raise ValueError(f"{name}: expected a numpy array, got {type(images).__name__}")
  if images.dtype != np.uint8:
    raise ValueError(f"{name}: expected dtype uint8, got {images.dtype}")
  if images.ndim != 4:
    raise ValueError(f"{name}: expected 4-D NHWC images, got shape {images.shape}")
  n, h, w, c = images.shape
  if c != 3:
    raise ValueError(f"{name}: expected 3 channels (NHWC), got {c} in shape {images.shape}")
  if h != w:
    raise ValueError(f"{name}: images must be square, got {h}x{w}")
  if not _is_power_of_two(h) or h < _MIN_RESOLUTION:
    raise ValueError(f"{name}: image size must be a power of two >= {_MIN_RESOLUTION}, got {h}")
  if n < 1:
    raise ValueError(f"{name}: no images")


def _check_positive(name: str, value: int) -> None:
  if int(value) != value or value < 1:
    raise ValueError(f"sliced_wasserstein_distance: {name} must be a positive integer, got {value}")


def sliced_wasserstein_distance(real: np.ndarray, fake: np.ndarray, *, seed: int = 0,
                                nhood_size: int = 7, nhoods_per_image: int = 128,
                                dir_repeats: int = 4, dirs_per_repeat: int = 128,
                                chunk_size: int = 256) -> dict[str, float]:
  """PGGAN's multi-scale sliced Wasserstein distance between two image sets.

  Args:
    real, fake: uint8 (N, S, S, 3) images, S a power of two >= 16, equal shapes
      (the sorted-projection comparison needs equally many descriptors; PGGAN
      uses 16384 of each).
    seed: seeds the neighbourhood positions and projection directions.
    nhood_size: odd side of the neighbourhoods (7).
    nhoods_per_image: neighbourhoods per image and level (128).
    dir_repeats: independent direction sets averaged (4).
    dirs_per_repeat: directions per set (128).
    chunk_size: images turned into pyramids at once (bounds the pyramid memory,
      not the descriptors'; the result does not depend on it).

  Returns:
    {'swd_<res>': distance x 1e3 for each pyramid resolution from S down to 16,
     'swd_avg': the mean of those}. Lower is closer; identical sets give 0.
  """
  _check_images("sliced_wasserstein_distance: real", real)
  _check_images("sliced_wasserstein_distance: fake", fake)
  if real.shape != fake.shape:
    raise ValueError("sliced_wasserstein_distance: real and fake must have the same shape "
                     f"(equal image counts and sizes), got {real.shape} and {fake.shape}")
  for name, value in (("nhood_size", nhood_size), ("nhoods_per_image", nhoods_per_image),
                      ("dir_repeats", dir_repeats), ("dirs_per_repeat", dirs_per_repeat),
                      ("chunk_size", chunk_size)):
    _check_positive(name, value)
  if nhood_size % 2 == 0:
    raise ValueError(f"sliced_wasserstein_distance: nhood_size must be odd, got {nhood_size}")
  half = nhood_size // 2
  if 2 * half >= _MIN_RESOLUTION:
    raise ValueError(f"sliced_wasserstein_distance: nhood_size {nhood_size} does not fit the "
                     f"{_MIN_RESOLUTION}x{_MIN_RESOLUTION} level")

  n, size, _, channels = real.shape
  resolutions = swd_levels(size)
  num_desc = n * nhoods_per_image
  dim = channels * nhood_size * nhood_size
  rng = np.random.default_rng(seed)
  # Centres in [half, res - half), as numpy's randint(half, res - half) in the official code.
  positions = []
  for res in resolutions:
    x = rng.integers(half, res - half, size=num_desc)
    y = rng.integers(half, res - half, size=num_desc)
    positions.append((x, y))

  def descriptors(images: np.ndarray) -> list[np.ndarray]:
    # Preallocated, filled chunk by chunk: concatenating would need twice the memory.
    out = [np.empty((num_desc, dim), np.float32) for _ in resolutions]
    for start in range(0, n, chunk_size):
      stop = min(start + chunk_size, n)
      rows = slice(start * nhoods_per_image, stop * nhoods_per_image)
      pyramid = laplacian_pyramid(images[start:stop], len(resolutions))
      for level, (x, y), desc in zip(pyramid, positions, out):
        desc[rows] = extract_descriptors(level, x[rows], y[rows], nhoods_per_image, nhood_size)
    return [normalize_descriptors(desc, channels) for desc in out]

  desc_real = descriptors(real)
  desc_fake = descriptors(fake)
  result = {}
  for level, res in enumerate(resolutions):
    distances = []
    for _ in range(dir_repeats):
      dirs = rng.standard_normal((dim, dirs_per_repeat))
      dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
      distances.append(projected_wasserstein(desc_real[level], desc_fake[level],
                                             dirs.astype(np.float32)))
    # This level's descriptors are no longer needed; free them before the next level's
    # projections are allocated.
    desc_real[level] = desc_fake[level] = None
    result[f"swd_{res}"] = float(np.mean(distances)) * 1e3
  result["swd_avg"] = float(np.mean([result[f"swd_{res}"] for res in resolutions]))
  return result
