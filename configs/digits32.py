"""The embedded default: class-conditional BigGAN on scikit-learn's digits at 32x32.

No download. Sized to finish in under 10 minutes on a 2-core CPU (about 0.37 s per
iteration there at ch 8, batch 32).
"""
from biggan_jax.config import base_config


def get_config(arg=None):
  c = base_config()
  c.dataset = "digits"
  c.random_flip = False  # A mirrored digit is not a digit.
  c.batch_size = 16
  c.num_train_steps = 3000
  c.num_d_steps = 1
  c.ema_decay = 0.99
  c.ema_start = 1500
  c.checkpoint_every_steps = 500
  c.log_every_steps = 100
  c.sample_every_steps = 500
  c.num_grid_samples = 100
  c.g_lr = 2e-4
  c.d_lr = 2e-4
  m = c.model
  m.resolution = 32
  m.ch = 8
  m.dim_z = 64
  m.shared_dim = 32
  m.g_attention = (16,)
  m.d_attention = (16,)
  m.num_classes = 10
  return c
