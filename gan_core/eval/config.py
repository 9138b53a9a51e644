"""The `config.eval` block of both models (kept free of heavy imports: configs load it)."""
from __future__ import annotations

import ml_collections


def eval_config() -> ml_collections.ConfigDict:
  """The `config.eval` block both models use (the schedule field lives beside it)."""
  e = ml_collections.ConfigDict()
  e.num_samples = 10_000  # 50_000 for numbers comparable with papers.
  e.batch_size = 64  # Samples generated and embedded at once (over all devices).
  e.metrics = "fid,is"  # Comma-separated subset of fid,is,kid,swd,ms_ssim.
  # SWD compares this many images of each set (its descriptors take about 150 KB
  # per image and pyramid level for both sets: 1.8 GB for 4096 images of 64x64).
  e.swd_num_samples = 4096
  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth; '' looks at
  # $GAN_CORE_INCEPTION_WEIGHTS and the cache ($GAN_CORE_CACHE or ~/.cache/gan_core).
  e.inception_weights = ""
  e.download_inception = False  # Fetch the weights into the cache if missing.
  e.stats_dir = ""  # Dataset statistics cache; '' is <cache>/fid_stats.
  e.keep_best = True  # Keep the best-FID checkpoint in <workdir>/best_fid.
  e.seed = 1234  # The same latents at every evaluation (less noise between evaluations).
  return e
