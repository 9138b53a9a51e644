"""Random-access image sources: the embedded digits, image folders, prepared datasets, tfds.

A source returns one example by index: a uint8 HWC RGB image at the model
resolution (or box-downsampled from it by a power of two, for PGGAN's lower
resolutions) and an int label. Order and augmentation are decided by the
pipeline, so a source never holds iteration state, and `load` may be called
from several threads at once.
"""
from __future__ import annotations

import os
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from gan_core.errors import UserError
from gan_core.images import box_downsample_uint8

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DataError(UserError, ValueError):
  """A dataset that cannot be read as configured; the message says what to do."""


class ImageSource(Protocol):
  num_classes: int  # 0 for an unconditional dataset.
  image_size: int

  def __len__(self) -> int: ...

  def load(self, index: int, downscale: int = 1) -> tuple[np.ndarray, int]:
    """Example `index`: its (image_size/downscale)^2 uint8 RGB image and its label."""
    ...


def get_examples(source: ImageSource, indices: Sequence[int], downscale: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Stacked images and int32 labels of several examples (one thread)."""
  examples = [source.load(int(i), downscale) for i in indices]
  return (np.stack([image for image, _ in examples]),
          np.asarray([label for _, label in examples], np.int32))


class ArraySource:
  """Images held in memory."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int):
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise DataError(f"expected uint8 NHWC RGB images, got {images.dtype} {images.shape}")
    if len(labels) != len(images):
      raise DataError(f"{len(images)} images but {len(labels)} labels")
    if num_classes and (labels.min() < 0 or labels.max() >= num_classes):
      raise DataError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    self.images = images
    self.labels = labels.astype(np.int32)
    self.num_classes = num_classes
    self.image_size = images.shape[1]

  def __len__(self) -> int:
    return len(self.images)

  def load(self, index: int, downscale: int = 1) -> tuple[np.ndarray, int]:
    return box_downsample_uint8(self.images[index], downscale), int(self.labels[index])

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.images[indices], self.labels[indices]


class SubsetSource:
  """The examples `indices` of another source, renumbered 0..len-1 (a small-data subset)."""

  def __init__(self, source: ImageSource, indices: np.ndarray):
    self.source = source
    self.indices = np.asarray(indices, np.int64)
    self.num_classes = source.num_classes
    self.image_size = source.image_size
    labels = getattr(source, "labels", None)
    if labels is not None:
      self.labels = np.asarray(labels)[self.indices]

  def __len__(self) -> int:
    return len(self.indices)

  def load(self, index: int, downscale: int = 1) -> tuple[np.ndarray, int]:
    return self.source.load(int(self.indices[index]), downscale)

  def get(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    return get_examples(self, indices)


def subset_indices(source: ImageSource, fraction: float, seed: int) -> np.ndarray:
  """A seeded subset of about `fraction` of `source`, class-balanced when labels are known:
  round(fraction * class size) examples of every class (at least one), chosen by a
  permutation that depends only on `seed`, so runs with other training seeds or other
  augmentation train on the same images. Sorted, for locality on disk."""
  if not 0.0 < fraction <= 1.0:
    raise DataError(f"dataset_fraction={fraction}: a fraction in (0, 1]")
  rng = np.random.default_rng(seed)
  labels = getattr(source, "labels", None)
  if labels is None or not source.num_classes:
    labels = np.zeros(len(source), np.int32)
  labels = np.asarray(labels)
  chosen = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    count = max(1, int(round(fraction * len(members))))
    chosen.append(rng.permutation(members)[:count])
  return np.sort(np.concatenate(chosen))


def digits_source(image_size: int = 32) -> ArraySource:
  """scikit-learn's bundled 8x8 handwritten digits, upsampled to `image_size`.

  1,797 real scans in 10 classes, shipped inside the scikit-learn wheel (no
  download). Strokes are white on black as in the source: value 16 -> 255.
  Upsampling is bilinear; the gray image is repeated over three channels.
  """
  from sklearn.datasets import load_digits
  digits = load_digits()
  gray = digits.images.astype(np.float32) * (255.0 / 16.0)
  resized = np.stack([
      np.asarray(Image.fromarray(img, mode="F").resize((image_size, image_size), Image.BILINEAR))
      for img in gray
  ])
  images = np.clip(np.round(resized), 0, 255).astype(np.uint8)
  images = np.repeat(images[..., None], 3, axis=-1)
  return ArraySource(images, digits.target.astype(np.int32), num_classes=10)


def center_crop_resize(image: Image.Image, image_size: int) -> np.ndarray:
  """Crops the largest centred square and resizes it (bilinear) to image_size."""
  image = image.convert("RGB")
  width, height = image.size
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  image = image.crop((left, top, left + side, top + side))
  if side != image_size:
    image = image.resize((image_size, image_size), Image.BILINEAR)
  return np.asarray(image, dtype=np.uint8)


def _list_images(folder: str) -> list[str]:
  return sorted(f for f in os.listdir(folder)
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))


class ImageFolderSource:
  """A folder of images: one subfolder per class, or images directly (unconditional).

  Files are listed once, in sorted order, and decoded on demand (center crop to
  a square, bilinear resize). A file that cannot be decoded raises a DataError
  naming it.
  """

  LAYOUT_HELP = ("Expected either FOLDER/<class_name>/<image files> (class-conditional, one "
                 "subfolder per class) or FOLDER/<image files> (unconditional); image "
                 f"extensions: {', '.join(IMAGE_EXTENSIONS)}.")

  def __init__(self, folder: str, image_size: int):
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
      raise DataError(f"dataset folder {folder!r} does not exist or is not a directory. "
                      + self.LAYOUT_HELP)
    subfolders = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))
                        and not d.startswith("."))
    top_level = _list_images(folder)
    paths: list[str] = []
    labels: list[int] = []
    if subfolders and not top_level:
      self.class_names = subfolders
      for label, name in enumerate(subfolders):
        files = _list_images(os.path.join(folder, name))
        if not files:
          raise DataError(f"class folder {os.path.join(folder, name)!r} holds no images. "
                          "Remove it or add images. " + self.LAYOUT_HELP)
        paths += [os.path.join(folder, name, f) for f in files]
        labels += [label] * len(files)
      self.num_classes = len(subfolders)
    elif top_level:
      if subfolders:
        raise DataError(f"{folder!r} holds both image files and subfolders ({subfolders[:3]}...), "
                        "so it is unclear whether the data is class-conditional. "
                        + self.LAYOUT_HELP)
      self.class_names = []
      paths = [os.path.join(folder, f) for f in top_level]
      labels = [0] * len(paths)
      self.num_classes = 0
    else:
      raise DataError(f"no images found in {folder!r}. " + self.LAYOUT_HELP)
    self.paths = paths
    self.labels = np.asarray(labels, np.int32)
    self.image_size = image_size

  def __len__(self) -> int:
    return len(self.paths)

  def load(self, index: int, downscale: int = 1) -> tuple[np.ndarray, int]:
    image = decode_file(self.paths[index], self.image_size)
    return box_downsample_uint8(image, downscale), int(self.labels[index])

  def get(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    return get_examples(self, indices)


def decode_file(path: str, image_size: int) -> np.ndarray:
  """An image file, center-cropped and resized; a DataError naming the file if unreadable."""
  try:
    with Image.open(path) as image:
      return center_crop_resize(image, image_size)
  except Exception as e:  # PIL raises many types for broken files.
    raise DataError(f"cannot decode image {path!r} ({type(e).__name__}: {e}). Delete or "
                    "replace the file, then rerun (training resumes from the last "
                    "checkpoint).") from e
