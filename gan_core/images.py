"""Image grids and PNG output."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image


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
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  Image.fromarray(image).save(path, format="PNG")


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
