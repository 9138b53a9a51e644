"""`python -m gan_core.metrics`: the command line against in-process reference values.

The CLI runs in subprocesses with the YNNPACK XLA:CPU flag it sets for itself;
the references here are computed in-process without it. Features must agree to
float32 rounding (1e-4 relative L2) and the metrics computed from them to 1e-3
(FID, KID, IS std: tiny sets amplify the rounding) or 1e-4 (IS mean). Each subprocess that
runs the Inception costs seconds (JAX start, one compile per image size), so
there are three of them, on 12-image sets; the error cases fail before any image
goes through the Inception.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

KID_FLAGS = ("--kid_subset_size=6", "--kid_subsets=5")
FAST_FLAGS = ("--batch_size=8", "--progress=false")


def run_metrics(*args, env=None, timeout=300):
  """Runs the CLI; returns (exit code, {name: value} from stdout, stderr)."""
  full_env = dict(os.environ, **(env or {}))
  result = subprocess.run([sys.executable, "-m", "gan_core.metrics", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=full_env)
  values = {}
  for line in result.stdout.splitlines():
    name, sep, value = line.partition(": ")
    assert sep and name and " " not in name, f"unexpected stdout line {line!r}"
    values[name] = float(value)
  return result.returncode, values, result.stderr


def rel_l2(actual, expected):
  return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def assert_rel(actual, expected, rtol, name):
  assert abs(actual - expected) <= rtol * abs(expected), (name, actual, expected)


# ---------------------------------------------------------------------------------------------
# Inputs: a folder of PNGs (mixed sizes, one grayscale, an upper-case extension, a stray text
# file) and an .npz of uint8 images.


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("metrics_cli")
  rng = np.random.default_rng(11)
  folder = root / "a"
  folder.mkdir()
  written = {}  # file name -> the uint8 (H, W, 3) image the CLI should read
  for i in range(12):
    shape = {10: (40, 48), 11: (24, 20)}.get(i, (32, 32))
    # Per-image brightness and contrast, so that the images (and their features) differ.
    image = np.clip(rng.normal(40 + 15 * i, 10 + 5 * i, shape + (3,)), 0, 255).astype(np.uint8)
    name = f"{i}.PNG" if i == 7 else f"{i}.png"
    if i == 3:  # grayscale file: read as RGB with three equal channels
      Image.fromarray(image[..., 0]).save(folder / name)
      image = np.repeat(image[..., :1], 3, axis=-1)
    else:
      Image.fromarray(image).save(folder / name)
    written[name] = image
  (folder / "notes.txt").write_text("not an image")
  names = sorted(written)
  # The CLI reads in sorted file-name order, which is not the numeric order here: a reader
  # that kept numeric (or directory) order would give other feature rows.
  assert names[:4] == ["0.png", "1.png", "10.png", "11.png"]
  b = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
  b_path = root / "b.npz"
  np.savez(b_path, images=b)
  return {"root": root, "a_dir": folder, "a_images": [written[n] for n in names],
          "b_path": b_path, "b_images": b}


@pytest.fixture(scope="module")
def reference(inputs, fid_weights_path):
  """In-process features (default XLA flags) and metrics of the same images."""
  from gan_core.eval import fid, inception_score, kid
  from gan_core.eval.features import InceptionFeatures
  from gan_core.eval.weights import load_inception_params
  extractor = InceptionFeatures(load_inception_params(fid_weights_path), batch_size=8,
                                outputs=("pool", "logits_unbiased"), progress=False)
  features_a = extractor(iter(inputs["a_images"]), total=len(inputs["a_images"]))
  features_b = extractor(inputs["b_images"])
  is_mean, is_std = inception_score.inception_score(features_a["logits_unbiased"])
  kid_mean, kid_std = kid.kernel_inception_distance(features_a["pool"], features_b["pool"],
                                                    num_subsets=5, subset_size=6, seed=2020)
  metrics = {"fid": fid.fid_from_features(features_a["pool"], features_b["pool"]),
             "is_mean": is_mean, "is_std": is_std, "kid_mean": kid_mean, "kid_std": kid_std}
  return {"a": features_a, "b": features_b, "metrics": metrics}


@pytest.fixture(scope="module")
def main_run(inputs, fid_weights_path):
  """Folder A against .npz B with the default metrics, dumping A's features and statistics."""
  root = inputs["root"]
  code, values, err = run_metrics(
      inputs["a_dir"], inputs["b_path"], f"--inception_weights={fid_weights_path}",
      *KID_FLAGS, *FAST_FLAGS, f"--dump_features={root / 'features_a.npz'}",
      f"--save_stats={root / 'stats_a.npz'}")
  assert code == 0, err[-3000:]
  return values


def check_features(path, expected, count):
  with np.load(path) as data:
    assert sorted(data.files) == ["logits_unbiased", "pool"]
    dumped = {name: data[name] for name in data.files}
  for name, dim in (("pool", 2048), ("logits_unbiased", 1008)):
    assert dumped[name].dtype == np.float32 and dumped[name].shape == (count, dim), name
    assert rel_l2(dumped[name], expected[name]) < 1e-4, name
    # Row by row too: every image is in its place (rows of different images differ by ~2%+).
    for row, (ours, theirs) in enumerate(zip(dumped[name], expected[name])):
      assert rel_l2(ours, theirs) < 1e-4, (name, row)
  return dumped


def test_folder_against_npz_matches_in_process_metrics(inputs, main_run, reference):
  assert list(main_run) == ["fid", "is_mean", "is_std", "kid_mean", "kid_std"]
  expected = reference["metrics"]
  for name in ("fid", "kid_mean", "kid_std"):
    assert_rel(main_run[name], expected[name], 1e-3, name)
  assert_rel(main_run["is_mean"], expected["is_mean"], 1e-4, "is_mean")
  # With random weights the 10 split scores are all ~1.001, so their std (~3e-3) amplifies
  # the rounding (measured 3e-5 relative).
  assert_rel(main_run["is_std"], expected["is_std"], 1e-3, "is_std")
  assert main_run["fid"] > 1.0 and expected["is_std"] > 0  # not degenerate


def test_dumped_features_follow_sorted_file_names(inputs, main_run, reference):
  check_features(inputs["root"] / "features_a.npz", reference["a"], 12)


def test_statistics_round_trip_and_metrics_free_run(inputs, main_run, reference,
                                                    fid_weights_path):
  from gan_core.eval import fid
  root = inputs["root"]
  features_a = np.load(root / "features_a.npz")["pool"]
  with np.load(root / "stats_a.npz") as stats:
    mu, sigma = fid.feature_statistics(features_a)
    np.testing.assert_array_equal(stats["mu"], mu)
    np.testing.assert_array_equal(stats["sigma"], sigma)
    assert stats["mu"].shape == (2048,) and stats["sigma"].shape == (2048, 2048)
    assert int(stats["num_images"]) == 12

  # Only --save_stats / --dump_features: no metric lines, exit 0.
  code, values, err = run_metrics(inputs["b_path"], "--metrics=",
                                  f"--inception_weights={fid_weights_path}", *FAST_FLAGS,
                                  f"--save_stats={root / 'stats_b.npz'}",
                                  f"--dump_features={root / 'features_b.npz'}")
  assert code == 0, err[-3000:]
  assert values == {}
  dumped_b = check_features(root / "features_b.npz", reference["b"], 12)
  for saved, computed in zip(fid.load_statistics(str(root / "stats_b.npz")),
                             fid.feature_statistics(dumped_b["pool"])):
    np.testing.assert_array_equal(saved, computed)

  # Images of B against A's statistics file as the reference: the FID of the image sets
  # (the distance is symmetric; the features are the same, so only rounding differs).
  code, values, err = run_metrics(inputs["b_path"], root / "stats_a.npz", "--metrics=fid",
                                  f"--inception_weights={fid_weights_path}", *FAST_FLAGS)
  assert code == 0, err[-3000:]
  assert list(values) == ["fid"]
  assert_rel(values["fid"], main_run["fid"], 1e-6, "fid with statistics file")

  # Both sides statistics files: no Inception at all.
  code, values, err = run_metrics(root / "stats_a.npz", root / "stats_b.npz", "--metrics=fid")
  assert code == 0, err[-3000:]
  assert list(values) == ["fid"]
  assert_rel(values["fid"], main_run["fid"], 1e-6, "fid of two statistics files")


def test_swd_and_ms_ssim_need_no_inception_weights(tmp_path):
  from gan_core.eval.ms_ssim import ms_ssim
  from gan_core.eval.swd import sliced_wasserstein_distance
  rng = np.random.default_rng(5)
  base = rng.integers(0, 256, (4, 32, 32, 3))
  # Pairs (0, 1), (2, 3), ... are noisy copies of one image: MS-SSIM well above 0.
  fake = np.clip(np.repeat(base, 2, axis=0) + rng.normal(0, 20, (8, 32, 32, 3)), 0, 255)
  fake = fake.astype(np.uint8)
  real = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
  np.savez(tmp_path / "fake.npz", images=fake)
  np.savez(tmp_path / "real.npz", images=real)
  empty_cache = tmp_path / "empty_cache"
  empty_cache.mkdir()
  code, values, err = run_metrics(tmp_path / "fake.npz", tmp_path / "real.npz",
                                  "--metrics=swd,ms_ssim", "--seed=3",
                                  env={"GAN_CORE_CACHE": str(empty_cache)})
  assert code == 0, err[-3000:]
  expected = sliced_wasserstein_distance(real, fake, seed=3)
  assert list(expected) == ["swd_32", "swd_16", "swd_avg"]
  expected["ms_ssim"] = ms_ssim(fake)
  assert list(values) == list(expected)
  for name, value in expected.items():
    assert_rel(values[name], value, 1e-8, name)
  assert 0.1 < values["ms_ssim"] < 1.0
  # The seed reaches SWD: seed 0 (the default) gives other values.
  assert sliced_wasserstein_distance(real, fake, seed=0)["swd_32"] != expected["swd_32"]


# ---------------------------------------------------------------------------------------------
# User errors: exit status 1, one `error:` line naming the problem, no traceback. All fail
# before any image goes through the Inception.


def _write_corrupt_folder(root, name, content):
  folder = root / "corrupt"
  folder.mkdir()
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "b.png")
  (folder / name).write_bytes(content)  # sorts first: read before anything is computed
  return folder


def _npz(path, **arrays):
  np.savez(path, **arrays)
  return path


def _empty_folder(path):
  path.mkdir()
  (path / "readme.txt").write_text("no images here")
  return path


def _stats(path):
  return _npz(path, mu=np.zeros(4), sigma=np.eye(4))


def _missing_weights(inputs, weights, tmp):
  cache = tmp / "empty_cache"
  cache.mkdir()
  return ([inputs["a_dir"], inputs["b_path"], "--metrics=fid", *FAST_FLAGS],
          {"GAN_CORE_CACHE": str(cache)},
          ["No FID Inception weights", "--inception_weights=FILE", "GAN_CORE_INCEPTION_WEIGHTS",
           str(cache), "--download_inception"])


def _corrupt_png(inputs, weights, tmp):
  folder = _write_corrupt_folder(tmp, "a.png", b"this is not a png")
  return ([folder, f"--inception_weights={weights}", *FAST_FLAGS], {},
          [str(folder / "a.png"), "Cannot read image"])


def _corrupt_ppm(inputs, weights, tmp):
  # A PPM with a bad header: Pillow raises ValueError (not OSError) for this one.
  folder = _write_corrupt_folder(tmp, "a.ppm", b"P6\n32 x2\n255\n" + bytes(3072))
  return [folder, "--metrics=ms_ssim"], {}, [str(folder / "a.ppm"), "Cannot read image"]


# name -> (inputs, weights file, tmp_path) -> (CLI arguments, environment, parts of the error)
ERROR_CASES = {
    "missing path": lambda i, w, t: ([t / "nothing_here"], {},
                                     [str(t / "nothing_here"), "does not exist"]),
    "empty folder": lambda i, w, t: ([_empty_folder(t / "empty")], {},
                                     [str(t / "empty"), "has no images"]),
    "float images": lambda i, w, t: (
        [_npz(t / "f.npz", images=np.zeros((4, 32, 32, 3), np.float32))], {},
        [str(t / "f.npz"), "float32", "uint8"]),
    "statistics without mu": lambda i, w, t: (
        [i["b_path"], _npz(t / "s.npz", sigma=np.eye(4)), "--metrics=fid"], {},
        [str(t / "s.npz"), "'mu'"]),
    "npz without images or statistics": lambda i, w, t: (
        [_npz(t / "u.npz", samples=np.zeros((4, 32, 32, 3), np.uint8))], {},
        [str(t / "u.npz"), "'samples'", "'images'"]),
    "fid without B": lambda i, w, t: ([i["a_dir"], "--metrics=fid"], {},
                                      ["fid", "second input B"]),
    "unknown metric": lambda i, w, t: ([i["a_dir"], i["b_path"], "--metrics=fid,lpips"], {},
                                       ["Unknown metrics", "lpips"]),
    "statistics as A for IS": lambda i, w, t: ([_stats(t / "s.npz"), "--metrics=is"], {},
                                               [str(t / "s.npz"), "only FID statistics"]),
    "statistics as B for KID": lambda i, w, t: (
        [i["a_dir"], _stats(t / "s.npz"), "--metrics=kid"], {},
        [str(t / "s.npz"), "only FID statistics", "KID"]),
    "corrupt png": _corrupt_png,
    "corrupt ppm": _corrupt_ppm,
    "missing weights": _missing_weights,
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_user_errors_are_one_line_without_traceback(case, inputs, fid_weights_path, tmp_path):
  args, env, expected = ERROR_CASES[case](inputs, fid_weights_path, tmp_path)
  code, values, err = run_metrics(*args, env=env)
  assert code == 1, err[-3000:]
  assert values == {}
  assert "Traceback" not in err, err[-3000:]
  errors = [line for line in err.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, err[-3000:]
  for fragment in expected:
    assert fragment in errors[0], (fragment, errors[0])
