"""Multi-scale SSIM (MS-SSIM) of generated images, as PGGAN reports it.

PGGAN (Karras et al. 2018, official `progressive_growing_of_gans` code) measures
the variety of a generator by the mean MS-SSIM between pairs of its samples
(lower means more varied): consecutive images (0, 1), (2, 3), ... of a set of
generated images form the pairs, 10000 pairs typically. Its MS-SSIM is the
numpy implementation from the TensorFlow models repository (Wang et al. 2003):

- per scale, a Gaussian window of side min(11, H, W) and sigma 1.5 scaled with
  it (MATLAB fspecial), applied by FFT convolution ('valid' region only) to get
  local means, variances and covariance; c1 = (0.01 * 255)^2, c2 = (0.03 * 255)^2;
  SSIM and the contrast-structure term CS are averaged over height, width and
  channels, per image;
- 5 scales, 2x2 box averaging between them, weights
  [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
- MS-SSIM = prod_{scales 1..4} CS^w * SSIM_5^w5, with SSIM and CS clipped at 0
  first (a negative value to a fractional power would be NaN).

Images are float32, the window and the convolutions float64, as in that code
(the scipy of its time ran real FFTs through numpy.fft, always in double
precision; today's scipy.fft would keep float32 inputs in single precision).
One difference: the convolution runs over the two spatial axes only
(`fftconvolve(..., axes=(1, 2))`) instead of over all four axes with a kernel of
size 1 along the batch and channel axes; the result is the same up to rounding.

  from gan_core.eval.ms_ssim import ms_ssim
  ms_ssim(fake_uint8_nhwc)  # mean over pairs (0, 1), (2, 3), ...
"""
from __future__ import annotations

import numpy as np
from scipy import signal

DEFAULT_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(size: int, sigma: float) -> np.ndarray:
  """(size, size) Gaussian window normalised to sum 1, as MATLAB's fspecial.

  Odd sizes sample integer offsets -r..r (r = size // 2); even sizes the
  half-integer offsets -r + 0.5 .. r - 0.5, so the window stays centred.
  """
  if size < 1:
    raise ValueError(f"gaussian_window: size must be >= 1, got {size}")
  radius = size // 2
  offset = 0.5 if size % 2 == 0 else 0.0
  coords = np.arange(size, dtype=np.float64) - radius + offset
  x, y = np.meshgrid(coords, coords, indexing="ij")
  g = np.exp(-(x**2 + y**2) / (2.0 * sigma**2))
  return g / g.sum()


def ssim_and_cs(img1: np.ndarray, img2: np.ndarray, *, max_val: float = 255.0,
                filter_size: int = 11, filter_sigma: float = 1.5, k1: float = 0.01,
                k2: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
  """Single-scale SSIM and contrast-structure term of each image pair.

  Args:
    img1, img2: (N, H, W, C) arrays of the same shape (cast to float32).
    max_val: dynamic range of the pixel values (255 for uint8 data).
    filter_size: nominal window side; the window used is min(filter_size, H, W)
      with sigma scaled by the same factor. 0 disables the window (each pixel is
      its own neighbourhood).
    filter_sigma: nominal Gaussian sigma.
    k1, k2: SSIM stability constants.

  Returns:
    (ssim, cs), each (N,) float64: means over the valid window positions and
    channels.
  """
  img1 = np.asarray(img1, np.float32)
  img2 = np.asarray(img2, np.float32)
  _, height, width, _ = img1.shape
  size = min(filter_size, height, width)
  if filter_size:
    sigma = size * filter_sigma / filter_size
    window = gaussian_window(size, sigma)[None, :, :, None]

    def blur(x: np.ndarray) -> np.ndarray:
      # In float64: scipy.fft keeps float32 inputs in single precision, whose rounding
      # (~1e-7 of E[x^2] ~ 6e4) is not small next to c2 ~ 58.5. The TF models code ran
      # on numpy.fft, which always works in double.
      return signal.fftconvolve(x.astype(np.float64), window, mode="valid", axes=(1, 2))

    mu1, mu2 = blur(img1), blur(img2)
    sigma11, sigma22, sigma12 = blur(img1 * img1), blur(img2 * img2), blur(img1 * img2)
  else:
    mu1, mu2 = img1, img2
    sigma11, sigma22, sigma12 = img1 * img1, img2 * img2, img1 * img2
  mu11, mu22, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
  sigma11 = sigma11 - mu11
  sigma22 = sigma22 - mu22
  sigma12 = sigma12 - mu12
  c1 = (k1 * max_val) ** 2
  c2 = (k2 * max_val) ** 2
  v1 = 2.0 * sigma12 + c2
  v2 = sigma11 + sigma22 + c2
  ssim = np.mean(((2.0 * mu12 + c1) * v1) / ((mu11 + mu22 + c1) * v2), axis=(1, 2, 3))
  cs = np.mean(v1 / v2, axis=(1, 2, 3))
  return ssim, cs


def _box_downsample(images: np.ndarray) -> np.ndarray:
  """Halves H and W by averaging 2x2 blocks (the TF models code's order of the sum)."""
  return (images[:, 0::2, 0::2, :] + images[:, 1::2, 0::2, :] + images[:, 0::2, 1::2, :]
          + images[:, 1::2, 1::2, :]) * 0.25


def ms_ssim_pairs(images1: np.ndarray, images2: np.ndarray, *, max_val: float = 255.0,
                  filter_size: int = 11, filter_sigma: float = 1.5, k1: float = 0.01,
                  k2: float = 0.03, weights: tuple[float, ...] | None = None) -> np.ndarray:
  """MS-SSIM of each pair (images1[i], images2[i]).

  Args:
    images1, images2: (N, H, W, C) arrays of the same shape (any real dtype, used
      as float32 in the range given by `max_val`); H and W must be divisible by
      2 ** (len(weights) - 1), i.e. by 16 for the 5 default scales.
    max_val, filter_size, filter_sigma, k1, k2: see `ssim_and_cs`.
    weights: per-scale exponents, finest first; default DEFAULT_WEIGHTS.

  Returns:
    (N,) float64 MS-SSIM values; 1 for identical images.
  """
  images1 = np.asarray(images1)
  images2 = np.asarray(images2)
  if images1.ndim != 4:
    raise ValueError(f"ms_ssim_pairs: expected 4-D NHWC images, got shape {images1.shape}")
  if images1.shape != images2.shape:
    raise ValueError(f"ms_ssim_pairs: image batches differ in shape: {images1.shape} vs "
                     f"{images2.shape}")
  weights = np.asarray(DEFAULT_WEIGHTS if weights is None else weights, np.float32)
  if weights.ndim != 1 or weights.size < 1:
    raise ValueError(f"ms_ssim_pairs: weights must be a non-empty 1-D sequence, got {weights}")
  levels = weights.size
  factor = 2 ** (levels - 1)
  height, width = images1.shape[1:3]
  if height % factor or width % factor:
    raise ValueError(f"ms_ssim_pairs: height and width ({height}x{width}) must be divisible by "
                     f"{factor} for {levels} scales (each halves the size; the last must be at "
                     "least 1 pixel)")
  im1 = images1.astype(np.float32)
  im2 = images2.astype(np.float32)
  ssims, css = [], []
  for level in range(levels):
    ssim, cs = ssim_and_cs(im1, im2, max_val=max_val, filter_size=filter_size,
                           filter_sigma=filter_sigma, k1=k1, k2=k2)
    ssims.append(ssim)
    css.append(cs)
    if level + 1 < levels:  # The TF code also downsamples after the last scale, unused.
      im1, im2 = _box_downsample(im1), _box_downsample(im2)
  # Negative terms (anti-correlated structure) would give NaN under fractional powers.
  ssims = np.clip(np.asarray(ssims), 0.0, np.inf)
  css = np.clip(np.asarray(css), 0.0, np.inf)
  return (np.prod(css[:-1] ** weights[:-1, None], axis=0) * ssims[-1] ** weights[-1])


def ms_ssim(images: np.ndarray, *, chunk_size: int = 64) -> float:
  """PGGAN's MS-SSIM metric: mean MS-SSIM over the pairs (0, 1), (2, 3), ... of `images`.

  Args:
    images: uint8 (N, H, W, 3) generated images, N even and >= 2 (PGGAN uses
      20000 images, 10000 pairs); H and W divisible by 16 (5 scales).
    chunk_size: pairs evaluated at once; bounds memory, at about 100 bytes per
      pixel value of the chunk's first images (about 1.2 GB for 64 pairs of
      256x256x3); the result does not depend on it.

  Returns:
    The mean MS-SSIM over the N / 2 pairs; lower means more varied samples.
  """
  if not isinstance(images, np.ndarray):
    raise ValueError(f"ms_ssim: expected a numpy array, got {type(images).__name__}")
  if images.dtype != np.uint8:
    raise ValueError(f"ms_ssim: expected dtype uint8, got {images.dtype}")
  if images.ndim != 4:
    raise ValueError(f"ms_ssim: expected 4-D NHWC images, got shape {images.shape}")
  n, height, width, channels = images.shape
  if channels != 3:
    raise ValueError(f"ms_ssim: expected 3 channels (NHWC), got {channels} in shape "
                     f"{images.shape}")
  if height < 16 or width < 16 or height % 16 or width % 16:
    raise ValueError(f"ms_ssim: height and width must be multiples of 16 (5 scales, each halving "
                     f"the size), got {height}x{width}")
  if n < 2 or n % 2:
    raise ValueError(f"ms_ssim: need an even number >= 2 of images (consecutive pairs), got {n}")
  if int(chunk_size) != chunk_size or chunk_size < 1:
    raise ValueError(f"ms_ssim: chunk_size must be a positive integer, got {chunk_size}")
  values = []
  for start in range(0, n, 2 * chunk_size):
    chunk = images[start:start + 2 * chunk_size]
    values.append(ms_ssim_pairs(chunk[0::2], chunk[1::2]))
  return float(np.mean(np.concatenate(values)))
