"""BigGAN at 512x512 (ch 96, dim_z 128 in 8 chunks of 16, attention at 64)."""
from biggan_jax.config import base_config


def get_config(arg=None):
  c = base_config()
  c.batch_size = 2048
  c.model.resolution = 512
  c.model.ch = 96
  c.model.dim_z = 128
  c.model.g_attention = (64,)
  c.model.d_attention = (64,)
  return c
