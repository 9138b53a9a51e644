"""BigGAN-deep at 128x128 (ch 128, dim_z 128): G 50,244,484 / D 34,590,210 params.

`--config=configs/imagenet128_deep.py:biggan_pytorch` is the training recipe of
BigGAN-PyTorch's `launch_BigGAN_deep.sh` (1 D step, no orthogonal regularisation, batch
256 x 8 accumulations), to continue its checkpoints. `:tfhub` is the TF-Hub module
`biggan-deep-128` (sampling and evaluation; `python -m biggan_jax.import_weights
--from=tfhub_biggan_deep`).
"""
from biggan_jax.config import base_config, biggan_pytorch_recipe, deep_model, tfhub_deep_model


def get_config(arg=None):
  c = deep_model(base_config())
  c.batch_size = 2048
  c.model.resolution = 128
  if arg == "biggan_pytorch":
    biggan_pytorch_recipe(c)
  elif arg == "tfhub":
    tfhub_deep_model(c)
  elif arg:
    raise ValueError(f"unknown preset {arg!r} for imagenet128_deep.py; use 'biggan_pytorch', "
                     "'tfhub' or nothing")
  return c
