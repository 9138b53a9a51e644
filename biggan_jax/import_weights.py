r"""Imports pretrained BigGAN weights as a checkpoint of ours.

  python -m biggan_jax.import_weights --from=biggan_pytorch --weights_dir=DIR \
      --config=configs/imagenet128.py:biggan_pytorch [--config.FIELD=...] --workdir=OUT \
      [--ema_only] [--suffix=best0]
  python -m biggan_jax.import_weights --from=tfhub_biggan_deep --weights_dir=DIR \
      --config=configs/imagenet128_deep.py:tfhub --workdir=OUT

DIR holds what BigGAN-PyTorch's `utils.save_weights` writes: G.pth, D.pth, G_ema.pth,
G_optim.pth, D_optim.pth and state_dict.pth (with --suffix=S: G_S.pth, ...). Every tensor is
mapped onto our train state; a tensor that is missing, unexpected or of another shape than
the config implies is reported by name and nothing is written. OUT then holds an Orbax
checkpoint at BigGAN-PyTorch's iteration, with its Adam moments, so

  python -m biggan_jax.main --config=<the same config> --workdir=OUT

continues training where BigGAN-PyTorch stopped, and biggan_jax.sample / .evaluate read it.
--ema_only imports a lone G_ema.pth (a released generator): G and G-EMA from it, D freshly
initialised, Adam at zero. The files are read with a restricted unpickler: tensors and
plain data only, nothing in them is executed. OUT/imported.json records the source files'
SHA-256 and any difference between their training recipe and the config.

--from=tfhub_biggan_deep reads a TF-Hub BigGAN-deep generator (biggan-deep-128/256/512) in
the PyPI package pytorch-pretrained-biggan's files, pytorch_model.bin and config.json (see
biggan_jax/tfhub_weights.py), with the `:tfhub` preset of the module's resolution. OUT then
samples (`biggan_jax.sample --truncation=T`, 0 < T <= 1, as the module takes it) and
evaluates; it has no discriminator and does not train.
"""
from __future__ import annotations

from absl import app, flags

from gan_core.cli import define_training_flags, quiet_library_logs, run_app

define_training_flags()
flags.DEFINE_enum("from", "biggan_pytorch", ["biggan_pytorch", "tfhub_biggan_deep"],
                  "Source format.")
flags.DEFINE_string("weights_dir", None, "Folder with the BigGAN-PyTorch .pth files, or with "
                    "pytorch-pretrained-biggan's pytorch_model.bin and config.json.")
flags.DEFINE_bool("ema_only", False, "Import a lone G_ema.pth (no D, no optimizer state).")
flags.DEFINE_string("suffix", "", "utils.save_weights' name_suffix (e.g. best0, copy1).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  from gan_core.errors import UserError
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.config is None or not FLAGS.workdir or not FLAGS.weights_dir:
    raise app.UsageError("--config, --weights_dir and --workdir are required")
  source = FLAGS["from"].value
  if source == "tfhub_biggan_deep" and (FLAGS.ema_only or FLAGS.suffix):
    raise UserError("--ema_only and --suffix name BigGAN-PyTorch's files; "
                    "--from=tfhub_biggan_deep reads pytorch_model.bin and config.json")
  if not FLAGS.library_logs:
    quiet_library_logs()
  if source == "tfhub_biggan_deep":
    from biggan_jax.tfhub_weights import import_tfhub_biggan_deep
    result = import_tfhub_biggan_deep(FLAGS.weights_dir, FLAGS.config, FLAGS.workdir)
  else:
    from biggan_jax.pytorch_checkpoint import import_biggan_pytorch
    result = import_biggan_pytorch(FLAGS.weights_dir, FLAGS.config, FLAGS.workdir,
                                   ema_only=FLAGS.ema_only, suffix=FLAGS.suffix)
  print(f"imported {', '.join(sorted(result.files))} from {FLAGS.weights_dir} "
        f"(G {result.g_parameters:,} / D {result.d_parameters:,} parameters) as step "
        f"{result.step} in {result.workdir}")
  if result.recipe_differences:
    print("note: their training settings differ from this config (training continues with "
          "the config's):\n  " + "\n  ".join(result.recipe_differences))


if __name__ == "__main__":
  run_app(main)
