"""PGGAN on CelebA-HQ at 1024x1024 (the paper's headline result).

  --config=configs/pggan_celebahq1024.py[:8gpu|:1gpu|:paper]

Presets follow the official code (see pggan_jax/config.py `apply_preset`);
the default is its 8-GPU setup. Data: tfds `celeb_a_hq/1024` prepared as
ArrayRecord, which needs a manual download (the error message explains it), or,
best, a prepared dataset with all PGGAN levels (`python -m gan_core.data.prepare
/path/to/celebahq_images /path/to/celebahq1024 --resolution=1024 --levels`, then
`--config.dataset=/path/to/celebahq1024`). Mirror augmentation on.
"""
from pggan_jax.config import apply_preset, base_config


def get_config(arg=None):
  c = base_config(1024)
  c.dataset = "celeb_a_hq/1024"
  c.random_flip = True
  c.total_kimg = 12000.0
  return apply_preset(c, arg)
