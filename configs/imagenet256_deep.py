"""BigGAN-deep at 256x256 (ch 128, dim_z 128, attention at 64).

`:tfhub` is the TF-Hub module `biggan-deep-256` (sampling and evaluation; `python -m
biggan_jax.import_weights --from=tfhub_biggan_deep`).
"""
from biggan_jax.config import base_config, deep_model, tfhub_deep_model


def get_config(arg=None):
  c = deep_model(base_config())
  c.batch_size = 2048
  c.model.resolution = 256
  if arg == "tfhub":
    tfhub_deep_model(c)
  elif arg:
    raise ValueError(f"unknown preset {arg!r} for imagenet256_deep.py; use 'tfhub' or "
                     "nothing")
  return c
