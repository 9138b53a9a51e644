"""Command-line helpers shared by the training and sampling entry points."""
from __future__ import annotations

import os
import sys
from typing import Callable

from absl import flags


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags parser that reports bad config overrides in one clear line.

  ml_collections raises KeyError/AttributeError (with a "did you mean") for an
  unknown `--config.FIELD`, and TypeError/ValueError for a value of the wrong type.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\nRun with --helpfull for the list of flags.\n")
    sys.exit(2)
  except (KeyError, AttributeError, TypeError, ValueError) as e:
    message = str(e.args[0] if e.args else e).strip("'\"").replace("\\n", " ").replace(
        "\\'", "'")
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    sys.stderr.write(f"error: invalid config override {' '.join(bad)}: {message}\n"
                     "Every config field must already exist in the config file (the config "
                     "is locked so a typo cannot be silently ignored); run with --dry_run to "
                     "print all fields.\n")
    sys.exit(2)


def define_training_flags() -> None:
  """The flags every training entry point takes (config, workdir, dry run, multi-process)."""
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:preset]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and samples.")
  flags.DEFINE_bool("dry_run", False, "Print the config and parameter counts, then exit.")
  flags.DEFINE_bool("library_logs", False, "Also show the INFO logs of libraries (Orbax, "
                    "JAX, TensorFlow, ...); by default only their warnings and errors.")
  define_compilation_cache_flag()
  define_distributed_flags()


def define_compilation_cache_flag() -> None:
  if "compilation_cache" not in flags.FLAGS:
    flags.DEFINE_string("compilation_cache", None, "Persistent XLA compilation cache: a "
                        "directory, or 'off' (default: $JAX_COMPILATION_CACHE_DIR, else "
                        "~/.cache/gan_jax/xla for a single-process run); see "
                        "gan_core/compilation_cache.py.")


def quiet_library_logs() -> None:
  """INFO logs of this project only; warnings and errors of every library. (Orbax alone
  writes a few hundred INFO lines per short run.)"""
  import logging as std_logging
  from absl import logging
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  roots = tuple(os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep + name
                + os.sep for name in ("gan_core", "biggan_jax", "pggan_jax"))

  class OwnInfo(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
      return record.levelno >= std_logging.WARNING or record.pathname.startswith(roots)

  logging.get_absl_handler().addFilter(OwnInfo())


def define_distributed_flags() -> None:
  """--coordinator_address / --num_processes / --process_id (see docs/scaling.md)."""
  flags.DEFINE_string("coordinator_address", None,
                      "Multi-process: coordinator host:port ('auto' on TPU VMs / SLURM).")
  flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
  flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")


def initialize_distributed() -> None:
  """Starts jax.distributed from the flags of `define_distributed_flags` or the environment."""
  from gan_core import parallel
  FLAGS = flags.FLAGS
  parallel.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)


def run_training(argv: list[str], dry_run: Callable, load_train: Callable[[], Callable]) -> None:
  """The body of a training `main`: checks flags, starts the multi-process runtime, then
  either `dry_run(config, workdir)` or `load_train()(config, workdir)`. Errors the user can
  fix (config values, checkpoint, data, disk, divergence) end in one `error:` line and exit
  status 1."""
  from absl import app, logging
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.config is None:
    raise app.UsageError("--config=configs/NAME.py is required")
  if not FLAGS.dry_run and not FLAGS.workdir:
    raise app.UsageError("--workdir=DIR is required for training")
  from gan_core.errors import UserError
  if not FLAGS.library_logs:
    quiet_library_logs()
  try:
    from gan_core.xla_flags import prefer_eigen_convolutions
    prefer_eigen_convolutions()  # Before any backend starts; only XLA:CPU reads it.
    initialize_distributed()
    from gan_core import compilation_cache
    compilation_cache.enable(FLAGS.compilation_cache)
    if FLAGS.dry_run:
      dry_run(FLAGS.config, FLAGS.workdir)
      if FLAGS.workdir:
        from gan_core.checkpointing import latest_step_of
        step = latest_step_of(FLAGS.workdir)
        print(f"checkpoint step: {'none' if step is None else step}")
      return
    logging.info("Config:\n%s", FLAGS.config)
    load_train()(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    logging.error("%s: %s", type(e).__name__, e)
    print_error(e)
    sys.exit(1)


def training_main(dry_run: Callable, train_module: str) -> Callable[[list[str]], None]:
  """The `main(argv)` of a model's training entry point: `run_training` with the dry run
  and `train_module.train_and_evaluate` (imported only when training)."""
  def main(argv: list[str]) -> None:
    import importlib
    run_training(argv, dry_run,
                 lambda: importlib.import_module(train_module).train_and_evaluate)
  return main


def print_error(error: BaseException) -> None:
  """The `error: ...` line, written whole on a line of its own: background threads of the
  checkpoint library may still be printing (e.g. after a failed write), and their output
  must not run into this line."""
  sys.stderr.flush()
  sys.stderr.write(f"\nerror: {error}\n")
  sys.stderr.flush()


def run_app(main: Callable) -> None:
  """absl app.run with the clear config-override errors; an error the user can fix
  (`UserError`) is one `error:` line and exit status 1; Ctrl-C exits 130."""
  from absl import app
  from gan_core.errors import UserError

  def guarded(argv: list[str]) -> None:
    try:
      main(argv)
    except UserError as e:
      print_error(e)
      sys.exit(1)

  try:
    app.run(guarded, flags_parser=parse_flags)
  except KeyboardInterrupt:
    sys.exit(130)
