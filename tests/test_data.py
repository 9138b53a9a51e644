"""Input data: digits, image folders, tfds (mock), determinism, exact positions, errors."""
import os

import numpy as np
import pytest
from PIL import Image

from gan_core.data import (DataError, ImageFolderSource, IndexedPipeline, build_pipeline,
                           digits_source)
from gan_core.images import box_downsample_uint8


def test_digits_are_the_real_sklearn_digits_upsampled():
  from sklearn.datasets import load_digits
  source = digits_source(32)
  assert len(source) == 1797 and source.num_classes == 10
  assert source.images.shape == (1797, 32, 32, 3) and source.images.dtype == np.uint8
  assert np.array_equal(source.labels, load_digits().target)
  # White strokes on black; value 16 maps to 255; channels are identical.
  assert source.images.max() == 255 and source.images.mean() < 100
  assert (source.images < 64).mean() > 0.5  # mostly dark background
  assert np.array_equal(source.images[..., 0], source.images[..., 2])
  # Block-averaging back to 8x8 recovers the original scan closely.
  original = load_digits().images[0] * 255 / 16
  small = source.images[0, ..., 0].reshape(8, 4, 8, 4).mean((1, 3))
  assert np.corrcoef(small.ravel(), original.ravel())[0, 1] > 0.9


def write_image(path, color, size=(20, 12)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new("RGB", size, color).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
  write_image(str(tmp_path / "cat" / "b.png"), (255, 0, 0))
  write_image(str(tmp_path / "cat" / "a.jpg"), (250, 0, 0))
  write_image(str(tmp_path / "dog" / "c.png"), (0, 0, 255), size=(9, 30))
  source = ImageFolderSource(str(tmp_path), 8)
  assert source.class_names == ["cat", "dog"] and source.num_classes == 2
  assert [os.path.basename(p) for p in source.paths] == ["a.jpg", "b.png", "c.png"]
  images, labels = source.get([2, 1])
  assert images.shape == (2, 8, 8, 3) and list(labels) == [1, 0]
  assert tuple(images[0, 4, 4]) == (0, 0, 255)


def test_image_folder_without_subfolders_is_unconditional(tmp_path):
  for i in range(3):
    write_image(str(tmp_path / f"{i}.png"), (i, i, i))
  source = ImageFolderSource(str(tmp_path), 4)
  assert source.num_classes == 0 and len(source) == 3


def test_image_folder_errors_name_the_problem(tmp_path):
  with pytest.raises(DataError, match="does not exist.*Expected"):
    ImageFolderSource(str(tmp_path / "missing"), 8)
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="no images found"):
    ImageFolderSource(str(tmp_path / "empty"), 8)
  bad = tmp_path / "bad"
  write_image(str(bad / "cls" / "ok.png"), (1, 2, 3))
  (bad / "cls" / "broken.png").write_bytes(b"not an image at all")
  source = ImageFolderSource(str(bad), 8)
  with pytest.raises(DataError, match="broken.png"):
    source.get([0, 1])


def test_build_pipeline_dispatch_and_unknown_tfds_name(tmp_path):
  assert build_pipeline("digits", 16, 0, False).num_classes == 10
  with pytest.raises(DataError, match="does not exist"):
    build_pipeline(str(tmp_path / "nope"), 16, 0, False)
  with pytest.raises(DataError, match="unknown tfds dataset") as error:
    build_pipeline("no_such_dataset_xyz", 16, 0, False)
  assert len(str(error.value)) < 600  # Not tfds's list of every dataset.
  # tfds names with a config contain a slash; they are not folder paths.
  with pytest.raises(DataError, match="manual download") as error:
    build_pipeline("celeb_a_hq/1024", 1024, 0, False, data_dir=str(tmp_path))
  assert "tfds build celeb_a_hq/1024" in str(error.value)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_indexed_pipeline_is_deterministic_and_resumes_at_exact_position():
  pipeline = IndexedPipeline(digits_source(16), seed=3, random_flip=True)
  shape = (2, 1, 50)  # 100 examples per batch: epochs of 1797 wrap mid-batch.
  full = take(pipeline.iterate(0, shape), 40)
  resumed = take(IndexedPipeline(digits_source(16), 3, True).iterate(25 * 100, shape), 15)
  for a, b in zip(full[25:], resumed):
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
  assert full[0]["images"].shape == (2, 1, 50, 16, 16, 3)
  # Each epoch is a permutation: the first 1700 examples hold no repeats.
  indices, _ = pipeline.global_indices(0, 1797)
  assert len(set(indices.tolist())) == 1797
  other = take(IndexedPipeline(digits_source(16), 4, True).iterate(0, shape), 1)
  assert not np.array_equal(other[0]["labels"], full[0]["labels"])


def test_random_flip_mirrors_some_images():
  source = digits_source(16)
  pipeline = IndexedPipeline(source, seed=0, random_flip=True)
  indices, flips = pipeline.global_indices(0, 200)
  assert 60 < flips.sum() < 140
  batch = next(pipeline.iterate(0, (1, 1, 200)))["images"][0, 0]
  np.testing.assert_array_equal(batch[flips], source.images[indices[flips]][:, :, ::-1])
  np.testing.assert_array_equal(batch[~flips], source.images[indices[~flips]])


def test_tfds_pipeline_with_mock_data_is_deterministic_and_resumable():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=40):
    pipeline = build_pipeline("cifar10", 16, seed=1, random_flip=True)
    assert pipeline.num_classes == 10
    full = take(pipeline.iterate(0, (2, 1, 8)), 4)
    again = take(pipeline.iterate(0, (2, 1, 8)), 4)
    resumed = take(pipeline.iterate(2 * 16, (2, 1, 8)), 2)
    quarter = take(pipeline.iterate(0, (2, 1, 8), downscale=4), 1)
  assert full[0]["images"].shape == (2, 1, 8, 16, 16, 3)
  assert full[0]["images"].dtype == np.uint8 and full[0]["labels"].dtype == np.int32
  for a, b in zip(full, again):
    np.testing.assert_array_equal(a["images"], b["images"])
  for a, b in zip(full[2:], resumed):
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
  # Progressive growing reads the same examples, box-downsampled (PGGAN's lower resolutions).
  np.testing.assert_array_equal(quarter[0]["images"], box_downsample_uint8(full[0]["images"], 4))
  assert quarter[0]["images"].shape == (2, 1, 8, 4, 4, 3)


def test_indexed_pipeline_downscale_matches_box_downsampling():
  shape = (1, 1, 8)
  full = next(IndexedPipeline(digits_source(16), 3, True).iterate(40, shape))
  half = next(IndexedPipeline(digits_source(16), 3, True).iterate(40, shape, downscale=2))
  np.testing.assert_array_equal(half["images"], box_downsample_uint8(full["images"], 2))
  np.testing.assert_array_equal(half["labels"], full["labels"])


def test_tfds_dataset_not_prepared_explains_how_to_get_it(tmp_path):
  with pytest.raises(DataError, match="tfds build mnist"):
    build_pipeline("mnist", 16, 0, False, data_dir=str(tmp_path))


def test_dataset_fraction_is_a_seeded_class_balanced_subset():
  from gan_core.data.sources import SubsetSource, digits_source, subset_indices
  source = digits_source(8)
  counts = np.bincount(source.labels, minlength=10)
  chosen = subset_indices(source, 0.1, seed=0)
  np.testing.assert_array_equal(np.bincount(source.labels[chosen], minlength=10),
                                np.round(0.1 * counts).astype(int))
  np.testing.assert_array_equal(chosen, subset_indices(source, 0.1, seed=0))
  assert not np.array_equal(chosen, subset_indices(source, 0.1, seed=1))
  subset = SubsetSource(source, chosen)
  image, label = subset.load(3)
  np.testing.assert_array_equal(image, source.images[chosen[3]])
  assert label == source.labels[chosen[3]] == subset.labels[3]
  # The training seed shuffles the subset; it does not choose it.
  pipeline = build_pipeline("digits", 8, seed=5, random_flip=False, fraction=0.1)
  assert pipeline.num_examples == len(chosen) == 179  # 17 or 18 of each class.
  seen = take(pipeline.iterate(0, (179,)), 1)[0]["images"]
  expected = {img.tobytes() for img in source.images[chosen]}
  assert {img.tobytes() for img in seen} == expected  # One epoch: exactly the subset.
  for bad in (0.0, 1.5):
    with pytest.raises(DataError, match="dataset_fraction"):
      subset_indices(source, bad, seed=0)
