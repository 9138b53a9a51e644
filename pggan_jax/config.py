"""Defaults shared by all PGGAN configs (the official code's, unless noted).

Per-resolution settings are ConfigDicts keyed `r4`, `r8`, ..., `r1024`, e.g.
`--config.batch_size.r1024=16 --config.learning_rate.r1024=0.0015`.
"""
from __future__ import annotations

import ml_collections

from gan_core.errors import ConfigError
from gan_core.augment import augment_config
from gan_core.eval.config import eval_config
from gan_core.guard import guard_config

RESOLUTIONS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)


def per_resolution(default, max_resolution: int = 1024, **overrides) -> ml_collections.ConfigDict:
  """{'r4': default, ..., 'r<max>': default} with overrides like r1024=0.003."""
  values = {f"r{r}": default for r in RESOLUTIONS if r <= max_resolution}
  for key, value in overrides.items():
    if key not in values:
      raise KeyError(f"{key} is not a resolution up to {max_resolution}")
    values[key] = value
  return ml_collections.ConfigDict(values)


def base_config(max_resolution: int = 1024) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # 'digits', a prepared dataset (best with --levels), an image-folder path, or a tfds name
  # prepared as ArrayRecord.
  c.dataset = "digits"
  c.data_dir = ""
  c.download_dataset = False
  c.random_flip = True  # Horizontal flips of the reals (the official mirror_augment).
  c.data_workers = 0  # Decoding threads per process; 0: all cores but one.
  # Train on a class-balanced subset of about this fraction of the dataset (small-data runs),
  # chosen by dataset_subset_seed alone: the same images for any seed or augmentation.
  c.dataset_fraction = 1.0
  c.dataset_subset_seed = 0

  # Schedule, in thousands of real images shown to D (pggan_jax/schedule.py).
  c.initial_resolution = 4
  c.stable_kimg = 600.0
  c.transition_kimg = 600.0
  c.total_kimg = 12000.0
  c.minibatch_repeats = 4  # The schedule is re-evaluated every this many iterations.
  c.num_d_steps = 1  # D updates per G update (the official D_repeats).
  c.batch_size = per_resolution(16, max_resolution)
  c.learning_rate = per_resolution(0.001, max_resolution)
  c.reset_optimizer_on_lod_change = True

  # Optimiser and loss: Adam(0, 0.99, 1e-8), WGAN-GP with drift penalty.
  c.adam_b1 = 0.0
  c.adam_b2 = 0.99
  c.adam_eps = 1e-8
  c.loss = "wgan_gp"
  c.wgan_lambda = 10.0
  c.wgan_target = 1.0  # The paper's gamma (750 for CIFAR-10).
  c.wgan_epsilon = 0.001  # Drift penalty weight.
  c.cond_weight = 1.0  # AC-GAN label terms (conditional configs only).
  c.ema_decay = 0.999
  c.scan_unroll = "auto"

  # Book-keeping, in kimg.
  c.checkpoint_every_kimg = 100.0
  c.log_every_kimg = 10.0
  c.sample_every_kimg = 100.0
  # FID/IS of G-EMA every this many kimg (0: never) and at the end, at the current
  # resolution; the best-FID checkpoint is kept among evaluations at full resolution.
  c.eval_every_kimg = 1000.0
  c.eval = eval_config()
  # Divergence guard (gan_core/guard.py): non-finite parameters, a stuck run (every update
  # skipped for non-finite gradients) or D(real) - D(fake) above max_d_margin roll back to
  # the last good checkpoint, at most max_rollbacks times.
  c.guard = guard_config(spectral_norm_signals=False)
  # Augmentation of everything D sees (DiffAugment or ADA) at the current resolution,
  # after the fade-in blend of the reals; see gan_core/augment.py.
  c.augment = augment_config()
  c.max_to_keep = 3
  # Besides the newest max_to_keep, keep one checkpoint at least every this many iterations for
  # good (0: none).
  c.keep_checkpoint_every_steps = 0
  c.num_grid_samples = 64

  m = c.model = ml_collections.ConfigDict()
  m.resolution = max_resolution
  m.num_channels = 3
  m.num_classes = 0  # > 0: conditional (AC-GAN); must match the dataset.
  m.latent_size = 512  # 0: nf(0).
  m.fmap_base = 8192
  m.fmap_max = 512
  m.fmap_decay = 1.0
  m.mbstd_group_size = 4
  m.normalize_latents = True
  m.use_pixelnorm = True
  m.pixelnorm_eps = 1e-8
  m.compute_dtype = "float32"
  return c


PRESETS = ("8gpu", "1gpu", "paper")


def apply_preset(c: ml_collections.ConfigDict, preset: str | None) -> ml_collections.ConfigDict:
  """Batch sizes, learning rates and schedule of the official code's presets.

  - '8gpu' (default): the official "preset-v2-8gpus" (batch 512/256/128/64 at 4..32,
    then 32; learning rate 0.001, 0.0015 at 128, 0.002 at 256, 0.003 above), 600 +
    600 kimg per phase, 12000 kimg in all.
  - '1gpu': the official "preset-v2-1gpu" (batch 128 at 4..16, 64, 32, 16, 8, 4, 4;
    learning rate 0.001, 0.0015 at 1024).
  - 'paper': the paper's original setup ("preset-v1"): batch 16, then 14, 6, 3 at
    256, 512, 1024; minibatch-stddev groups of 16; 800 + 800 kimg; 19000 kimg.
  """
  res = c.model.resolution
  preset = preset or "8gpu"
  if preset == "8gpu":
    c.batch_size = per_resolution(32, res, **{k: v for k, v in dict(
        r4=512, r8=256, r16=128, r32=64).items() if int(k[1:]) <= res})
    c.learning_rate = per_resolution(0.001, res, **{k: v for k, v in dict(
        r128=0.0015, r256=0.002, r512=0.003, r1024=0.003).items() if int(k[1:]) <= res})
  elif preset == "1gpu":
    c.batch_size = per_resolution(4, res, **{k: v for k, v in dict(
        r4=128, r8=128, r16=128, r32=64, r64=32, r128=16, r256=8, r512=4).items()
        if int(k[1:]) <= res})
    c.learning_rate = per_resolution(0.001, res, **({"r1024": 0.0015} if res >= 1024 else {}))
  elif preset == "paper":
    c.batch_size = per_resolution(16, res, **{k: v for k, v in dict(
        r256=14, r512=6, r1024=3).items() if int(k[1:]) <= res})
    c.learning_rate = per_resolution(0.001, res)
    c.model.mbstd_group_size = 16
    c.stable_kimg = 800.0
    c.transition_kimg = 800.0
    c.total_kimg = 19000.0
  else:
    raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
  return c
