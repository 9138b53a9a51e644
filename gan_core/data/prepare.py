"""`python -m gan_core.data.prepare SRC OUT --resolution=R [--levels]`: an image folder
as a prepared dataset (random-access ArrayRecord files of center-cropped, resized
uint8 images), the role of the official PGGAN `dataset_tool` and StyleGAN2-ADA's
`dataset_tool.py`.

SRC is laid out as the training code reads folders: SRC/<class>/<images>
(class-conditional, classes in sorted order) or SRC/<images> (unconditional),
files in sorted order. Each image is decoded, center-cropped to a square and
resized (bilinear) exactly as the folder pipeline does, so training on OUT sees
the same pixels as training on SRC, without decoding JPEGs at every step.
`--levels` also stores the box-downsampled resolutions R/2, ..., 4 that PGGAN's
early phases use. Point `config.dataset` at OUT.

Work is split into shards of `--shard_size` images prepared by `--workers`
processes. A shard's files are renamed into place when complete and `dataset.json`
is written last, so an interrupted prepare never looks complete to training, and
rerunning the same command continues where it stopped. An unreadable image is
named and, unless --skip_unreadable, fails the prepare (after every other image
has been processed, so that every bad file is listed at once).
"""
from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import io
import json
import os
import sys
import time

import numpy as np
from absl import flags

from gan_core.data import prepared
from gan_core.data.sources import DataError, ImageFolderSource, decode_file
from gan_core.images import box_downsample_uint8


def stored_levels(resolution: int, levels: bool) -> list[int]:
  """The resolutions a prepare stores: R, and with `levels` R/2, ... while >= 4."""
  result = [resolution]
  while levels and result[-1] % 2 == 0 and result[-1] // 2 >= 4:
    result.append(result[-1] // 2)
  return result


def _atomic_write(path: str, data: bytes) -> None:
  partial = path + ".partial"
  with open(partial, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(partial, path)


def _atomic_json(path: str, value) -> None:
  _atomic_write(path, json.dumps(value, indent=1).encode())


def _encode(image: np.ndarray, encoding: str) -> bytes:
  if encoding == "png":
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
  return np.ascontiguousarray(image).tobytes()


def prepare_shard(out: str, shard: int, paths: list[str], labels: list[int], resolution: int,
                  levels: list[int], encoding: str) -> dict:
  """Writes one shard's ArrayRecord files (one per level) and its progress file."""
  from array_record.python.array_record_module import ArrayRecordWriter
  partial = {level: prepared.shard_file(out, level, shard) + ".partial" for level in levels}
  writers = {level: ArrayRecordWriter(path, "group_size:1") for level, path in partial.items()}
  kept_labels, unreadable = [], []
  try:
    for path, label in zip(paths, labels):
      try:
        image = decode_file(path, resolution)
      except DataError as e:
        unreadable.append([path, str(e.__cause__ or e)])
        continue
      for level in levels:
        writers[level].write(_encode(box_downsample_uint8(image, resolution // level), encoding))
      kept_labels.append(int(label))
  finally:
    for writer in writers.values():
      writer.close()
  for level, path in partial.items():
    os.replace(path, prepared.shard_file(out, level, shard))
  record = {"count": len(kept_labels), "labels": kept_labels, "unreadable": unreadable}
  _atomic_json(os.path.join(out, "shards", f"{shard:05d}.json"), record)
  return record


def _manifest(source: ImageFolderSource, src: str, resolution: int, levels: list[int],
              encoding: str, shard_size: int) -> dict:
  listing = hashlib.sha256()
  for path, label in zip(source.paths, source.labels):
    listing.update(f"{os.path.relpath(path, src)}\t{label}\n".encode())
  return {"format": prepared.FORMAT, "version": prepared.VERSION, "source": os.path.abspath(src),
          "resolution": resolution, "levels": levels, "encoding": encoding,
          "shard_size": shard_size, "num_files": len(source.paths),
          "listing_sha256": listing.hexdigest(), "class_names": source.class_names}


def _check_output(out: str, manifest: dict) -> bool:
  """Whether `out` already holds this very prepare, finished; raises if it holds another."""
  manifest_path = os.path.join(out, prepared.MANIFEST_FILE)
  if os.path.isfile(manifest_path):
    with open(manifest_path) as f:
      existing = json.load(f)
    changed = [k for k in manifest if existing.get(k) != manifest[k]]
    if changed:
      raise DataError(
          f"{out!r} holds a prepared dataset made with other inputs or options (differences: "
          f"{', '.join(changed)}). Choose another output folder, or delete {out!r} first.")
    return os.path.isfile(os.path.join(out, prepared.DATASET_FILE))
  if os.path.isdir(out) and os.listdir(out):
    raise DataError(f"output folder {out!r} exists and is not empty; choose a new folder.")
  return False


def prepare(src: str, out: str, resolution: int, levels: bool = False, encoding: str = "raw",
            workers: int = 1, shard_size: int = 1000, skip_unreadable: bool = False,
            log=print) -> dict:
  """Prepares SRC into OUT (or finishes an interrupted prepare); returns dataset.json's dict."""
  if resolution is None or resolution < 4:
    raise DataError("--resolution must be given and at least 4")
  if shard_size < 1:
    raise DataError("--shard_size must be at least 1")
  src, out = os.path.expanduser(src), os.path.expanduser(out)
  if prepared.is_prepared_dir(src):
    raise DataError(f"{src!r} is already a prepared dataset; point config.dataset at it.")
  source = ImageFolderSource(src, resolution)  # Lists and validates the layout; decodes nothing.
  level_list = stored_levels(resolution, levels)
  manifest = _manifest(source, src, resolution, level_list, encoding, shard_size)
  if _check_output(out, manifest):
    log(f"{out} is already complete.")
    return prepared.read_info(out)
  for level in level_list:
    os.makedirs(prepared.level_dir(out, level), exist_ok=True)
  os.makedirs(os.path.join(out, "shards"), exist_ok=True)
  _atomic_json(os.path.join(out, prepared.MANIFEST_FILE), manifest)

  num_shards = -(-len(source.paths) // shard_size)
  records: dict[int, dict] = {}
  todo = []
  for shard in range(num_shards):
    progress_path = os.path.join(out, "shards", f"{shard:05d}.json")
    files_present = all(os.path.isfile(prepared.shard_file(out, level, shard))
                        for level in level_list)
    if os.path.isfile(progress_path) and files_present:
      with open(progress_path) as f:
        record = json.load(f)
      if not record["unreadable"] or skip_unreadable:
        records[shard] = record
        continue
    todo.append(shard)
  if records:
    log(f"Resuming: {len(records)} of {num_shards} shards already prepared.")

  def arguments(shard):
    lo, hi = shard * shard_size, min((shard + 1) * shard_size, len(source.paths))
    return (out, shard, source.paths[lo:hi], source.labels[lo:hi].tolist(), resolution,
            level_list, encoding)

  start, done_images = time.perf_counter(), 0
  workers = workers or os.cpu_count() or 1
  if workers == 1 or len(todo) <= 1:
    results = ((shard, prepare_shard(*arguments(shard))) for shard in todo)
    pool = None
  else:
    import multiprocessing
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
    futures = {pool.submit(prepare_shard, *arguments(shard)): shard for shard in todo}
    results = ((futures[f], f.result()) for f in concurrent.futures.as_completed(futures))
  try:
    for shard, record in results:
      records[shard] = record
      done_images += record["count"] + len(record["unreadable"])
      rate = done_images / max(time.perf_counter() - start, 1e-9)
      log(f"shard {len(records)}/{num_shards} done ({rate:.0f} images/s)")
  finally:
    if pool:
      pool.shutdown(cancel_futures=True)

  unreadable = [item for shard in sorted(records) for item in records[shard]["unreadable"]]
  for path, reason in unreadable:
    log(f"unreadable: {path} ({reason})")
  if unreadable and not skip_unreadable:
    raise DataError(f"{len(unreadable)} unreadable image(s), listed above; the dataset is not "
                    "finished. Delete or replace them and rerun the same command, or rerun it "
                    "with --skip_unreadable to leave them out.")
  labels = np.asarray([label for shard in sorted(records) for label in records[shard]["labels"]],
                      np.int32)
  if not len(labels):
    raise DataError(f"no readable images in {src!r}")
  buffer = io.BytesIO()
  np.save(buffer, labels)
  _atomic_write(os.path.join(out, prepared.LABELS_FILE), buffer.getvalue())
  info = {"format": prepared.FORMAT, "version": prepared.VERSION, "resolution": resolution,
          "levels": level_list, "encoding": encoding, "num_examples": int(len(labels)),
          "num_classes": source.num_classes, "class_names": source.class_names,
          "shard_counts": [records[s]["count"] for s in range(num_shards)],
          "skipped": [path for path, _ in unreadable]}
  _atomic_json(os.path.join(out, prepared.DATASET_FILE), info)  # Last: the dataset is complete.

  log(f"{len(labels)} images ({len(unreadable)} skipped) at {level_list} px, "
      f"{source.num_classes or 'no'} classes, {encoding} encoding -> {out}")
  if source.num_classes:
    histogram = collections.Counter(labels.tolist())
    width = max(len(name) for name in source.class_names)
    log("label histogram:")
    for label, name in enumerate(source.class_names):
      log(f"  {label:5d} {name:<{width}} {histogram.get(label, 0)}")
  return info


def define_flags() -> None:
  """The tool's flags (defined only when it runs as a program: shard workers import this
  module too)."""
  flags.DEFINE_integer("resolution", None, "Side of the stored square images.")
  flags.DEFINE_bool("levels", False, "Also store the box-downsampled resolutions R/2, R/4, ..., "
                    "4 (PGGAN's lower-resolution phases).")
  flags.DEFINE_enum("encoding", "raw", ["raw", "png"], "raw: uncompressed uint8 (fastest to "
                    "read); png: lossless, smaller on disk, decoded by the pipeline's workers.")
  flags.DEFINE_integer("workers", 0, "Processes preparing shards (0: all cores).")
  flags.DEFINE_integer("shard_size", 1000, "Images per shard.")
  flags.DEFINE_bool("skip_unreadable", False, "Leave out images that cannot be decoded (each is "
                    "still named) instead of failing.")


def main(argv: list[str]) -> None:
  FLAGS = flags.FLAGS
  if len(argv) != 3:
    sys.stderr.write("usage: python -m gan_core.data.prepare SRC OUT --resolution=R [--levels] "
                     "[--encoding=raw|png] [--workers=N] [--shard_size=N] [--skip_unreadable]\n")
    sys.exit(2)
  try:
    prepare(argv[1], argv[2], FLAGS.resolution, FLAGS.levels, FLAGS.encoding, FLAGS.workers,
            FLAGS.shard_size, FLAGS.skip_unreadable)
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  from gan_core.cli import run_app
  define_flags()
  run_app(main)
