"""The grain pipeline over every random-access source: worker- and process-count
independence, O(1) positions, the prepare tool, tfds ArrayRecord datasets (training
and exact resume), device prefetch."""
import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from gan_core import parallel
from gan_core.data import (DataError, ImageFolderSource, IndexedPipeline, build_pipeline,
                           digits_source, prepared)
from gan_core.data import prepare as prepare_tool
from gan_core.images import box_downsample_uint8
from conftest import REPO, tiny_config


def take(iterator, n):
  batches = [next(iterator) for _ in range(n)]
  iterator.close()
  return batches


def make_folder(root, sizes=((23, 17), (40, 32), (16, 50), (31, 31), (64, 48)), per_class=4,
                classes=("ant", "bee", "cat")):
  """A class-conditional folder of JPEGs and PNGs of assorted sizes with smooth content."""
  rng = np.random.default_rng(0)
  for c, name in enumerate(classes):
    os.makedirs(root / name, exist_ok=True)
    for i in range(per_class):
      w, h = sizes[(c * per_class + i) % len(sizes)]
      yy, xx = np.mgrid[0:h, 0:w]
      base = rng.uniform(0, 255, 3)
      pixels = base + 60 * np.sin(xx[..., None] / rng.uniform(2, 9) + yy[..., None] /
                                  rng.uniform(2, 9) + rng.uniform(0, 6, 3))
      image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
      image.save(root / name / f"{i:03d}.{'jpg' if i % 2 else 'png'}", quality=90)
  return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return make_folder(tmp_path_factory.mktemp("folder"))


def fake_processes(monkeypatch, count, index):
  monkeypatch.setattr(jax, "process_count", lambda: count)
  monkeypatch.setattr(jax, "process_index", lambda: index)


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["images"], y["images"])
    np.testing.assert_array_equal(x["labels"], y["labels"])


def test_result_does_not_depend_on_the_number_of_workers(folder):
  shape = (2, 1, 6)  # 12 per batch over 12 images: every batch is a whole epoch.
  one = take(build_pipeline(str(folder), 16, 5, True, num_workers=1).iterate(7, shape), 4)
  three = take(build_pipeline(str(folder), 16, 5, True, num_workers=3).iterate(7, shape), 4)
  assert_batches_equal(one, three)
  assert one[0]["images"].shape == (2, 1, 6, 16, 16, 3)


def test_positions_are_o1_and_independent_of_the_batch_shape():
  pipeline = IndexedPipeline(digits_source(8), seed=1, random_flip=True, num_workers=2)
  flat = take(pipeline.iterate(10**12 + 5, (60,)), 1)[0]
  shaped = take(pipeline.iterate(10**12 + 5, (3, 2, 10)), 1)[0]
  np.testing.assert_array_equal(flat["images"], shaped["images"].reshape(60, 8, 8, 3))
  # Every epoch, also one near 1e12 examples in, is a permutation of the whole dataset.
  epoch = (10**12 // 1797) * 1797
  indices, flips = pipeline.global_indices(epoch, 1797)
  assert sorted(indices.tolist()) == list(range(1797)) and 0.4 < flips.mean() < 0.6
  # The flip of a position is decided by (seed, position): the pipeline's images are
  # the source's, mirrored exactly where the flip says.
  indices, flips = pipeline.global_indices(10**12 + 5, 60)
  source = digits_source(8)
  expected = np.where(flips[:, None, None, None], source.images[indices][:, :, ::-1],
                      source.images[indices])
  np.testing.assert_array_equal(flat["images"], expected)


@pytest.mark.parametrize("kind", ["folder", "prepared", "tfds"])
def test_global_batches_do_not_depend_on_the_number_of_processes(kind, folder, tmp_path,
                                                                 tiny_tfds, monkeypatch):
  if kind == "folder":
    dataset, data_dir = str(folder), None
  elif kind == "prepared":
    dataset, data_dir = str(tmp_path / "prep"), None
    prepare_tool.prepare(str(folder), dataset, 16, levels=True, log=lambda *_: None)
  else:
    dataset, data_dir = "tiny_shapes", tiny_tfds
  shape = (2, 8)
  single = take(build_pipeline(dataset, 16, 3, True, data_dir, num_workers=2).iterate(
      5, shape, downscale=2), 3)
  parts = []
  for index in range(4):
    fake_processes(monkeypatch, 4, index)
    parts.append(take(build_pipeline(dataset, 16, 3, True, data_dir).iterate(
        5, shape, downscale=2), 3))
  for n, batch in enumerate(single):
    for key in ("images", "labels"):
      joined = np.concatenate([part[n][key] for part in parts], axis=1)
      np.testing.assert_array_equal(joined, batch[key])
  assert parts[0][0]["images"].shape == (2, 2, 8, 8, 3)


def test_prepared_dataset_round_trips_the_folder_pixels_and_labels(folder, tmp_path):
  out = tmp_path / "prep"
  lines = []
  info = prepare_tool.prepare(str(folder), str(out), 16, levels=True, workers=2, shard_size=5,
                              log=lines.append)
  assert info["levels"] == [16, 8, 4] and info["num_examples"] == 12
  assert info["num_classes"] == 3 and info["class_names"] == ["ant", "bee", "cat"]
  assert "label histogram:" in lines and any(line.split()[1:] == ["bee", "4"] for line in lines)
  direct = ImageFolderSource(str(folder), 16)
  for encoding, path in (("raw", out), ("png", tmp_path / "png")):
    if encoding == "png":
      prepare_tool.prepare(str(folder), str(path), 16, levels=False, encoding="png",
                           log=lambda *_: None)
    source = prepared.PreparedSource(str(path), 16)
    assert len(source) == 12 and source.num_classes == 3
    for index in range(12):
      for downscale in (1, 2, 4):
        image, label = source.load(index, downscale)
        want_image, want_label = direct.load(index, downscale)
        np.testing.assert_array_equal(image, want_image)
        assert label == want_label
  # The pipeline over the prepared copy yields what the folder pipeline yields.
  from_folder = take(build_pipeline(str(folder), 16, 9, True).iterate(3, (1, 10), 2), 3)
  from_prepared = take(build_pipeline(str(out), 16, 9, True).iterate(3, (1, 10), 2), 3)
  assert_batches_equal(from_folder, from_prepared)
  with pytest.raises(DataError, match="--resolution=32"):
    build_pipeline(str(out), 32, 0, False)


def test_prepare_names_unreadable_files_and_skips_them_only_when_asked(folder, tmp_path):
  src = tmp_path / "src"
  shutil.copytree(folder, src)
  (src / "bee" / "zz_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
  lines = []
  with pytest.raises(DataError, match="1 unreadable image"):
    prepare_tool.prepare(str(src), str(tmp_path / "out"), 8, log=lines.append)
  assert any("zz_broken.jpg" in line for line in lines)
  with pytest.raises(DataError, match="unfinished"):
    build_pipeline(str(tmp_path / "out"), 8, 0, False)
  info = prepare_tool.prepare(str(src), str(tmp_path / "out"), 8, skip_unreadable=True,
                              log=lines.append)
  assert info["num_examples"] == 12 and info["skipped"][0].endswith("zz_broken.jpg")
  assert len(build_pipeline(str(tmp_path / "out"), 8, 0, False).source) == 12
  # The command line: one error line naming the file, exit 1, no traceback.
  result = subprocess.run(
      [sys.executable, "-m", "gan_core.data.prepare", str(src), str(tmp_path / "cli"),
       "--resolution=8"], capture_output=True, text=True, cwd=REPO, timeout=300)
  assert result.returncode == 1, result.stderr
  assert "zz_broken.jpg" in result.stdout and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: 1 unreadable image")


def test_interrupted_prepare_is_detected_and_resumed(folder, tmp_path, monkeypatch):
  reference = tmp_path / "reference"
  prepare_tool.prepare(str(folder), str(reference), 8, levels=True, shard_size=3,
                       log=lambda *_: None)
  out = tmp_path / "out"
  real_shard = prepare_tool.prepare_shard

  def dies_on_shard_2(out_, shard, *args):
    if shard == 2:
      raise KeyboardInterrupt  # As Ctrl-C or a kill would, mid-prepare.
    return real_shard(out_, shard, *args)

  monkeypatch.setattr(prepare_tool, "prepare_shard", dies_on_shard_2)
  with pytest.raises(KeyboardInterrupt):
    prepare_tool.prepare(str(folder), str(out), 8, levels=True, shard_size=3,
                         log=lambda *_: None)
  assert not (out / "dataset.json").exists()
  with pytest.raises(DataError, match="unfinished prepared dataset.*Rerun"):
    build_pipeline(str(out), 8, 0, False)
  with pytest.raises(DataError, match="other inputs or options.*resolution"):
    prepare_tool.prepare(str(folder), str(out), 16, levels=True, shard_size=3)
  monkeypatch.setattr(prepare_tool, "prepare_shard", real_shard)
  lines = []
  prepare_tool.prepare(str(folder), str(out), 8, levels=True, shard_size=3, log=lines.append)
  assert "Resuming: 2 of 4 shards already prepared." in lines
  finished, expected = prepared.PreparedSource(str(out), 8), prepared.PreparedSource(
      str(reference), 8)
  for index in range(12):
    for downscale in (1, 2):
      np.testing.assert_array_equal(finished.load(index, downscale)[0],
                                    expected.load(index, downscale)[0])
  assert json.loads((out / "dataset.json").read_text()) == json.loads(
      (reference / "dataset.json").read_text())
  with pytest.raises(DataError, match="not empty"):
    prepare_tool.prepare(str(folder), str(folder / "ant"), 8)


# --- tfds datasets as ArrayRecord -------------------------------------------------------

@functools.cache
def _tiny_builder_class():
  """Defined once: tfds registers builder classes by name."""
  import tensorflow_datasets as tfds

  class TinyShapes(tfds.core.GeneratorBasedBuilder):
    """40 random images of assorted sizes in 10 classes."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.ClassLabel(num_classes=10)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      rng = np.random.default_rng(0)
      for i in range(40):
        h, w = rng.integers(20, 48, 2)
        yield i, {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "label": i % 10}

  return TinyShapes


@pytest.fixture(scope="session")
def tiny_tfds(tmp_path_factory):
  """data_dir of a tfds dataset built here, offline, in ArrayRecord format."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  _tiny_builder_class()(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return data_dir


def test_tfds_array_record_source_reads_the_stored_images(tiny_tfds):
  import tensorflow_datasets as tfds
  pipeline = build_pipeline("tiny_shapes", 16, 0, False, data_dir=tiny_tfds)
  assert pipeline.num_examples == 40 and pipeline.num_classes == 10
  stored = tfds.data_source("tiny_shapes", split="train", data_dir=tiny_tfds)
  from gan_core.data.sources import center_crop_resize
  for index in (0, 17, 39):
    image, label = pipeline.source.load(index)
    np.testing.assert_array_equal(
        image, center_crop_resize(Image.fromarray(stored[index]["image"]), 16))
    assert label == stored[index]["label"]


def test_tfds_dataset_stored_as_tfrecord_is_refused_with_the_conversion(tmp_path):
  _tiny_builder_class()(data_dir=str(tmp_path)).download_and_prepare()  # TFRecord: the default.
  with pytest.raises(DataError, match="tfds convert_format --dataset_version_dir=.*array_record"):
    build_pipeline("tiny_shapes", 16, 0, False, data_dir=str(tmp_path))


def test_training_on_a_tfds_array_record_dataset_resumes_bit_identically(tiny_tfds, tmp_path):
  from biggan_jax.train import train_and_evaluate
  from test_checkpoint import assert_states_identical

  def config(steps):
    c = tiny_config()
    c.dataset, c.data_dir, c.random_flip, c.num_train_steps = "tiny_shapes", tiny_tfds, True, steps
    return c

  straight = train_and_evaluate(config(4), str(tmp_path / "straight"))
  train_and_evaluate(config(2), str(tmp_path / "resumed"))
  resumed = train_and_evaluate(config(4), str(tmp_path / "resumed"))
  assert int(resumed.step) == 4
  assert_states_identical(jax.tree.map(np.asarray, straight), jax.tree.map(np.asarray, resumed))


# --- device prefetch ---------------------------------------------------------------------

def test_prefetch_to_devices_yields_sharded_batches_in_order_and_closes_its_source():
  mesh = parallel.make_mesh()
  closed = []

  def local_batches():
    try:
      for n in range(5):
        yield {"images": np.full((2, 8, 3), n, np.uint8)}
    finally:
      closed.append(True)

  prefetched = parallel.prefetch_to_devices(local_batches(), mesh, leading_unsharded_dims=1)
  first = next(prefetched)
  assert first["images"].sharding.spec == parallel.batch_sharding(mesh, 1).spec
  assert int(first["images"][0, 0, 0]) == 0 and int(next(prefetched)["images"].max()) == 1
  prefetched.close()
  assert closed == [True]
  assert [int(b["images"].max()) for b in parallel.prefetch_to_devices(
      local_batches(), mesh, 1, size=3)] == [0, 1, 2, 3, 4]


def test_downscaled_levels_equal_box_filtered_full_resolution(folder):
  source = ImageFolderSource(str(folder), 16)
  full, _ = source.load(3)
  np.testing.assert_array_equal(source.load(3, 4)[0], box_downsample_uint8(full, 4))
