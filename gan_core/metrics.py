"""`python -m gan_core.metrics A [B]`: FID, IS, KID, SWD and MS-SSIM of image sets.

A and B are each a folder of images (read in sorted file-name order, any size),
an `.npz` with `images` (uint8, N x H x W x 3), or, for FID only, an `.npz` of
statistics (`mu`, `sigma`, as pytorch-fid / TTUR and `--save_stats` write).
A is the evaluated set (generated samples), B the reference (real data).

  fid, kid_mean, kid_std  A against B (Inception pool features)
  is_mean, is_std         A (Inception logits without bias, 10 splits, no shuffle)
  swd_<res>, swd_avg      A against B (PGGAN's SWD x 1e3 per pyramid level)
  ms_ssim                 A (mean MS-SSIM of consecutive pairs, as in PGGAN)

One `name: value` line per number goes to stdout. Without --metrics, the
default is fid,is,kid with B and is without. The Inception weights are
pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`: --inception_weights=FILE,
$GAN_CORE_INCEPTION_WEIGHTS, the cache ($GAN_CORE_CACHE, default
~/.cache/gan_core), or --download_inception (checked against its hash).
"""
from __future__ import annotations

import os
import sys
from typing import Iterator

import numpy as np
from absl import flags

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")
ALL_METRICS = ("fid", "is", "kid", "swd", "ms_ssim")
INCEPTION_METRICS = {"fid", "is", "kid"}

_METRICS = flags.DEFINE_string(
    "metrics", None, "Comma-separated subset of fid,is,kid,swd,ms_ssim; may be empty (only "
    "--save_stats / --dump_features). Default: fid,is,kid with B, is without.")
_WEIGHTS = flags.DEFINE_string("inception_weights", None,
                               "pytorch-fid's pt_inception-2015-12-05-6726825d.pth.")
_DOWNLOAD = flags.DEFINE_bool("download_inception", False,
                              "Download the Inception weights into the cache if missing.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Inception batch size (over all devices).")
_KID_SUBSET_SIZE = flags.DEFINE_integer("kid_subset_size", 1000, "KID subset size.")
_KID_SUBSETS = flags.DEFINE_integer("kid_subsets", 100, "Number of KID subsets.")
_SEED = flags.DEFINE_integer("seed", None, "Seed for KID subsets (default 2020, as torch-"
                             "fidelity) and SWD patches/directions (default 0).")
_SAVE_STATS = flags.DEFINE_string("save_stats", None, "Write FID statistics of A (mu, sigma).")
_DUMP_FEATURES = flags.DEFINE_string(
    "dump_features", None, "Write A's features: pool (N x 2048), logits_unbiased (N x 1008).")
_BF16 = flags.DEFINE_bool("bf16", False, "Run Inception in bfloat16 (faster on accelerators; "
                          "not numerically equal to the reference tools).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
_CPU_YNNPACK = flags.DEFINE_bool(
    "cpu_ynnpack", True, "On CPU, run convolutions through XLA's YNNPACK fusions (about 1.5x "
    "faster; same features within float32 rounding). See gan_core/xla_flags.py.")


class InputError(ValueError):
  """An input path or file the metrics cannot use."""


class ImageSet:
  """One input: image folder, `.npz` of images, or `.npz` of FID statistics."""

  def __init__(self, path: str):
    self.path = path
    self.files: list[str] | None = None
    self.images: np.ndarray | None = None
    self.statistics: tuple[np.ndarray, np.ndarray] | None = None
    if not os.path.exists(path):
      raise InputError(f"{path} does not exist (expected a folder of images or an .npz).")
    if os.path.isdir(path):
      self.files = sorted(os.path.join(path, f) for f in os.listdir(path)
                          if f.lower().endswith(IMAGE_EXTENSIONS))
      if not self.files:
        raise InputError(f"{path} has no images (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    elif path.endswith(".npz"):
      self._load_npz()
    else:
      raise InputError(f"{path} is neither a folder of images nor an .npz file.")

  def _load_npz(self) -> None:
    try:
      data = np.load(self.path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise InputError(f"Cannot read {self.path}: {e}") from e
    with data:
      if "images" in data.files:
        images = data["images"]
        if images.dtype != np.uint8:
          raise InputError(f"{self.path}: 'images' is {images.dtype}; it must be uint8 (0..255). "
                           "Quantise first, e.g. np.clip(np.round(127.5 * x + 127.5), 0, 255)"
                           ".astype(np.uint8).")
        if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
          raise InputError(f"{self.path}: 'images' has shape {images.shape}; expected "
                           "(N, H, W, 3) with N > 0.")
        self.images = images
      elif "mu" in data.files or "sigma" in data.files:
        from gan_core.eval.fid import load_statistics, StatisticsFileError
        try:
          self.statistics = load_statistics(self.path)
        except StatisticsFileError as e:
          raise InputError(str(e)) from e
      else:
        raise InputError(f"{self.path} has arrays {sorted(data.files)}: expected 'images' "
                         "(uint8 N x H x W x 3) or FID statistics 'mu' and 'sigma'.")

  @property
  def is_statistics(self) -> bool:
    return self.statistics is not None

  def __len__(self) -> int:
    return len(self.files) if self.files is not None else len(self.images)

  def iterate(self) -> Iterator[np.ndarray]:
    """Images one at a time, uint8 (H, W, 3), RGB."""
    if self.images is not None:
      yield from self.images
      return
    from PIL import Image
    for file in self.files:
      try:
        with Image.open(file) as image:
          array = np.asarray(image.convert("RGB"), np.uint8)
      except Exception as e:  # PIL raises many types for broken files (ValueError, TypeError...).
        raise InputError(f"Cannot read image {file}: {e}. Remove or replace the file.") from e
      yield array

  def as_array(self, what: str) -> np.ndarray:
    """All images as one uint8 array (they must share one size)."""
    if self.is_statistics:
      raise InputError(f"{what} needs images, but {self.path} holds only FID statistics.")
    if self.images is not None:
      return self.images
    images = list(self.iterate())
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
      raise InputError(f"{what} needs images of one size; {self.path} has {sorted(shapes)[:4]}.")
    return np.stack(images)


def _requested_metrics(has_b: bool) -> list[str]:
  if _METRICS.value is None:
    return ["fid", "is", "kid"] if has_b else ["is"]
  requested = [m.strip() for m in _METRICS.value.split(",") if m.strip()]
  unknown = [m for m in requested if m not in ALL_METRICS]
  if unknown:
    raise InputError(f"Unknown metrics {unknown}; choose from {','.join(ALL_METRICS)}.")
  needs_b = [m for m in requested if m in ("fid", "kid", "swd")]
  if needs_b and not has_b:
    raise InputError(f"{','.join(needs_b)} compare two sets: give a second input B.")
  return requested


def compute(path_a: str, path_b: str | None) -> list[tuple[str, float]]:
  """Computes the requested metrics; returns (name, value) pairs in print order."""
  a = ImageSet(path_a)
  b = ImageSet(path_b) if path_b else None
  metrics = _requested_metrics(b is not None)
  if a.is_statistics and ({"is", "kid", "swd", "ms_ssim"} & set(metrics)
                          or _SAVE_STATS.value or _DUMP_FEATURES.value):
    raise InputError(f"{path_a} holds only FID statistics; IS, KID, SWD, MS-SSIM, --save_stats "
                     "and --dump_features need images.")
  if b is not None and b.is_statistics and {"kid", "swd"} & set(metrics):
    raise InputError(f"{path_b} holds only FID statistics; KID and SWD need images.")

  results: list[tuple[str, float]] = []
  need_a_features = bool((INCEPTION_METRICS & set(metrics)) or _SAVE_STATS.value
                         or _DUMP_FEATURES.value) and not a.is_statistics
  need_b_features = b is not None and not b.is_statistics and bool({"fid", "kid"} & set(metrics))
  features_a = features_b = None
  if need_a_features or need_b_features:
    extractor = _make_extractor()
    if need_a_features:
      features_a = extractor(a.iterate(), total=len(a), description="A")
    if need_b_features:
      features_b = extractor(b.iterate(), total=len(b), description="B")

  from gan_core.eval import fid, inception_score, kid
  from gan_core.images import save_npz_atomic
  if _DUMP_FEATURES.value:
    save_npz_atomic(_DUMP_FEATURES.value, pool=features_a["pool"],
                    logits_unbiased=features_a["logits_unbiased"])
  if _SAVE_STATS.value:
    mu, sigma = fid.feature_statistics(features_a["pool"])
    fid.save_statistics(_SAVE_STATS.value, mu, sigma, num_images=np.int64(len(a)))
  if "fid" in metrics:
    stats_a = a.statistics or fid.feature_statistics(features_a["pool"])
    stats_b = b.statistics or fid.feature_statistics(features_b["pool"])
    results.append(("fid", fid.frechet_distance(*stats_a, *stats_b)))
  if "is" in metrics:
    mean, std = inception_score.inception_score(features_a["logits_unbiased"])
    results += [("is_mean", mean), ("is_std", std)]
  if "kid" in metrics:
    mean, std = kid.kernel_inception_distance(
        features_a["pool"], features_b["pool"], num_subsets=_KID_SUBSETS.value,
        subset_size=_KID_SUBSET_SIZE.value,
        seed=kid.DEFAULT_SEED if _SEED.value is None else _SEED.value)
    results += [("kid_mean", mean), ("kid_std", std)]
  if "swd" in metrics:
    from gan_core.eval import swd
    swd_values = swd.sliced_wasserstein_distance(
        b.as_array("SWD"), a.as_array("SWD"), seed=_SEED.value or 0)
    results += list(swd_values.items())
  if "ms_ssim" in metrics:
    from gan_core.eval import ms_ssim
    results.append(("ms_ssim", ms_ssim.ms_ssim(a.as_array("MS-SSIM"))))
  return results


def _make_extractor():
  import jax.numpy as jnp
  from gan_core.eval import features, weights
  try:
    variables = weights.load_inception_params(_WEIGHTS.value, download=_DOWNLOAD.value)
  except weights.InceptionWeightsUnavailable as e:
    raise InputError(f"{e} (or pass --download_inception).") from e
  except weights.InceptionWeightsError as e:
    raise InputError(str(e)) from e
  return features.InceptionFeatures(
      variables, batch_size=_BATCH_SIZE.value, outputs=("pool", "logits_unbiased"),
      dtype=jnp.bfloat16 if _BF16.value else jnp.float32, progress=_PROGRESS.value)


def main(argv: list[str]) -> None:
  from absl import app
  if len(argv) not in (2, 3):
    raise app.UsageError("usage: python -m gan_core.metrics A [B] [--metrics=...] "
                         "[--inception_weights=FILE]")
  if _CPU_YNNPACK.value:
    from gan_core.xla_flags import prefer_ynnpack_dots
    prefer_ynnpack_dots()
  try:
    results = compute(argv[1], argv[2] if len(argv) == 3 else None)
  except (InputError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  for name, value in results:
    print(f"{name}: {value:.10g}", flush=True)


if __name__ == "__main__":
  from gan_core.cli import run_app
  run_app(main)
