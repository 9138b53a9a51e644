"""`python -m gan_core.metrics A [B]`: FID, IS, KID, SWD and MS-SSIM of image sets.

A command-line wrapper of `gan_core.eval.compute` (the same in Python).

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

import sys

from absl import flags

from gan_core.eval import api, registry
from gan_core.eval.api import ImageSet, InputError  # noqa: F401 - this module's public names.

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


def _requested_metrics(has_b: bool) -> list[str]:
  if _METRICS.value is None:
    return ["fid", "is", "kid"] if has_b else ["is"]
  return registry.parse(_METRICS.value, "--metrics")


def compute(path_a: str, path_b: str | None) -> list[tuple[str, float]]:
  """The requested metrics as (name, value) pairs in print order."""
  results = api.compute(
      _requested_metrics(path_b is not None), fake=path_a, real=path_b,
      inception_weights=_WEIGHTS.value, download_inception=_DOWNLOAD.value,
      batch_size=_BATCH_SIZE.value, bf16=_BF16.value, kid_subset_size=_KID_SUBSET_SIZE.value,
      kid_subsets=_KID_SUBSETS.value, seed=_SEED.value, progress=_PROGRESS.value,
      save_stats=_SAVE_STATS.value, dump_features=_DUMP_FEATURES.value)
  return list(results.items())


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
  except (registry.MetricError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  for name, value in results:
    print(f"{name}: {value:.10g}", flush=True)


if __name__ == "__main__":
  from gan_core.cli import run_app
  run_app(main)
