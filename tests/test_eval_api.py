"""`gan_core.eval.compute`, the Python API: the same numbers from folders, arrays, .npz files,
FID statistics and generate functions; clear errors for what cannot be computed."""
import numpy as np
import pytest
from PIL import Image

from gan_core.eval import compute
from gan_core.eval.registry import MetricError


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
  root = tmp_path_factory.mktemp("api")
  rng = np.random.default_rng(5)
  fake = np.stack([np.clip(rng.normal(30 + 12 * i, 8 + 4 * i, (32, 32, 3)), 0, 255)
                   for i in range(12)]).astype(np.uint8)
  real = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
  folder = root / "fake"
  folder.mkdir()
  for i, image in enumerate(fake):
    Image.fromarray(image).save(folder / f"{i:02d}.png")
  np.savez(root / "real.npz", images=real)
  return {"root": root, "fake": fake, "real": real, "folder": folder}


def test_inputs_of_every_kind_give_the_same_numbers(sets, fid_weights_path, tmp_path):
  common = dict(inception_weights=fid_weights_path, batch_size=8, kid_subset_size=6,
                kid_subsets=5)
  from_arrays = compute("fid,is,kid,swd,ms_ssim", fake=sets["fake"], real=sets["real"],
                        save_stats=str(tmp_path / "fake_stats.npz"), **common)
  from_files = compute("fid,is,kid,swd,ms_ssim", fake=sets["folder"],
                       real=sets["root"] / "real.npz", **common)
  assert from_files == pytest.approx(from_arrays, rel=1e-6)
  assert list(from_arrays) == ["fid", "is_mean", "is_std", "kid_mean", "kid_std", "swd_32",
                               "swd_16", "swd_avg", "ms_ssim"]
  assert from_arrays["fid"] > 0 and from_arrays["swd_avg"] > 0
  # FID from statistics files (no Inception run) equals FID from the images they came from.
  real_stats = compute("", fake=sets["real"], save_stats=str(tmp_path / "real_stats.npz"),
                       **common)
  assert real_stats == {}
  assert compute("fid", fake=str(tmp_path / "fake_stats.npz"),
                 stats=str(tmp_path / "real_stats.npz"))["fid"] == pytest.approx(
                     from_arrays["fid"], rel=1e-6)
  # A generate function drawn in uneven batches until num_samples, cut to num_samples,
  # against statistics given as arrays.
  with np.load(tmp_path / "real_stats.npz") as data:
    mu, sigma = data["mu"], data["sigma"]
  batches = iter([sets["fake"][:5], sets["fake"][5:10], sets["fake"][10:], sets["real"]])
  generated = compute("fid,is", fake=lambda key: next(batches), num_samples=12,
                      stats=(mu, sigma), **common)
  assert generated == pytest.approx({k: from_arrays[k] for k in generated}, rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(metrics="fid,lpips"), "Unknown metrics ['lpips']"),
    (dict(metrics="fid"), "give a second input B"),
    (dict(metrics="kid", stats=(np.zeros(4), np.eye(4))), "KID need the real images"),
    (dict(metrics="is", fake=lambda key: None), "needs num_samples"),
    (dict(metrics="swd", fake=np.zeros((4, 32, 32, 3), np.float32), real=np.zeros(
        (4, 32, 32, 3), np.uint8)), "uint8"),
])
def test_what_cannot_be_computed_is_a_clear_error(sets, kwargs, message):
  kwargs = {"fake": sets["fake"], **kwargs}
  with pytest.raises(MetricError) as error:
    compute(kwargs.pop("metrics"), **kwargs)
  assert message in str(error.value)
