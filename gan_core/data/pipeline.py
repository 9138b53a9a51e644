"""Deterministic, exactly resumable input pipelines over random-access sources.

A pipeline's only state is its *position*: the number of global examples
consumed so far. The example at global position g is a pure function of
(seed, g): grain's seeded shuffle gives each epoch its own permutation of the
whole dataset (`MapDataset.range(n).seed(seed).shuffle().repeat()`, looked up
in O(1) at any position), and the flip decision is a hash of (seed, g). So
resuming needs nothing but the step count and costs the same at position 1e9 as
at 0, and the global batch content does not depend on how many processes read
it.

Batches are requested with a leading shape such as (num_d_steps,
num_accumulations, global_micro_batch); the last axis is the batch axis that is
sharded over processes and devices. Each process reads and decodes only its
contiguous slice of that axis, ready for `jax.make_array_from_process_local_data`.

Decoding, crop/resize, box-downsampling and flips run in `num_workers` grain
threads (image decoding and resizing release the GIL), prefetching one batch
ahead; the result does not depend on the number of workers.
"""
from __future__ import annotations

import math
import os
import sys
from typing import Iterator

import grain
import jax
import numpy as np
from absl import logging

from gan_core.data.sources import DataError, ImageSource

_MASK64 = (1 << 64) - 1


def default_num_workers() -> int:
  """All cores this process may use but one (the training loop's), at least one."""
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    cores = os.cpu_count() or 2
  return max(1, cores - 1)


def flip_decision(seed: int, position: int) -> bool:
  """A fair coin for global position `position`: the low bit of splitmix64(seed, position)."""
  z = (seed * 0x9E3779B97F4A7C15 + position + 0x632BE59BD9B4E019) & _MASK64
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
  return bool((z ^ (z >> 31)) & 1)


class IndexedPipeline:
  """Epoch-wise seeded permutations over a random-access source, read with grain."""

  def __init__(self, source: ImageSource, seed: int, random_flip: bool,
               num_workers: int = 0):
    if len(source) == 0:
      raise DataError("the dataset is empty")
    self.source = source
    self.seed = seed
    self.random_flip = random_flip
    self.num_classes = source.num_classes
    self.image_size = source.image_size
    self.num_examples = len(source)
    self.num_workers = num_workers or default_num_workers()
    self._order = grain.MapDataset.range(self.num_examples).seed(seed).shuffle().repeat()

  def example_at(self, position: int) -> tuple[int, bool]:
    """(example index, flip) at global position `position`."""
    flip = self.random_flip and flip_decision(self.seed, position)
    return int(self._order[position]), flip

  def global_indices(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Example indices and flip decisions for global positions [start, start+count)."""
    pairs = [self.example_at(g) for g in range(start, start + count)]
    return (np.asarray([i for i, _ in pairs], np.int64),
            np.asarray([f for _, f in pairs], bool))

  def load_at(self, position: int, downscale: int = 1) -> tuple[np.ndarray, int]:
    """The (image, label) the pipeline yields at global position `position`."""
    index, flip = self.example_at(position)
    image, label = self.source.load(index, downscale)
    return (image[:, ::-1] if flip else image), label

  def iterate(self, start_position: int, leading_shape: tuple[int, ...], downscale: int = 1
              ) -> Iterator[dict[str, np.ndarray]]:
    """Yields this process's slices of consecutive global batches forever.

    Batch n covers global positions [start + n*C, start + (n+1)*C) with C =
    prod(leading_shape), laid out row-major in `leading_shape`. `downscale` > 1
    box-averages the images by that factor (`gan_core.images.box_downsample_uint8`),
    for progressive growing; sources with stored lower resolutions read those.
    """
    global_batch = leading_shape[-1]
    processes, process = jax.process_count(), jax.process_index()
    if global_batch % processes:
      raise DataError(f"batch axis {global_batch} is not divisible by {processes} processes")
    per_process = global_batch // processes
    count = math.prod(leading_shape)
    local_count = count // processes
    first = start_position + process * per_process

    def position(j: int) -> int:
      """Global position of this process's j-th example."""
      batch, within = divmod(j, local_count)
      row, column = divmod(within, per_process)
      return first + batch * count + row * global_batch + column

    # Grain's unit of work is a chunk of consecutive local examples: per-element
    # bookkeeping (futures, prefetch-depth statistics over the whole buffer) would cost
    # more than reading a stored image.
    chunk = _chunk_size(local_count)

    def load_chunk(c: int) -> tuple[np.ndarray, np.ndarray]:
      images, labels = None, np.empty(chunk, np.int32)
      for i in range(chunk):
        image, labels[i] = self.load_at(position(c * chunk + i), downscale)
        if images is None:
          images = np.empty((chunk,) + image.shape, np.uint8)
        images[i] = image
      return images, labels

    chunks_per_batch = local_count // chunk
    chunks = (grain.MapDataset.range(sys.maxsize).map(load_chunk)
              .to_iter_dataset(grain.ReadOptions(
                  num_threads=self.num_workers,
                  prefetch_buffer_size=max(chunks_per_batch, 2 * self.num_workers))))
    batches = iter(chunks.batch(chunks_per_batch, drop_remainder=True, batch_fn=_concatenate))
    local_shape = leading_shape[:-1] + (per_process,)
    try:
      for images, labels in batches:
        yield {"images": images.reshape(local_shape + images.shape[1:]),
               "labels": labels.reshape(local_shape)}
    finally:
      close = getattr(batches, "close", None)
      if close:
        close()


def _chunk_size(count: int, largest: int = 16) -> int:
  """The largest divisor of `count` up to `largest`."""
  return max(d for d in range(1, min(count, largest) + 1) if count % d == 0)


def _concatenate(chunks):
  return (np.concatenate([images for images, _ in chunks]),
          np.concatenate([labels for _, labels in chunks]))


def looks_like_path(name: str) -> bool:
  """A folder path (existing, absolute, or starting with . or ~); otherwise a tfds name,
  which may contain a slash (`celeb_a_hq/1024`, `lsun/bedroom`)."""
  return name.startswith(("/", ".", "~")) or os.path.isdir(name)


def build_source(dataset: str, image_size: int, data_dir: str | None = None,
                 download: bool = False) -> ImageSource:
  """'digits', a prepared dataset or image folder path, or a tfds name (ArrayRecord)."""
  from gan_core.data import prepared
  from gan_core.data.sources import ImageFolderSource, digits_source
  if dataset == "digits":
    return digits_source(image_size)
  if looks_like_path(dataset):
    if prepared.is_prepared_dir(dataset):
      return prepared.PreparedSource(dataset, image_size)
    return ImageFolderSource(dataset, image_size)
  from gan_core.data.tfds_source import TfdsSource
  return TfdsSource(dataset, image_size, data_dir=data_dir, download=download)


def build_pipeline(dataset: str, image_size: int, seed: int, random_flip: bool,
                   data_dir: str | None = None, download: bool = False,
                   num_workers: int = 0, fraction: float = 1.0,
                   subset_seed: int = 0) -> IndexedPipeline:
  """The training (or evaluation) pipeline of `dataset`; see `build_source`. With
  `fraction` < 1, only a class-balanced subset chosen by `subset_seed` (`subset_indices`)."""
  from gan_core.data.sources import SubsetSource, subset_indices
  source = build_source(dataset, image_size, data_dir, download)
  full = len(source)
  if fraction != 1.0:
    source = SubsetSource(source, subset_indices(source, fraction, subset_seed))
  pipeline = IndexedPipeline(source, seed, random_flip, num_workers)
  logging.info("Data: %s, %d examples%s, %d classes, %dpx, %d decoding workers.", dataset,
               pipeline.num_examples, f" (a {fraction:g} subset of {full})" if fraction != 1.0
               else "", pipeline.num_classes, image_size, pipeline.num_workers)
  return pipeline


__all__ = ["IndexedPipeline", "build_pipeline", "build_source", "default_num_workers",
           "flip_decision", "looks_like_path"]
