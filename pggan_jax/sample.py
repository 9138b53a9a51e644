r"""Samples from a trained PGGAN: the checkpoint's G-EMA at its schedule's resolution.

  python -m pggan_jax.sample --workdir=DIR --out=samples.npz [--num_samples=64]
      [--seed=0] [--grid] [--interpolate=STEPS] [--labels=3,3,7|random]
      [--latents=FILE.npz] [--step=N]

The generator runs at the resolution (and fade-in alpha) of the schedule at that
checkpoint. See `gan_core/sampling.py` for the outputs; the same arguments give the
same bytes.
"""
from gan_core import sampling
from pggan_jax.train import PGGANTask

main = sampling.sample_main(PGGANTask)

if __name__ == "__main__":
  from gan_core.cli import run_app
  run_app(main)
