"""The BigGAN base configuration; files in configs/ start from it and override.

Every field can be overridden on the command line (`--config.batch_size=512`,
`--config.model.ch=64`); the config is locked, so a misspelt field is an error.
"""
from __future__ import annotations

import ml_collections

from gan_core.augment import augment_config
from gan_core.eval.config import eval_config
from gan_core.guard import guard_config


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # 'digits' (embedded), a tfds name prepared as ArrayRecord ('imagenet2012', 'cifar10', ...),
  # a prepared dataset (python -m gan_core.data.prepare) or an image folder path.
  c.dataset = "imagenet2012"
  c.data_dir = ""  # tfds data_dir; '' means tfds' default (~/tensorflow_datasets).
  c.download_dataset = False  # Let tfds download and prepare (as ArrayRecord) a missing dataset.
  c.random_flip = True
  c.data_workers = 0  # Decoding threads per process; 0: all cores but one.
  # Train on a class-balanced subset of about this fraction of the dataset (small-data runs),
  # chosen by dataset_subset_seed alone: the same images for any seed or augmentation.
  c.dataset_fraction = 1.0
  c.dataset_subset_seed = 0

  c.batch_size = 256  # Global batch per D or G update, over all devices and hosts.
  c.num_accumulations = 1  # Split each update's batch into this many micro-batches.
  c.num_train_steps = 500_000  # Iterations (each: num_d_steps D updates + 1 G update).
  c.num_d_steps = 2
  c.scan_unroll = "auto"  # D-step/accumulation loops: 'auto' (unrolled on CPU), 'always', 'never'.
  c.loss = "hinge"  # 'hinge' or 'non_saturating'.
  c.g_lr = 1e-4
  c.d_lr = 4e-4
  c.adam_b1 = 0.0
  c.adam_b2 = 0.999
  c.adam_eps = 1e-6
  c.ortho_reg = 1e-4  # Off-diagonal orthogonal regularisation strength for G; 0 disables.
  # Diversity-sensitive regularisation of G (Yang et al., 2019, "DSGAN"), for small data
  # where a conditional G settles on one prototype per class: each G update draws its
  # samples in pairs of one class and subtracts diversity_reg * mean over pairs of
  # min(mean|G(z1, y) - G(z2, y)| / mean|z1 - z2|, diversity_reg_max) from G's loss.
  # 0 (the default): BigGAN's objective, nothing computed.
  c.diversity_reg = 0.0
  c.diversity_reg_max = 1.0
  c.ema_decay = 0.9999
  # G-EMA is a plain copy of G before iteration ema_start (counted from 1, as
  # BigGAN-PyTorch does: the ema_start-th update is the first that decays).
  c.ema_start = 20_000

  c.checkpoint_every_steps = 1000
  c.max_to_keep = 3
  # Besides the newest max_to_keep, keep one checkpoint at least every this many steps for good
  # (0: none), so a collapse noticed late can be rolled back by hand.
  c.keep_checkpoint_every_steps = 50_000
  c.log_every_steps = 100
  c.sample_every_steps = 1000  # Sample grid (G-EMA, fixed latents) to TensorBoard.
  c.num_grid_samples = 64
  # FID/IS of G-EMA every this many steps (0: never) and at the end; see gan_core/eval.
  c.eval_every_steps = 5000
  c.eval = eval_config()
  # Divergence guard: non-finite steps (and optional D-margin / singular-value limits) roll
  # back to the last good checkpoint; see gan_core/guard.py.
  c.guard = guard_config()
  # Augmentation of everything D sees (DiffAugment or ADA), for small datasets;
  # see gan_core/augment.py.
  c.augment = augment_config()

  m = c.model = ml_collections.ConfigDict()
  m.architecture = "biggan"  # 'biggan' or 'biggan_deep'.
  m.resolution = 128
  m.ch = 96
  m.dim_z = 120
  m.shared_dim = 128
  m.hierarchical = True  # BigGAN only; BigGAN-deep always concatenates all of z.
  m.depth = 2  # BigGAN-deep blocks per stage.
  m.g_attention = (64,)
  m.d_attention = (64,)
  m.num_classes = 1000  # 0: take it from the dataset.
  m.sn_eps = 1e-6
  m.bn_eps = 1e-5  # Of the conditional BNs.
  m.output_bn_eps = 1e-5  # Of G's output BN: BigGAN-PyTorch's is 1e-5 whatever its BN_eps.
  # The TF-Hub BigGAN-deep generators' evaluation (configs/imagenet*_deep.py:tfhub, see
  # biggan_jax/layers.py): 'stored' divides by the imported sigma without a power iteration
  # (torch spectral_norm) instead of one power iteration (BigGAN-PyTorch); > 0 keeps this many
  # rows of G's BN statistics, one per truncation value, read at the sampling truncation.
  # Such a generator samples and evaluates but does not train.
  m.sn_eval = "power_iteration"
  m.truncation_bn_stats = 0
  m.compute_dtype = "float32"  # 'bfloat16' for bf16 activations (params, stats, losses stay f32).
  # Rematerialise every G and D residual block: their activations are recomputed in the
  # backward pass instead of kept, for larger per-device batches (README, "Benchmarks and
  # performance").
  m.remat = False
  # N > 0: self-attention computed N query positions at a time, each chunk rematerialised,
  # so one [batch, N, keys] attention map is live instead of the whole one (the same
  # function; for large per-device batches at 256, README "Benchmarks and performance").
  # N must divide the attention's positions (128x128 = 16384 for G's attention at 256).
  # 0: the whole map. -1 (auto): chunks of 1024 on CPU where they divide the positions
  # (faster and smaller there, measured), the whole map on GPU/TPU (not yet timed there).
  m.attention_query_chunk = -1
  return c


def biggan_pytorch_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The training recipe of BigGAN-PyTorch's launch scripts (`launch_BigGAN_bs256x8.sh`,
  `launch_BigGAN_deep.sh`), for runs that continue its checkpoints: 1 D step per G step,
  no orthogonal regularisation, batch 256 x 8 accumulations, EMA 0.9999 from iteration
  20000. (The paper's recipe, the default, takes 2 D steps and orthogonal reg. 1e-4.)"""
  c.num_d_steps = 1
  c.ortho_reg = 0.0
  c.batch_size = 2048
  c.num_accumulations = 8
  c.g_lr, c.d_lr = 1e-4, 4e-4
  c.adam_b1, c.adam_b2, c.adam_eps = 0.0, 0.999, 1e-6
  c.ema_decay, c.ema_start = 0.9999, 20_000
  c.model.sn_eps, c.model.bn_eps = 1e-6, 1e-5
  return c


def tfhub_deep_model(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The TF-Hub BigGAN-deep generators (`biggan-deep-128/256/512`, as ported by the PyPI
  package `pytorch-pretrained-biggan`), for `python -m biggan_jax.import_weights
  --from=tfhub_biggan_deep`: ch 128, z 128, 1000 classes, BN and SN eps 1e-4 (the output
  BN's too), torch spectral_norm's stored sigma, BN statistics for 51 truncation values.
  Sampling and evaluation only: no discriminator or optimizer state was released."""
  deep_model(c)
  m = c.model
  m.num_classes = 1000
  m.shared_dim = 128
  m.depth = 2
  m.bn_eps = m.output_bn_eps = m.sn_eps = 1e-4
  m.sn_eval = "stored"
  m.truncation_bn_stats = 51
  return c


def deep_model(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """BigGAN-deep settings of BigGAN-PyTorch's launch script (ch 128, dim_z 128)."""
  c.model.architecture = "biggan_deep"
  c.model.ch = 128
  c.model.dim_z = 128
  c.model.g_attention = (64,)
  c.model.d_attention = (64,)
  return c
