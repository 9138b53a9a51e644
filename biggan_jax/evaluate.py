r"""Evaluates a BigGAN checkpoint: FID/IS/KID/... of its G-EMA, over all devices.

  python -m biggan_jax.evaluate --workdir=DIR [--step=N] [--num_samples=50000]
      [--truncation=T] [--metrics=fid,is] [--standing_stats=BATCHES]

Prints `name: value` lines and appends a JSON line to DIR/evaluations.jsonl; see
`gan_core/sampling.py`.
"""
from biggan_jax.train import BigGANTask
from gan_core import sampling

main = sampling.evaluate_main(BigGANTask)

if __name__ == "__main__":
  from gan_core.cli import run_app
  run_app(main)
