"""Deterministic, exactly resumable input pipelines.

A pipeline's only state is its *position*: the number of global examples
consumed so far. Batches are a pure function of (seed, position), so resuming
at a checkpoint needs nothing but the step count, and the global batch content
of an indexed source does not depend on how many processes read it.

Batches are requested with a leading shape such as (num_d_steps,
num_accumulations, global_micro_batch); the last axis is the batch axis that is
sharded over processes and devices. Each process receives only its contiguous
slice of that axis, ready for `jax.make_array_from_process_local_data`.
"""
from __future__ import annotations

import concurrent.futures
import math
import os
from typing import Iterator

import jax
import numpy as np

from gan_core.data.sources import DataError, ImageSource
from gan_core.images import box_downsample_uint8


class IndexedPipeline:
  """Epoch-wise seeded permutations over a random-access source."""

  def __init__(self, source: ImageSource, seed: int, random_flip: bool,
               num_workers: int = 8):
    if len(source) == 0:
      raise DataError("the dataset is empty")
    self.source = source
    self.seed = seed
    self.random_flip = random_flip
    self.num_classes = source.num_classes
    self.image_size = source.image_size
    self.num_examples = len(source)
    self._num_workers = num_workers
    self._epoch_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

  def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    if epoch not in self._epoch_cache:
      rng = np.random.default_rng([self.seed, epoch])
      order = rng.permutation(self.num_examples)
      flips = rng.random(self.num_examples) < 0.5
      if len(self._epoch_cache) > 2:
        self._epoch_cache.pop(min(self._epoch_cache))
      self._epoch_cache[epoch] = (order, flips)
    return self._epoch_cache[epoch]

  def global_indices(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Example indices and flip decisions for global positions [start, start+count)."""
    positions = np.arange(start, start + count)
    epochs, offsets = np.divmod(positions, self.num_examples)
    indices = np.empty(count, np.int64)
    flips = np.empty(count, bool)
    for epoch in np.unique(epochs):
      order, flip = self._epoch(int(epoch))
      sel = epochs == epoch
      indices[sel] = order[offsets[sel]]
      flips[sel] = flip[offsets[sel]]
    return indices, flips & self.random_flip

  def _local_batch(self, position: int, leading_shape: tuple[int, ...],
                   downscale: int = 1) -> dict[str, np.ndarray]:
    count = math.prod(leading_shape)
    indices, flips = self.global_indices(position, count)
    per_process = leading_shape[-1] // jax.process_count()
    start = jax.process_index() * per_process
    indices = indices.reshape(leading_shape)[..., start:start + per_process].reshape(-1)
    flips = flips.reshape(leading_shape)[..., start:start + per_process].reshape(-1)
    images, labels = self.source.get(indices)
    images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
    images = box_downsample_uint8(images, downscale)
    local_shape = leading_shape[:-1] + (per_process,)
    return {"images": images.reshape(local_shape + images.shape[1:]),
            "labels": labels.reshape(local_shape).astype(np.int32)}

  def iterate(self, start_position: int, leading_shape: tuple[int, ...], downscale: int = 1
              ) -> Iterator[dict[str, np.ndarray]]:
    """Yields local batches forever, prefetching one ahead in a thread.

    `downscale` > 1 box-averages the images by that factor (see
    `gan_core.images.box_downsample_uint8`), for progressive growing.
    """
    count = math.prod(leading_shape)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      position = start_position
      pending = pool.submit(self._local_batch, position, leading_shape, downscale)
      while True:
        batch = pending.result()
        position += count
        pending = pool.submit(self._local_batch, position, leading_shape, downscale)
        yield batch


class TfdsPipeline:
  """A tensorflow-datasets dataset read with tf.data, one shard per process.

  Deterministic given the seed (seeded file and buffer shuffles, deterministic
  interleave, flips from a stateless RNG keyed by the example position). Resume
  skips the already consumed serialized records before decoding.
  """

  def __init__(self, name: str, image_size: int, seed: int, random_flip: bool,
               data_dir: str | None = None, split: str = "train", download: bool = False,
               shuffle_buffer: int = 10_000):
    import tensorflow as tf
    import tensorflow_datasets as tfds
    tf.config.set_visible_devices([], "GPU")
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise DataError(f"unknown tfds dataset {name!r} ({first_line}). Use a tfds name such as "
                      "'imagenet2012' or 'cifar10', 'digits', or a path to an image folder.") from e
    if not builder.is_prepared():
      if download:
        builder.download_and_prepare()
      else:
        try:  # tfds.testing.mock_data serves data without the "prepared" marker.
          builder.as_dataset(split=split)
        except Exception as e:
          manual = ""
          if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
            manual = (f" This dataset needs a manual download into {builder.data_dir_root}/"
                      f"downloads/manual: {builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
          raise DataError(
              f"tfds dataset {name!r} is not prepared in {builder.data_dir!r}. Prepare it with "
              f"`tfds build {name}` (or set config.data_dir to where it is, or "
              f"config.download_dataset=True to let the run download it).{manual}") from e
    features = builder.info.features
    if "image" not in features:
      raise DataError(f"tfds dataset {name!r} has no 'image' feature (features: "
                      f"{list(features.keys())})")
    self.has_labels = "label" in features
    self.num_classes = features["label"].num_classes if self.has_labels else 0
    self.image_size = image_size
    self._builder = builder
    self._split = split
    self._seed = seed
    self._random_flip = random_flip
    self._shuffle_buffer = shuffle_buffer

  def _dataset(self, local_start: int, local_count: int):
    import tensorflow as tf
    import tensorflow_datasets as tfds
    split = tfds.split_for_jax_process(self._split, drop_remainder=True)
    read_config = tfds.ReadConfig(shuffle_seed=self._seed, interleave_cycle_length=16,
                                  interleave_block_length=1)
    ds = self._builder.as_dataset(split=split, shuffle_files=True, read_config=read_config,
                                  decoders={"image": tfds.decode.SkipDecoding()})
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options)
    ds = ds.repeat().shuffle(self._shuffle_buffer, seed=self._seed)
    ds = ds.skip(local_start).enumerate(start=local_start)
    size, seed, flip, has_labels = (self.image_size, self._seed, self._random_flip,
                                    self.has_labels)
    process_index = jax.process_index()

    def preprocess(position, example):
      image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
      shape = tf.shape(image)
      side = tf.minimum(shape[0], shape[1])
      top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
      image = image[top:top + side, left:left + side]
      image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
      if flip:
        rand = tf.random.stateless_uniform(
            [], seed=tf.stack([tf.cast(seed * 1009 + process_index, tf.int64), position]))
        image = tf.cond(rand < 0.5, lambda: image[:, ::-1], lambda: image)
      image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
      label = tf.cast(example["label"], tf.int32) if has_labels else tf.constant(0, tf.int32)
      return {"images": image, "labels": label}

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(local_count, drop_remainder=True).prefetch(2)

  def iterate(self, start_position: int, leading_shape: tuple[int, ...], downscale: int = 1
              ) -> Iterator[dict[str, np.ndarray]]:
    processes = jax.process_count()
    local_shape = leading_shape[:-1] + (leading_shape[-1] // processes,)
    local_count = math.prod(local_shape)
    for batch in self._dataset(start_position // processes, local_count).as_numpy_iterator():
      images = box_downsample_uint8(batch["images"], downscale)
      yield {"images": images.reshape(local_shape + images.shape[1:]),
             "labels": batch["labels"].reshape(local_shape)}


def looks_like_path(name: str) -> bool:
  """A folder path (existing, absolute, or starting with . or ~); otherwise a tfds name,
  which may contain a slash (`celeb_a_hq/1024`, `lsun/bedroom`)."""
  return name.startswith(("/", ".", "~")) or os.path.isdir(name)


def build_pipeline(dataset: str, image_size: int, seed: int, random_flip: bool,
                   data_dir: str | None = None, download: bool = False):
  """`dataset` is 'digits', a path to an image folder, or a tfds name."""
  from gan_core.data.sources import ImageFolderSource, digits_source
  if dataset == "digits":
    return IndexedPipeline(digits_source(image_size), seed, random_flip)
  if looks_like_path(dataset):
    return IndexedPipeline(ImageFolderSource(dataset, image_size), seed, random_flip)
  return TfdsPipeline(dataset, image_size, seed, random_flip, data_dir=data_dir,
                      download=download)
