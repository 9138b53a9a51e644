"""Image grids and PNG output."""
from __future__ import annotations

import math

import numpy as np


def images_to_uint8(images):
  """float [-1, 1] -> uint8 [0, 255]: round(127.5 x + 127.5), saturated (the PGGAN code's
  quantisation, stated with every FID this project reports). Works on jax and numpy arrays."""
  import jax.numpy as jnp
  return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def make_grid(images: np.ndarray, num_columns: int | None = None, padding: int = 2,
              pad_value: int = 0) -> np.ndarray:
  """Tiles uint8 NHWC images into one HWC image, row-major."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  cols = num_columns or max(1, int(math.ceil(math.sqrt(n))))
  rows = int(math.ceil(n / cols))
  grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), pad_value,
                 dtype=images.dtype)
  for i, image in enumerate(images):
    r, col = divmod(i, cols)
    top, left = padding + r * (h + padding), padding + col * (w + padding)
    grid[top:top + h, left:left + w] = image
  return grid


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 image as PNG to a local path or a URL (gs://...)."""
  from gan_core import files
  files.write_bytes(path, files.png_bytes(image))


def save_npz_deterministic(path: str, **arrays: np.ndarray) -> None:
  """Like np.savez, but byte-for-byte reproducible (fixed zip timestamps).

  np.savez stamps each member with the current time, so the same arrays would
  give different files.
  """
  import io
  import zipfile
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
    for name, array in arrays.items():
      buffer = io.BytesIO()
      np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
      info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
      archive.writestr(info, buffer.getvalue())


def save_npz_atomic(path: str, **arrays: np.ndarray) -> None:
  """np.savez to a temporary file in the target folder (created if needed), then renamed,
  so readers never see a half-written file."""
  import os
  import tempfile
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.partial")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def box_downsample_uint8(images: np.ndarray, factor: int) -> np.ndarray:
  """uint8 NHWC images averaged over factor x factor boxes, rounded to uint8.

  Repeated 2x2 averaging in float32 and one rounding at the end, which is how
  PGGAN's dataset tool builds its lower-resolution copies of a dataset.
  """
  if factor == 1:
    return images
  if factor < 1 or factor & (factor - 1):
    raise ValueError(f"downsampling factor {factor} must be a power of two")
  x = np.asarray(images, np.float32)
  *lead, h, w, c = x.shape
  if h % factor or w % factor:
    raise ValueError(f"images of size {h}x{w} cannot be downsampled by {factor}")
  x = x.reshape(-1, h, w, c)
  while factor > 1:
    x = (x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) * 0.25
    factor //= 2
  return np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(*lead, *x.shape[1:])
