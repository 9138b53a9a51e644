"""PGGAN on CIFAR-10 at 32x32, unconditional, with the paper's CIFAR settings.

The paper's CIFAR-10 runs use WGAN-GP with gamma = 750 (the gradient-norm target;
the penalty is scaled by lambda / gamma^2) and no mirror augmentation; widths
are 512 at every resolution (fmap_base 8192 up to 32x32). Batch sizes and
learning rates are the official 8-GPU preset. --config.model.num_classes=10
trains the AC-GAN conditional variant instead.
"""
from pggan_jax.config import apply_preset, base_config


def get_config(arg=None):
  c = base_config(32)
  c.dataset = "cifar10"
  c.random_flip = False
  c.wgan_target = 750.0
  c.total_kimg = 12000.0
  return apply_preset(c, arg)
