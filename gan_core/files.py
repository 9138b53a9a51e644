"""Small files in a workdir that may be local or in a bucket (`gs://...` on a TPU pod).

Local paths use the standard library; URLs go through TensorFlow's gfile (a dependency
already), which speaks GCS. Object stores cannot append, so `append_text` writes the whole
(small) file anew there, under a temporary name that then replaces the old one.
"""
from __future__ import annotations

import io
import os


def is_url(path: str) -> bool:
  return "://" in path


def _gfile():
  import tensorflow as tf
  return tf.io.gfile


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def makedirs(path: str) -> None:
  if is_url(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def read_text(path: str) -> str:
  if is_url(path):
    with _gfile().GFile(path, "r") as f:
      return f.read()
  with open(path) as f:
    return f.read()


def append_text(path: str, text: str) -> None:
  if not is_url(path):
    with open(path, "a") as f:
      f.write(text)
    return
  previous = read_text(path) if exists(path) else ""
  temporary = path + ".partial"
  with _gfile().GFile(temporary, "w") as f:
    f.write(previous + text)
  _gfile().rename(temporary, path, overwrite=True)


def write_bytes(path: str, data: bytes) -> None:
  if is_url(path):
    with _gfile().GFile(path, "wb") as f:
      f.write(data)
  else:
    with open(path, "wb") as f:
      f.write(data)


def remove(path: str) -> None:
  """Deletes a file; FileNotFoundError if it is not there."""
  if is_url(path):
    if not exists(path):
      raise FileNotFoundError(path)
    _gfile().remove(path)
  else:
    os.remove(path)


def png_bytes(image) -> bytes:
  """A uint8 HW / HW1 / HW3 array encoded as PNG."""
  import numpy as np
  from PIL import Image
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()
