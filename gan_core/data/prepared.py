"""Prepared datasets: center-cropped, resized uint8 images in ArrayRecord files.

`python -m gan_core.data.prepare` writes them (see that module); this module
defines the layout and reads it. A prepared dataset is a folder:

  dataset.json            written last: its presence means the dataset is complete
  labels.npy              int32 label per example (0 for an unconditional dataset)
  r<RES>/NNNNN.array_record  one file per shard and stored resolution; record i of
                          the concatenated shards is example i's image: raw
                          RES*RES*3 bytes (`encoding: raw`) or a PNG (`encoding: png`)
  shards/NNNNN.json       per-shard progress of an unfinished or finished prepare
  prepare.json            the options and inputs of the prepare that wrote it

`--levels` stores every power-of-two resolution from RES down to 4, each the
box-filtered full-resolution image (`gan_core.images.box_downsample_uint8`), so
PGGAN's low-resolution phases read small images instead of decoding large ones;
the pixels equal what the pipeline would compute from the full resolution.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np

from gan_core.data.sources import DataError
from gan_core.images import box_downsample_uint8

FORMAT = "gan_core.prepared"
VERSION = 1
DATASET_FILE = "dataset.json"
MANIFEST_FILE = "prepare.json"
LABELS_FILE = "labels.npy"


def level_dir(root: str, resolution: int) -> str:
  return os.path.join(root, f"r{resolution}")


def shard_file(root: str, resolution: int, shard: int) -> str:
  return os.path.join(level_dir(root, resolution), f"{shard:05d}.array_record")


def is_prepared_dir(path: str) -> bool:
  """True for the output folder of a prepare, finished or not."""
  path = os.path.expanduser(path)
  return (os.path.isfile(os.path.join(path, DATASET_FILE)) or
          os.path.isfile(os.path.join(path, MANIFEST_FILE)))


def read_info(path: str) -> dict:
  """dataset.json of a finished prepare; a DataError for an unfinished or foreign one."""
  path = os.path.expanduser(path)
  info_path = os.path.join(path, DATASET_FILE)
  if not os.path.isfile(info_path):
    raise DataError(
        f"{path!r} holds an unfinished prepared dataset (no {DATASET_FILE}: the prepare was "
        "interrupted or failed). Rerun the same `python -m gan_core.data.prepare` command to "
        "finish it (finished shards are kept).")
  with open(info_path) as f:
    info = json.load(f)
  if info.get("format") != FORMAT or info.get("version") != VERSION:
    raise DataError(f"{info_path!r} is not a {FORMAT} v{VERSION} dataset description "
                    f"(format {info.get('format')!r}, version {info.get('version')!r}).")
  return info


class PreparedSource:
  """A finished prepared dataset at one of its stored resolutions."""

  def __init__(self, path: str, image_size: int):
    from grain.sources import ArrayRecordDataSource
    self.path = os.path.expanduser(path)
    info = read_info(self.path)
    self.levels = sorted(info["levels"], reverse=True)
    if image_size not in self.levels:
      raise DataError(
          f"the prepared dataset {self.path!r} stores resolutions {self.levels}, not the model's "
          f"{image_size}. Prepare it again with --resolution={image_size} (into another folder).")
    self.info = info
    self.image_size = image_size
    self.num_classes = int(info["num_classes"])
    self.class_names = list(info.get("class_names", []))
    self.encoding = info["encoding"]
    self.labels = np.load(os.path.join(self.path, LABELS_FILE))
    shards = [i for i, count in enumerate(info["shard_counts"]) if count]
    self._readers = {}
    for level in self.levels:
      if level > image_size:
        continue
      paths = [shard_file(self.path, level, i) for i in shards]
      missing = [p for p in paths if not os.path.isfile(p)]
      if missing:
        raise DataError(f"the prepared dataset {self.path!r} is missing {missing[0]!r} "
                        f"({len(missing)} files missing). Prepare it again.")
      self._readers[level] = ArrayRecordDataSource(paths)
      if len(self._readers[level]) != len(self.labels):
        raise DataError(f"the prepared dataset {self.path!r} has {len(self._readers[level])} "
                        f"images at {level}px but {len(self.labels)} labels. Prepare it again.")

  def __len__(self) -> int:
    return len(self.labels)

  def read(self, index: int, resolution: int) -> np.ndarray:
    """The stored image `index` at a stored `resolution`."""
    record = self._readers[resolution][index]
    if self.encoding == "png":
      from PIL import Image
      with Image.open(io.BytesIO(record)) as image:
        return np.asarray(image.convert("RGB"), np.uint8)
    return np.frombuffer(record, np.uint8).reshape(resolution, resolution, 3)

  def load(self, index: int, downscale: int = 1) -> tuple[np.ndarray, int]:
    target = self.image_size // downscale
    if target in self._readers:
      image = self.read(index, target)
    else:
      image = box_downsample_uint8(self.read(index, self.image_size), downscale)
    return image, int(self.labels[index])
