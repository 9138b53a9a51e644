r"""Trains BigGAN / BigGAN-deep.

  python -m biggan_jax.main --config=configs/imagenet128.py --workdir=DIR \
      [--config.batch_size=512 ...] [--dry_run]

A run resumes automatically from DIR's latest checkpoint. `--dry_run` prints
the resolved config and the parameter tables without reading any data.
"""
from __future__ import annotations

from absl import flags

from gan_core.cli import define_training_flags, run_app, training_main

define_training_flags()
FLAGS = flags.FLAGS


def dry_run(config, workdir: str | None) -> None:
  import jax

  from biggan_jax.train import BigGANTrainer
  from gan_core import parallel
  from clu import parameter_overview

  num_classes = config.model.num_classes or 1
  trainer = BigGANTrainer(config, num_classes, parallel.make_mesh())
  shapes = trainer.state_shapes
  print(config)
  if not config.model.num_classes:
    print("(model.num_classes=0: counted with 1 class; the dataset decides at training time)")
  for name, params in (("Generator", shapes.g_params), ("Discriminator", shapes.d_params)):
    print(f"{name}:")
    print(parameter_overview.get_parameter_overview(params, include_stats=False))
  count = lambda tree: sum(int(x.size) for x in jax.tree.leaves(tree))
  print(f"G parameters: {count(shapes.g_params)}")
  print(f"D parameters: {count(shapes.d_params)}")


main = training_main(dry_run, "biggan_jax.train")


def run() -> None:
  run_app(main)


if __name__ == "__main__":
  run()
