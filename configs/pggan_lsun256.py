"""PGGAN on LSUN bedroom at 256x256 (tfds `lsun/bedroom`, center-cropped and resized).

  --config=configs/pggan_lsun256.py[:8gpu|:1gpu|:paper]

Other LSUN categories: --config.dataset=lsun/CATEGORY. Mirror augmentation on.
"""
from pggan_jax.config import apply_preset, base_config


def get_config(arg=None):
  c = base_config(256)
  c.dataset = "lsun/bedroom"
  c.random_flip = True
  c.total_kimg = 12000.0
  return apply_preset(c, arg)
