"""BigGAN-deep at 128x128 (ch 128, dim_z 128): G 50,244,484 / D 34,590,210 params."""
from biggan_jax.config import base_config, deep_model


def get_config(arg=None):
  c = deep_model(base_config())
  c.batch_size = 2048
  c.model.resolution = 128
  return c
