r"""Samples from a trained BigGAN: the checkpoint's G-EMA (with its BN/SN state) alone.

  python -m biggan_jax.sample --workdir=DIR --out=samples.npz [--num_samples=64]
      [--seed=0] [--truncation=T] [--labels=3,3,7|random] [--grid] [--class_sheet]
      [--interpolate=STEPS] [--standing_stats=BATCHES] [--latents=FILE.npz] [--step=N]

See `gan_core/sampling.py` for the outputs; the same arguments give the same bytes.
"""
from biggan_jax.train import BigGANTask
from gan_core import sampling

main = sampling.sample_main(BigGANTask)

if __name__ == "__main__":
  from gan_core.cli import run_app
  run_app(main)
