"""Tests of the PGGAN evaluation metrics: sliced Wasserstein distance and MS-SSIM."""
import numpy as np
import pytest
import scipy.ndimage

from gan_core.eval import ms_ssim as msssim_lib
from gan_core.eval import swd as swd_lib

C1 = (0.01 * 255) ** 2


def _noise(seed, n, size, channels=3):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def _smooth(images, passes=2):
  """Box-blurs uint8 NHWC images horizontally and vertically (wrap-around), as float."""
  x = images.astype(np.float64)
  for _ in range(passes):
    x = (x + np.roll(x, 1, 1) + np.roll(x, -1, 1)) / 3
    x = (x + np.roll(x, 1, 2) + np.roll(x, -1, 2)) / 3
  return x


# ------------------------------------------------------------------------ Laplacian pyramid


def test_pyr_down_of_interior_impulse_is_the_binomial_kernel():
  image = np.zeros((1, 16, 16, 1), np.float32)
  image[0, 4, 4, 0] = 1.0
  down = swd_lib.laplacian_pyramid(image, 2)[1][0, :, :, 0]
  # The full-resolution blur is outer([1,4,6,4,1])/256 centred on (4, 4); keeping the even
  # rows and columns leaves offsets -2, 0, +2, i.e. weights 1, 6, 1, centred on (2, 2).
  expected = np.zeros((8, 8))
  expected[1:4, 1:4] = np.array([[1, 6, 1], [6, 36, 6], [1, 6, 1]]) / 256.0
  np.testing.assert_allclose(down, expected, atol=1e-7)


def test_pyr_down_mirror_boundary_by_hand():
  # An impulse at (1, 1) of an 8x8 image. With mirror padding (c b | a b c), output
  # row 0 sees pixel row 1 twice, as offsets -1 and +1: weight (4 + 4) / 16; output row
  # 1 (full-res row 2) sees it once, as offset -1: weight 4 / 16. Same for columns.
  image = np.zeros((1, 8, 8, 1), np.float32)
  image[0, 1, 1, 0] = 1.0
  down = swd_lib.pyr_down(image)[0, :, :, 0]
  expected = np.zeros((4, 4))
  expected[:2, :2] = np.array([[8 * 8, 8 * 4], [4 * 8, 4 * 4]]) / 256.0
  np.testing.assert_allclose(down, expected, atol=1e-7)
  # And a corner impulse: only the centre tap reaches it, (6 / 16) ** 2.
  image = np.zeros((1, 8, 8, 1), np.float32)
  image[0, 0, 0, 0] = 1.0
  down = swd_lib.pyr_down(image)[0, :, :, 0]
  assert down[0, 0] == pytest.approx(36 / 256)
  assert down[0, 1] == pytest.approx(6 / 256)  # Full-res column 2: offset -2, weight 1/16.


def test_pyr_up_of_constant_is_constant():
  up = swd_lib.pyr_up(np.full((2, 4, 4, 3), 7.0, np.float32))
  assert up.shape == (2, 8, 8, 3)
  np.testing.assert_allclose(up, 7.0, atol=1e-5)


def test_laplacian_pyramid_reconstructs_the_image():
  images = _noise(0, 2, 32).astype(np.float32)
  pyramid = swd_lib.laplacian_pyramid(images, 3)
  assert [p.shape for p in pyramid] == [(2, 32, 32, 3), (2, 16, 16, 3), (2, 8, 8, 3)]
  assert all(p.dtype == np.float32 for p in pyramid)
  recon = pyramid[-1]
  for band in reversed(pyramid[:-1]):
    recon = band + swd_lib.pyr_up(recon)
  np.testing.assert_allclose(recon, images, atol=1e-3)
  # The input is not modified.
  np.testing.assert_array_equal(images, _noise(0, 2, 32).astype(np.float32))


def test_laplacian_pyramid_of_constant_image():
  pyramid = swd_lib.laplacian_pyramid(np.full((1, 32, 32, 3), 100.0, np.float32), 3)
  for band in pyramid[:-1]:
    np.testing.assert_allclose(band, 0.0, atol=1e-4)
  np.testing.assert_allclose(pyramid[-1], 100.0, atol=1e-4)


def test_laplacian_pyramid_channels_are_independent():
  images = _noise(1, 1, 16).astype(np.float32)
  one_channel = swd_lib.laplacian_pyramid(images[..., 1:2], 2)
  for full, single in zip(swd_lib.laplacian_pyramid(images, 2), one_channel):
    np.testing.assert_allclose(full[..., 1:2], single, atol=1e-4)


# ------------------------------------------------------------------------ SWD


def test_swd_levels():
  assert swd_lib.swd_levels(16) == [16]
  assert swd_lib.swd_levels(64) == [64, 32, 16]
  assert swd_lib.swd_levels(1024) == [1024, 512, 256, 128, 64, 32, 16]
  for bad in (8, 48, 0):
    with pytest.raises(ValueError, match="power of two"):
      swd_lib.swd_levels(bad)


def test_projected_wasserstein_by_hand():
  a = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], np.float32)
  b = np.array([[10.0, 0.0], [0.0, 5.0], [0.0, 0.0], [0.0, 1.0]], np.float32)
  # Along x: sorted a = 0 1 2 3, sorted b = 0 0 0 10 -> |0|+|1|+|2|+|7| = 10.
  # Along y: a = 0 0 0 0, sorted b = 0 0 1 5 -> 6.
  # Along -x: sorted a = -3 -2 -1 0, sorted b = -10 0 0 0 -> 7+2+1+0 = 10.
  directions = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]], np.float32)
  assert swd_lib.projected_wasserstein(a, b, directions) == pytest.approx(26 / 12)
  assert swd_lib.projected_wasserstein(a, a, directions) == 0.0
  # A pure translation by t along a unit direction costs exactly |t| along it.
  shifted = a + np.array([0.0, 2.5], np.float32)
  assert swd_lib.projected_wasserstein(a, shifted, directions[:, 1:2]) == pytest.approx(2.5)
  with pytest.raises(ValueError, match="equal shape"):
    swd_lib.projected_wasserstein(a, b[:3], directions)


def test_normalize_descriptors_per_channel():
  rng = np.random.default_rng(0)
  desc = rng.normal([[5.0] * 4 + [-3.0] * 4 + [0.0] * 4], [[2.0] * 4 + [0.5] * 4 + [9.0] * 4],
                    size=(1000, 12)).astype(np.float32)
  out = swd_lib.normalize_descriptors(desc, channels=3)
  assert out is desc  # In place: the full-size sets are large.
  grouped = out.reshape(1000, 3, 4).astype(np.float64)
  np.testing.assert_allclose(grouped.mean((0, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(grouped.std((0, 2)), 1.0, atol=1e-5)
  # Statistics are per channel, not per component: a component can keep a nonzero mean.
  constant = np.ones((10, 6), np.float32)
  np.testing.assert_array_equal(swd_lib.normalize_descriptors(constant), 0.0)


def test_descriptor_component_order():
  # Patch from a single image whose pixel values encode (y, x, c).
  y, x, c = np.meshgrid(np.arange(16), np.arange(16), np.arange(3), indexing="ij")
  level = (100 * y + 10 * x + c).astype(np.float32)[None]
  desc = swd_lib.extract_descriptors(level, np.array([5]), np.array([8]), nhoods_per_image=1)
  assert desc.shape == (1, 147)
  patch = desc.reshape(3, 7, 7)  # (channel, dx, dy): the official code's np.ogrid order.
  assert patch[0, 3, 3] == 100 * 8 + 10 * 5
  assert patch[2, 0, 6] == 100 * (8 + 3) + 10 * (5 - 3) + 2
  assert patch[1, 6, 0] == 100 * (8 - 3) + 10 * (5 + 3) + 1


def test_swd_identical_sets_give_zero():
  for size, names in ((16, ["swd_16"]), (64, ["swd_64", "swd_32", "swd_16"])):
    images = _noise(size, 3, size)
    result = swd_lib.sliced_wasserstein_distance(images, images.copy(), seed=3)
    assert list(result) == names + ["swd_avg"]
    assert all(value == 0.0 for value in result.values())


def test_swd_deterministic_and_independent_of_chunking():
  real, fake = _noise(0, 6, 32), _noise(1, 6, 32)
  first = swd_lib.sliced_wasserstein_distance(real, fake, seed=7)
  assert first == swd_lib.sliced_wasserstein_distance(real, fake, seed=7)
  chunked = swd_lib.sliced_wasserstein_distance(real, fake, seed=7, chunk_size=4)
  assert chunked == pytest.approx(first, rel=1e-6)
  other_seed = swd_lib.sliced_wasserstein_distance(real, fake, seed=8)
  assert other_seed["swd_avg"] != first["swd_avg"]
  assert first["swd_avg"] == pytest.approx(np.mean([first["swd_32"], first["swd_16"]]))
  assert all(value > 0 for value in first.values())


def _reference_swd(real, fake, seed, nhood=7, per_image=128, repeats=4, dirs_per_repeat=128):
  """The official metric's steps on NCHW arrays, drawing randomness in swd.py's documented order.

  Written loop by loop: 2-D blurs over (1, 1, 5, 5) kernels, each patch sliced out of its image
  and put in (channel, x, y) order, float64 normalisation, column sorts.
  """
  real = real.transpose(0, 3, 1, 2).astype(np.float32)
  fake = fake.transpose(0, 3, 1, 2).astype(np.float32)
  n, size = real.shape[0], real.shape[2]
  resolutions = [r for r in (size >> k for k in range(10)) if r >= 16]
  rng = np.random.default_rng(seed)
  h = nhood // 2
  positions = []
  for r in resolutions:
    xs = rng.integers(h, r - h, size=n * per_image)
    ys = rng.integers(h, r - h, size=n * per_image)
    positions.append((xs, ys))
  kernel = (np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0)[None, None]

  def pyramid(x):
    levels = [x]
    for _ in resolutions[1:]:
      down = scipy.ndimage.convolve(levels[-1], kernel, mode="mirror")[:, :, ::2, ::2]
      up = np.zeros_like(levels[-1])
      up[:, :, ::2, ::2] = down
      levels[-1] = levels[-1] - scipy.ndimage.convolve(up, 4 * kernel, mode="mirror")
      levels.append(down)
    return levels

  def descriptors(x):
    sets = []
    for level, (xs, ys) in zip(pyramid(x), positions):
      patches = np.stack([
          level[k // per_image, :, ys[k] - h:ys[k] + h + 1, xs[k] - h:xs[k] + h + 1]
          .transpose(0, 2, 1) for k in range(len(xs))]).astype(np.float64)
      patches -= patches.mean(axis=(0, 2, 3), keepdims=True)
      patches /= patches.std(axis=(0, 2, 3), keepdims=True)
      sets.append(patches.reshape(len(xs), -1).astype(np.float32))
    return sets

  result = {}
  for r, a, b in zip(resolutions, descriptors(real), descriptors(fake)):
    dists = []
    for _ in range(repeats):
      dirs = rng.standard_normal((a.shape[1], dirs_per_repeat))
      dirs = (dirs / np.linalg.norm(dirs, axis=0, keepdims=True)).astype(np.float32)
      dists.append(np.mean(np.abs(np.sort(a @ dirs, axis=0) - np.sort(b @ dirs, axis=0))))
    result[f"swd_{r}"] = float(np.mean(dists)) * 1e3
  result["swd_avg"] = float(np.mean(list(result.values())))
  return result


def test_swd_matches_nchw_reference():
  real = _noise(10, 3, 32)
  fake = np.clip(_smooth(_noise(11, 3, 32), passes=1) * 1.5 - 60, 0, 255).astype(np.uint8)
  ours = swd_lib.sliced_wasserstein_distance(real, fake, seed=5, chunk_size=2)
  reference = _reference_swd(real, fake, seed=5)
  assert list(ours) == list(reference)
  for key in ours:
    assert ours[key] == pytest.approx(reference[key], rel=1e-4), key


def test_swd_grows_with_the_distribution_shift():
  # Per-set normalisation cancels global brightness and contrast changes, so the shift is
  # in local structure: the fakes blend the real images with a blurred copy, by weight t.
  # (Same images, so the shared neighbourhood positions leave no sampling noise at t = 0.)
  real = _noise(20, 8, 32)
  blurred = _smooth(real)

  def distance(t):
    fake = np.clip((1 - t) * real + t * blurred, 0, 255).astype(np.uint8)
    return swd_lib.sliced_wasserstein_distance(real, fake, seed=0)

  small, medium, large = distance(0.1), distance(0.4), distance(0.8)
  assert distance(0.0)["swd_avg"] == 0.0
  for key in small:
    assert 0 < small[key] < medium[key] < large[key], key
  assert large["swd_avg"] > 2 * small["swd_avg"]


@pytest.mark.parametrize("real, fake, message", [
    (_noise(0, 2, 32).astype(np.float32), _noise(0, 2, 32), "uint8"),
    (_noise(0, 2, 32)[0], _noise(0, 2, 32)[0], "4-D"),
    (_noise(0, 2, 32, channels=1), _noise(0, 2, 32, channels=1), "3 channels"),
    (_noise(0, 2, 32)[:, :16], _noise(0, 2, 32)[:, :16], "square"),
    (_noise(0, 2, 48), _noise(0, 2, 48), "power of two"),
    (_noise(0, 2, 8), _noise(0, 2, 8), "power of two >= 16"),
    (_noise(0, 2, 32), _noise(0, 3, 32), "same shape"),
    (_noise(0, 2, 32), _noise(0, 2, 16), "same shape"),
])
def test_swd_rejects_bad_inputs(real, fake, message):
  with pytest.raises(ValueError, match=message):
    swd_lib.sliced_wasserstein_distance(real, fake)


def test_swd_rejects_bad_settings():
  images = _noise(0, 2, 16)
  with pytest.raises(ValueError, match="odd"):
    swd_lib.sliced_wasserstein_distance(images, images, nhood_size=6)
  with pytest.raises(ValueError, match="chunk_size"):
    swd_lib.sliced_wasserstein_distance(images, images, chunk_size=0)


# ------------------------------------------------------------------------ MS-SSIM


def test_gaussian_window():
  for size, sigma in ((11, 1.5), (5, 1.5 * 5 / 11), (4, 1.5 * 4 / 11), (1, 1.5 / 11)):
    window = msssim_lib.gaussian_window(size, sigma)
    assert window.shape == (size, size)
    assert window.sum() == pytest.approx(1.0)
    # Odd sizes: integer offsets -r..r; even sizes: half-integer offsets, centred.
    coords = np.arange(size) - (size - 1) / 2
    expected = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(window, expected / expected.sum(), rtol=1e-12)
  assert msssim_lib.gaussian_window(11, 1.5)[5, 5] == msssim_lib.gaussian_window(11, 1.5).max()


def test_ssim_of_constant_images_by_hand():
  for a, b in ((10.0, 200.0), (128.0, 128.0), (0.0, 255.0)):
    ssim, cs = msssim_lib.ssim_and_cs(np.full((1, 8, 8, 3), a), np.full((1, 8, 8, 3), b))
    # No variance: the structure term is c2 / c2 = 1 and SSIM is the luminance term.
    assert cs[0] == pytest.approx(1.0, abs=1e-9)
    assert ssim[0] == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), rel=1e-9)


def test_ssim_when_window_covers_the_image_by_hand():
  # An 11x11 image with an 11x11 window has one valid position: the moments are plain
  # Gaussian-weighted sums over the image.
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 255, (2, 11, 11, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 40, x.shape), 0, 255).astype(np.float32)
  ssim, cs = msssim_lib.ssim_and_cs(x, y)
  c2 = (0.03 * 255) ** 2
  w = msssim_lib.gaussian_window(11, 1.5)
  for i in range(2):
    ssim_c, cs_c = [], []
    for ch in range(3):
      xi, yi = x[i, :, :, ch].astype(np.float64), y[i, :, :, ch].astype(np.float64)
      mx, my = (w * xi).sum(), (w * yi).sum()
      vx, vy = (w * xi * xi).sum() - mx**2, (w * yi * yi).sum() - my**2
      cxy = (w * xi * yi).sum() - mx * my
      cs_c.append((2 * cxy + c2) / (vx + vy + c2))
      ssim_c.append((2 * mx * my + C1) / (mx**2 + my**2 + C1) * cs_c[-1])
    assert ssim[i] == pytest.approx(np.mean(ssim_c), rel=1e-6)
    assert cs[i] == pytest.approx(np.mean(cs_c), rel=1e-6)


def test_ms_ssim_of_constant_images_by_hand():
  # Every scale of a constant pair has cs = 1 and the same SSIM, so only the last weight counts.
  a, b = 60.0, 90.0
  value = msssim_lib.ms_ssim_pairs(np.full((1, 16, 16, 3), a), np.full((1, 16, 16, 3), b))
  expected = ((2 * a * b + C1) / (a * a + b * b + C1)) ** np.float32(0.1333)
  assert value[0] == pytest.approx(expected, rel=1e-6)


def _correlated_images(seed, n=4, size=32):
  """Smooth shared structure plus per-image noise: pairs are similar but not identical."""
  rng = np.random.default_rng(seed)
  base = _smooth(_noise(seed, 1, size), passes=3)
  base = (base - base.min()) / (base.max() - base.min()) * 200 + 20
  return np.clip(base + rng.normal(0, 25, (n, size, size, 3)), 0, 255).astype(np.uint8)


def test_ms_ssim_identical_pairs_are_one():
  images = _correlated_images(0)
  np.testing.assert_allclose(msssim_lib.ms_ssim_pairs(images, images), 1.0, atol=1e-6)
  noise = _noise(1, 2, 16)
  np.testing.assert_allclose(msssim_lib.ms_ssim_pairs(noise, noise), 1.0, atol=1e-6)


def test_ms_ssim_of_different_images_is_between_zero_and_one_and_symmetric():
  images = _correlated_images(2)
  forward = msssim_lib.ms_ssim_pairs(images[0::2], images[1::2])
  backward = msssim_lib.ms_ssim_pairs(images[1::2], images[0::2])
  assert forward.shape == (2,)
  assert np.all((forward > 0) & (forward < 1))
  np.testing.assert_allclose(forward, backward, rtol=1e-12)
  assert 0 < msssim_lib.ms_ssim(images) < 1


def test_ms_ssim_pairs_consecutive_images():
  a, b = _correlated_images(3, n=2)
  # Pairs (0, 1) and (2, 3) are identical images; (1, 2) would not be.
  images = np.stack([a, a, b, b])
  assert msssim_lib.ms_ssim(images) == pytest.approx(1.0, abs=1e-6)
  assert msssim_lib.ms_ssim(images, chunk_size=1) == pytest.approx(1.0, abs=1e-6)
  mixed = np.stack([a, b, a, b])
  expected = msssim_lib.ms_ssim_pairs(a[None], b[None])[0]
  assert msssim_lib.ms_ssim(mixed, chunk_size=1) == pytest.approx(expected, rel=1e-12)
  assert expected < 0.99


@pytest.mark.parametrize("images, message", [
    (_noise(0, 4, 32).astype(np.float32), "uint8"),
    (_noise(0, 4, 32)[0], "4-D"),
    (_noise(0, 4, 32, channels=1), "3 channels"),
    (_noise(0, 4, 8), "multiples of 16"),
    (_noise(0, 4, 24), "multiples of 16"),
    (_noise(0, 3, 32), "even number"),
    (_noise(0, 0, 32), "even number"),
])
def test_ms_ssim_rejects_bad_inputs(images, message):
  with pytest.raises(ValueError, match=message):
    msssim_lib.ms_ssim(images)


def test_ms_ssim_pairs_rejects_bad_inputs():
  with pytest.raises(ValueError, match="differ in shape"):
    msssim_lib.ms_ssim_pairs(_noise(0, 2, 32), _noise(0, 3, 32))
  with pytest.raises(ValueError, match="divisible by 16"):
    msssim_lib.ms_ssim_pairs(_noise(0, 2, 24), _noise(0, 2, 24))
  with pytest.raises(ValueError, match="4-D"):
    msssim_lib.ms_ssim_pairs(np.zeros((16, 16)), np.zeros((16, 16)))
