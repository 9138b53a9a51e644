"""BigGAN at 256x256 (ch 96, dim_z 140, G attention at 128, D at 64):
G 82,097,604 / D 99,225,890 params."""
from biggan_jax.config import base_config


def get_config(arg=None):
  c = base_config()
  c.batch_size = 2048
  c.model.resolution = 256
  c.model.ch = 96
  c.model.dim_z = 140
  c.model.g_attention = (128,)
  c.model.d_attention = (64,)
  return c
