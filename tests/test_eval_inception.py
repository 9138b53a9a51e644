"""The FID Inception port and the FID/IS/KID formulas against torch-fidelity.

torch-fidelity builds the same network in PyTorch from a state dict. With the
same random weights (written in the pytorch-fid `.pth` layout) and the same
uint8 images, pool features and logits must agree to 3e-4 relative L2 (real
porting bugs move them 5-44%). The torch comparisons are skipped without torch.
"""
import os
import sys
import unittest.mock

import numpy as np
import pytest

from gan_core.eval import fid, inception_score, kid, weights
from gan_core.eval.features import InceptionFeatures
from gan_core.eval.inception import OUTPUT_NAMES, tf1_resize_tables

# (count, height, width): smaller than, equal to and larger than 299; non-square.
IMAGE_SHAPES = [(3, 32, 32), (2, 299, 299), (3, 320, 250), (2, 17, 400)]
TORCH_NAMES = {"64": "64", "192": "192", "768": "768", "pool": "2048",
               "logits_unbiased": "logits_unbiased", "logits": "logits"}


@pytest.fixture(scope="module")
def torch_fidelity():
  """torch-fidelity's modules, imported without its package __init__ (which needs
  torchvision for dataset helpers that are not used here)."""
  pytest.importorskip("torch")
  pytest.importorskip("scipy")
  import importlib.util
  if importlib.util.find_spec("torch_fidelity") is None:
    pytest.skip("torch-fidelity is not installed")
  stubs = {}
  if importlib.util.find_spec("torchvision") is None:
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms",
                 "torchvision.transforms.functional", "torchvision.models"):
      stubs[name] = unittest.mock.MagicMock(name=name)
  with unittest.mock.patch.dict(sys.modules, stubs):
    from torch_fidelity import feature_extractor_inceptionv3, interpolate_compat_tensorflow
    from torch_fidelity import metric_fid, metric_isc, metric_kid
    yield {"inception": feature_extractor_inceptionv3, "resize": interpolate_compat_tensorflow,
           "fid": metric_fid, "isc": metric_isc, "kid": metric_kid}


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(7)
  return [rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8) for n, h, w in IMAGE_SHAPES]


@pytest.fixture(scope="module")
def variables(fid_weights_path):
  return weights.load_inception_params(fid_weights_path)


def test_network_has_the_published_layout():
  shapes = weights.expected_shapes()
  assert len(shapes) == 472  # 566 state-dict entries minus 94 num_batches_tracked
  assert sum(int(np.prod(s)) for s in shapes.values()) == 23_885_392
  assert shapes["Conv2d_1a_3x3/conv/kernel"] == (3, 3, 3, 32)
  assert shapes["Mixed_6b/branch7x7_2/conv/kernel"] == (1, 7, 128, 128)
  assert shapes["Mixed_7c/branch_pool/conv/kernel"] == (1, 1, 2048, 192)
  assert shapes["fc/kernel"] == (2048, 1008)


def test_resize_tables_follow_tf1_legacy_rule():
  lower, upper, frac = tf1_resize_tables(32, 299)
  scale = np.float32(32) / np.float32(299)
  assert lower[0] == 0 and frac[0] == 0
  np.testing.assert_array_equal(frac[10], np.float32(np.float32(10) * scale - lower[10]))
  assert upper.max() == 31 and lower.max() == 31  # clamped at the border, no half-pixel shift
  lower, upper, frac = tf1_resize_tables(299, 299)
  np.testing.assert_array_equal(lower, np.arange(299))
  assert not frac.any()


def test_resize_matches_torch_fidelity(torch_fidelity, images):
  import jax
  import torch
  from gan_core.eval.inception import resize_bilinear_tf1
  resize = jax.jit(resize_bilinear_tf1)
  for batch in images:
    ours = np.asarray(resize(batch.astype(np.float32)))
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    theirs = torch_fidelity["resize"].interpolate_bilinear_2d_like_tensorflow1x(
        x, size=(299, 299), align_corners=False).permute(0, 2, 3, 1).numpy()
    assert ours.shape == theirs.shape == (len(batch), 299, 299, 3)
    assert np.abs(ours - theirs).max() <= 1e-6 * 255, batch.shape


def test_features_match_torch_fidelity(torch_fidelity, images, variables, fid_weights_path):
  import torch
  reference = torch_fidelity["inception"].FeatureExtractorInceptionV3(
      "inception-v3-compat", [TORCH_NAMES[n] for n in OUTPUT_NAMES],
      feature_extractor_weights_path=fid_weights_path)
  extractor = InceptionFeatures(variables, batch_size=8, outputs=OUTPUT_NAMES, progress=False)
  for batch in images:
    ours = extractor(batch)
    with torch.no_grad():
      theirs = reference(torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous())
    for name, expected in zip(OUTPUT_NAMES, theirs):
      expected = expected.numpy()
      assert ours[name].shape == expected.shape
      error = np.linalg.norm(ours[name] - expected) / np.linalg.norm(expected)
      assert error < 3e-4, (batch.shape, name, error)


def test_mixed_sizes_keep_order_and_match_batched(images, variables):
  extractor = InceptionFeatures(variables, batch_size=8, outputs=("pool",), progress=False)
  singles = [image for batch in images[:2] for image in batch]
  mixed = extractor(iter(singles), total=len(singles))["pool"]
  batched = np.concatenate([extractor(batch)["pool"] for batch in images[:2]])
  assert mixed.shape == (len(singles), 2048)
  np.testing.assert_allclose(mixed, batched, rtol=1e-5, atol=1e-5)


def test_rejects_non_uint8_images(variables):
  extractor = InceptionFeatures(variables, batch_size=8, progress=False)
  with pytest.raises(ValueError, match="uint8"):
    extractor(np.zeros((2, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
    extractor(np.zeros((2, 32, 32), np.uint8))


def _features(rng, n, dim, shift=0.0):
  return rng.normal(shift, 1.0, (n, dim)) + rng.normal(0, 0.3, (1, dim))


def test_fid_is_kid_match_torch_fidelity(torch_fidelity):
  import torch
  rng = np.random.default_rng(3)
  a, b = _features(rng, 300, 64), _features(rng, 250, 64, shift=0.2)
  ta, tb = torch.from_numpy(a), torch.from_numpy(b)
  tf_fid = torch_fidelity["fid"]
  expected = tf_fid.fid_statistics_to_metric(tf_fid.fid_features_to_statistics(ta),
                                             tf_fid.fid_features_to_statistics(tb),
                                             verbose=False)["frechet_inception_distance"]
  ours = fid.fid_from_features(a, b)
  assert abs(ours - expected) <= 1e-6 * abs(expected)

  logits = rng.normal(0, 3, (105, 1008))
  expected = torch_fidelity["isc"].isc_features_to_metric(torch.from_numpy(logits), splits=10,
                                                          shuffle=False)
  mean, std = inception_score.inception_score(logits)
  assert abs(mean - expected["inception_score_mean"]) <= 1e-6 * expected["inception_score_mean"]
  assert abs(std - expected["inception_score_std"]) <= 1e-6 * expected["inception_score_std"]

  expected = torch_fidelity["kid"].kid_features_to_metric(
      ta, tb, kid_subsets=20, kid_subset_size=100, verbose=False, rng_seed=2020,
      kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
      kid_kernel_poly_coef0=1)
  mean, std = kid.kernel_inception_distance(a, b, num_subsets=20, subset_size=100, seed=2020)
  assert abs(mean - expected["kernel_inception_distance_mean"]) <= 1e-6 * abs(mean)
  assert abs(std - expected["kernel_inception_distance_std"]) <= 1e-6 * abs(std)


def test_fid_properties_and_hand_computed_case():
  rng = np.random.default_rng(0)
  a = _features(rng, 200, 16)
  assert abs(fid.fid_from_features(a, a)) < 1e-8
  # Diagonal Gaussians: FID = |mu1-mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2)).
  mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, -1.0])
  s1, s2 = np.diag([4.0, 1.0]), np.diag([1.0, 9.0])
  expected = 9 + 4 + (4 + 1 - 2 * 2) + (1 + 9 - 2 * 3)
  assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_inception_score_of_extremes():
  # One-hot and all-different predictions: IS = number of classes per split.
  logits = np.full((100, 1008), -40.0)
  logits[np.arange(100), np.arange(100) % 10] = 0
  mean, std = inception_score.inception_score(logits)
  assert mean == pytest.approx(10, rel=1e-9) and std == pytest.approx(0, abs=1e-9)
  # Identical predictions: IS = 1.
  mean, _ = inception_score.inception_score(np.zeros((50, 1008)))
  assert mean == pytest.approx(1.0)


def test_kid_properties():
  rng = np.random.default_rng(1)
  a, b = _features(rng, 120, 32), _features(rng, 120, 32, shift=1.0)
  same, _ = kid.kernel_inception_distance(a, a.copy(), num_subsets=5, subset_size=50, seed=0)
  far, _ = kid.kernel_inception_distance(a, b, num_subsets=5, subset_size=50, seed=0)
  assert abs(same) < 0.05 * far and far > 0
  assert kid.kernel_inception_distance(a, b, num_subsets=5, subset_size=50, seed=0)[0] == far
  with pytest.raises(ValueError, match="kid_subset_size"):
    kid.kernel_inception_distance(a, b, subset_size=500)


def test_statistics_file_round_trip_and_errors(tmp_path):
  mu, sigma = np.arange(3.0), np.eye(3)
  path = str(tmp_path / "stats.npz")
  fid.save_statistics(path, mu, sigma)
  got_mu, got_sigma = fid.load_statistics(path)
  np.testing.assert_array_equal(got_mu, mu)
  np.testing.assert_array_equal(got_sigma, sigma)
  np.savez(tmp_path / "bad.npz", m=mu)
  with pytest.raises(fid.StatisticsFileError, match="'mu' and 'sigma'"):
    fid.load_statistics(str(tmp_path / "bad.npz"))
  with pytest.raises(fid.StatisticsFileError, match="does not exist"):
    fid.load_statistics(str(tmp_path / "missing.npz"))


# ----------------------------------------------------------------------------- weight files


def test_converted_weights_are_cached(fid_weights_path, variables):
  digest = weights.sha256_of_file(fid_weights_path)
  cached = os.path.join(weights.cache_dir(), "converted", f"inception-{digest}.npz")
  assert os.path.isfile(cached)
  again = weights.load_inception_params(fid_weights_path)
  kernel = again["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
  np.testing.assert_array_equal(
      kernel, variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"])


def test_wrong_layout_is_refused(tmp_path):
  from gan_core.eval.torch_pickle import save_state_dict
  path = tmp_path / "other.pth"
  save_state_dict(path, {"conv1.weight": np.zeros((8, 3, 3, 3), np.float32)})
  with pytest.raises(weights.InceptionWeightsError, match="not the FID Inception"):
    weights.load_inception_params(str(path))


def test_missing_weights_say_what_to_do(tmp_path):
  with pytest.raises(weights.InceptionWeightsUnavailable, match="inception_weights"):
    weights.find_weights(None)
  with pytest.raises(weights.InceptionWeightsUnavailable, match="does not exist"):
    weights.find_weights(str(tmp_path / "nope.pth"))


def test_download_checks_the_hash(tmp_path, fid_weights_path):
  url = "file://" + os.path.abspath(fid_weights_path)
  target = tmp_path / "cache"
  digest = weights.sha256_of_file(fid_weights_path)
  with pytest.raises(weights.InceptionWeightsError, match="SHA-256"):
    weights.download_weights(str(target), url=url, sha256_prefix="00000000", progress=False)
  assert os.listdir(target) == []  # nothing half-written is left behind
  path = weights.download_weights(str(target), url=url, sha256_prefix=digest[:8],
                                  progress=False)
  assert weights.sha256_of_file(path) == digest
  with pytest.raises(weights.InceptionWeightsUnavailable, match="Could not download"):
    weights.download_weights(str(target), url="file:///nonexistent/x.pth", progress=False)
