"""BigGAN at 128x128 on ImageNet (ch 96, dim_z 120): G 70,433,988 / D 87,982,370 params.

`--config=configs/imagenet128.py:deep` selects BigGAN-deep (same as imagenet128_deep.py);
`:biggan_pytorch` the training recipe of BigGAN-PyTorch's `launch_BigGAN_bs256x8.sh` (1 D step,
no orthogonal regularisation, batch 256 x 8 accumulations), to continue its checkpoints.
"""
from biggan_jax.config import base_config, biggan_pytorch_recipe, deep_model


def get_config(arg=None):
  c = base_config()
  c.dataset = "imagenet2012"
  c.batch_size = 2048
  c.model.resolution = 128
  c.model.ch = 96
  c.model.dim_z = 120
  if arg == "deep":
    deep_model(c)
  elif arg == "biggan_pytorch":
    biggan_pytorch_recipe(c)
  elif arg:
    raise ValueError(f"unknown preset {arg!r} for imagenet128.py; use 'deep', "
                     "'biggan_pytorch' or nothing")
  return c
