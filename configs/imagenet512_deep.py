"""BigGAN-deep at 512x512 (ch 128, dim_z 128, attention at 64)."""
from biggan_jax.config import base_config, deep_model


def get_config(arg=None):
  c = deep_model(base_config())
  c.batch_size = 2048
  c.model.resolution = 512
  return c
