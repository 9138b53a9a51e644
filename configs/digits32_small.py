"""Small-data BigGAN: the embedded digits32 recipe on 179 of the 1,797 digits (10%: 17 or 18
per class, a fixed class-balanced subset), where D can memorise its training set.

Presets compare augmentations on the same subset and budget (RESULTS.md has the table):
  --config=configs/digits32_small.py              no augmentation
  --config=configs/digits32_small.py:diffaugment  DiffAugment color,translation,cutout
  --config=configs/digits32_small.py:ada          ADA (bgc, adaptive p, target 0.6)
Measure a run with `python -m biggan_jax.sample --workdir=DIR --out=s.npz --num_samples=898`
and `python -m gan_core.eval.digits s.npz` (against all the real digits).
"""
import importlib.util
import os


def _digits32():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits32.py")
  spec = importlib.util.spec_from_file_location("configs_digits32", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  c = _digits32().get_config()
  c.augment.kind = "none"  # The presets below choose; the default is the plain baseline.
  c.dataset_fraction = 0.1
  if arg in (None, "", "none"):
    pass
  elif arg == "diffaugment":
    c.augment.kind = "diffaugment"
    c.augment.policy = "color,translation,cutout"
  elif arg == "ada":
    c.augment.kind = "ada"
    # The paper's speed (0 -> 1 in 500k images) would not move p within a 48k-image run;
    # 10k images lets it track the heuristic at this scale.
    c.augment.ada_kimg = 10.0
  else:
    raise ValueError(f"digits32_small preset {arg!r}: none, diffaugment or ada")
  return c
