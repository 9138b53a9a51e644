r"""Trains PGGAN (progressive growing with fade-in).

  python -m pggan_jax.main --config=configs/pggan_celebahq1024.py --workdir=DIR \
      [--config.total_kimg=12000 ...] [--dry_run]

A run resumes automatically from DIR's latest checkpoint, in the right phase
of the schedule. `--dry_run` prints the resolved config and the parameter
tables without reading any data.
"""
from __future__ import annotations

from absl import flags

from gan_core.cli import define_training_flags, run_app, training_main

define_training_flags()
FLAGS = flags.FLAGS


def dry_run(config, workdir: str | None) -> None:
  import jax
  from clu import parameter_overview

  from gan_core import parallel
  from pggan_jax import schedule
  from pggan_jax.train import PGGANTrainer

  trainer = PGGANTrainer(config, config.model.num_classes, parallel.make_mesh())
  shapes = trainer.state_shapes
  print(config)
  count = lambda tree: sum(int(x.size) for x in jax.tree.leaves(tree))
  for name, params in (("Generator", shapes.g_params), ("Discriminator", shapes.d_params)):
    print(f"{name}:")
    print(parameter_overview.get_parameter_overview(params, include_stats=False))
  res = config.model.resolution
  g_heads = sum(count(v) for k, v in shapes.g_params.items()
                if k.startswith("to_rgb_") and k != f"to_rgb_{res}")
  d_heads = sum(count(v) for k, v in shapes.d_params.items()
                if k.startswith("from_rgb_") and k != f"from_rgb_{res}")
  print(f"G parameters: {count(shapes.g_params)}")
  print(f"D parameters: {count(shapes.d_params)}")
  print(f"(with only the final toRGB / fromRGB: G {count(shapes.g_params) - g_heads}, "
        f"D {count(shapes.d_params) - d_heads})")
  print("schedule:")
  kimg, total = 0.0, config.total_kimg
  phase_kimg = config.stable_kimg + config.transition_kimg
  for res_i in trainer.resolutions:
    start = schedule.phase_at(int(kimg * 1000) + 1, config)
    fade = (f" (fade-in to {kimg + config.transition_kimg:g})"
            if res_i != trainer.resolutions[0] else "")
    print(f"  {res_i}x{res_i} from {kimg:g} kimg{fade}: batch {start.batch_size}, "
          f"learning rate {start.learning_rate:g}")
    kimg = kimg + (config.stable_kimg if res_i == trainer.resolutions[0] else phase_kimg)
    if kimg >= total:
      break
  print(f"  total {total:g} kimg")


main = training_main(dry_run, "pggan_jax.train")


def run() -> None:
  run_app(main)


if __name__ == "__main__":
  run()
