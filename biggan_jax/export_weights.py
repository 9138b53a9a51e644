r"""Exports a BigGAN / BigGAN-deep checkpoint of ours as BigGAN-PyTorch's files.

  python -m biggan_jax.export_weights --workdir=DIR --out=OUTDIR [--step=N]

OUTDIR receives G.pth, D.pth, G_ema.pth, G_optim.pth, D_optim.pth and state_dict.pth, as
BigGAN-PyTorch's `utils.save_weights` writes them: its Generator / Discriminator load them
with `load_state_dict(strict=True)`, its Adam optimizers the optimizer files, and
`torch.load(weights_only=True)` reads all six. Written without PyTorch.
"""
from __future__ import annotations

from absl import app, flags

from gan_core.cli import quiet_library_logs, run_app

flags.DEFINE_string("workdir", None, "Training workdir (its checkpoints/ folder).")
flags.DEFINE_string("out", None, "Output folder for the .pth files.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_bool("library_logs", False, "Also show the INFO logs of libraries.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir or not FLAGS.out:
    raise app.UsageError("--workdir and --out are required")
  if not FLAGS.library_logs:
    quiet_library_logs()
  from biggan_jax.pytorch_checkpoint import export_biggan_pytorch
  written = export_biggan_pytorch(FLAGS.workdir, FLAGS.out, FLAGS.step)
  print(f"wrote {', '.join(sorted(written))} (.pth) to {FLAGS.out}")


if __name__ == "__main__":
  run_app(main)
