r"""Evaluates a PGGAN checkpoint at its schedule's resolution: FID/SWD/MS-SSIM/..., over
all devices.

  python -m pggan_jax.evaluate --workdir=DIR [--step=N] [--num_samples=50000]
      [--metrics=fid,swd,ms_ssim]

Prints `name: value` lines and appends a JSON line to DIR/evaluations.jsonl; see
`gan_core/sampling.py`.
"""
from gan_core import sampling
from pggan_jax.train import PGGANTask

main = sampling.evaluate_main(PGGANTask)

if __name__ == "__main__":
  from gan_core.cli import run_app
  run_app(main)
