r"""Trains BigGAN / BigGAN-deep.

  python -m biggan_jax.main --config=configs/imagenet128.py --workdir=DIR \
      [--config.batch_size=512 ...] [--dry_run]

A run resumes automatically from DIR's latest checkpoint. `--dry_run` prints
the resolved config and the parameter tables without reading any data.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gan_core.cli import parse_flags

config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:preset]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and samples.")
flags.DEFINE_bool("dry_run", False, "Print the config and parameter counts, then exit.")
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process: coordinator host:port ('auto' on TPU VMs / SLURM).")
flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
FLAGS = flags.FLAGS


def dry_run(config, workdir: str | None) -> None:
  import jax

  from biggan_jax.train import BigGANTrainer
  from gan_core import parallel
  from gan_core.checkpointing import Checkpointer
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
  if workdir:
    directory = os.path.join(workdir, "checkpoints")
    step = Checkpointer(directory).latest_step() if os.path.isdir(directory) else None
    print(f"checkpoint step: {'none' if step is None else step}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.config is None:
    raise app.UsageError("--config=configs/NAME.py is required")
  from gan_core import parallel
  parallel.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
  if FLAGS.dry_run:
    dry_run(FLAGS.config, FLAGS.workdir)
    return
  if not FLAGS.workdir:
    raise app.UsageError("--workdir=DIR is required for training")
  from biggan_jax.train import train_and_evaluate
  from gan_core.checkpointing import CheckpointError
  from gan_core.data import DataError
  logging.info("Config:\n%s", FLAGS.config)
  try:
    train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (CheckpointError, DataError, FloatingPointError) as e:
    # Problems the user can fix: one clear message, no traceback.
    logging.error("%s: %s", type(e).__name__, e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


def run() -> None:
  try:
    app.run(main, flags_parser=parse_flags)
  except KeyboardInterrupt:
    sys.exit(130)


if __name__ == "__main__":
  run()
