r"""Times the input pipeline alone (no model): decoding, crop/resize, flips, batching.

  python benchmarks/input_pipeline.py --dataset=X --resolution=R --batch_size=B \
      [--workers=W] [--position=P] [--batches=N] [--downscale=D] [--data_dir=DIR]

X is anything `config.dataset` accepts: 'digits', an image folder, a prepared
dataset (python -m gan_core.data.prepare) or a tfds name prepared as ArrayRecord.
Prints `first batch s: X` (from constructing the pipeline at global position P
to holding the first batch: what a resumed run waits before its first step) and
`images/s: X` over the next N batches (after the first).

  python benchmarks/input_pipeline.py --generate=DIR [--num_images=2000]

writes DIR/<class>/*.jpg: ~500x375 JPEGs (quality 90) of smooth random content
in 10 classes, the size of an average ImageNet photo, to benchmark a folder
without downloading anything.

  python benchmarks/input_pipeline.py --dataset=FOLDER --make_tfds=DATA_DIR

stores FOLDER's files unchanged (the same JPEG bytes) as the tfds dataset
`input_benchmark_images` in ArrayRecord format under DATA_DIR, to benchmark the tfds
path on the same images (`--dataset=input_benchmark_images --data_dir=DATA_DIR`).
"""
from __future__ import annotations

import os
import platform
import time

import numpy as np
from absl import app, flags

flags.DEFINE_string("dataset", None, "digits, a folder, a prepared dataset or a tfds name.")
flags.DEFINE_string("data_dir", None, "tfds data_dir.")
flags.DEFINE_integer("resolution", 128, "Image side the pipeline produces.")
flags.DEFINE_integer("batch_size", 256, "Global batch (one process reads all of it here).")
flags.DEFINE_integer("workers", 0, "Decoding threads (0: all cores but one).")
flags.DEFINE_integer("position", 0, "Global position to start at (a resume point).")
flags.DEFINE_integer("batches", 10, "Batches timed after the first.")
flags.DEFINE_integer("downscale", 1, "Box-downsampling factor (PGGAN's lower resolutions).")
flags.DEFINE_bool("flip", True, "Random horizontal flips.")
flags.DEFINE_string("generate", None, "Write a benchmark JPEG folder here and exit.")
flags.DEFINE_integer("num_images", 2000, "Images to generate.")
flags.DEFINE_string("make_tfds", None, "Store --dataset (a class folder) as a tfds ArrayRecord "
                    "dataset in this data_dir and exit.")
FLAGS = flags.FLAGS


def generate_jpeg_folder(root: str, num_images: int, seed: int = 0) -> None:
  """~500x375 JPEGs: sums of a few random low-frequency waves plus sensor-like noise, so
  they compress (and decode) like photographs rather than like pure noise."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
  for i in range(num_images):
    folder = os.path.join(root, f"class_{i % 10}")
    os.makedirs(folder, exist_ok=True)
    pixels = np.full((375, 500, 3), 128.0, np.float32)
    for _ in range(6):
      fx, fy = rng.uniform(0.005, 0.08, 2)
      pixels += rng.uniform(10, 50, 3) * np.sin(xx[..., None] * fx + yy[..., None] * fy +
                                                rng.uniform(0, 6.3, 3))
    pixels += rng.normal(0, 12, pixels.shape)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        os.path.join(folder, f"{i:06d}.jpg"), quality=90)


def make_tfds_dataset(folder: str, data_dir: str) -> None:
  """The folder's encoded files, unchanged, as tfds dataset `input_benchmark_images`."""
  import tensorflow_datasets as tfds

  from gan_core.data import ImageFolderSource
  source = ImageFolderSource(folder, 8)  # Only lists the files and labels.

  class InputBenchmarkImages(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.ClassLabel(num_classes=max(source.num_classes, 1))}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, (path, label) in enumerate(zip(source.paths, source.labels)):
        yield i, {"image": path, "label": int(label)}

  InputBenchmarkImages(data_dir=data_dir, file_format="array_record").download_and_prepare()


def main(argv):
  del argv
  if FLAGS.generate:
    generate_jpeg_folder(FLAGS.generate, FLAGS.num_images)
    print(f"wrote {FLAGS.num_images} JPEGs to {FLAGS.generate}")
    return
  if not FLAGS.dataset:
    raise app.UsageError("--dataset is required (or --generate=DIR)")
  if FLAGS.make_tfds:
    make_tfds_dataset(FLAGS.dataset, FLAGS.make_tfds)
    return
  from gan_core.data import build_pipeline
  start = time.perf_counter()
  pipeline = build_pipeline(FLAGS.dataset, FLAGS.resolution, seed=0, random_flip=FLAGS.flip,
                            data_dir=FLAGS.data_dir, num_workers=FLAGS.workers)
  batches = pipeline.iterate(FLAGS.position, (FLAGS.batch_size,), downscale=FLAGS.downscale)
  first = next(batches)
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(FLAGS.batches):
    batch = next(batches)
  elapsed = time.perf_counter() - start
  batches.close()
  assert batch["images"].shape[0] == first["images"].shape[0] == FLAGS.batch_size
  print(f"dataset: {FLAGS.dataset} ({pipeline.num_examples} examples), resolution "
        f"{FLAGS.resolution // FLAGS.downscale}, batch {FLAGS.batch_size}, workers "
        f"{pipeline.num_workers}, position {FLAGS.position}, machine {platform.machine()} "
        f"{os.cpu_count()} cores")
  print(f"first batch s: {first_s:.3f}")
  print(f"images/s: {FLAGS.batches * FLAGS.batch_size / elapsed:.1f}")


if __name__ == "__main__":
  app.run(main)
