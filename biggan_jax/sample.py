r"""Samples from a trained BigGAN: restores the latest checkpoint's G-EMA.

  python -m biggan_jax.sample --workdir=DIR --out=samples.npz [--num_samples=64]
      [--seed=0] [--truncation=T] [--labels=3,3,7|random] [--grid]
      [--class_sheet] [--interpolate=STEPS] [--standing_stats=BATCHES]

`.npz` output holds `images` (uint8 NHWC) and `labels` (int32); `.png` output
is a grid. The same arguments give the same bytes.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from gan_core.cli import define_distributed_flags, initialize_distributed, parse_flags

flags.DEFINE_string("workdir", None, "Training workdir (its checkpoints/ are read).")
flags.DEFINE_string("out", None, "Output file: FILE.npz (images + labels) or FILE.png (grid).")
flags.DEFINE_integer("num_samples", 64, "Number of samples (per class with --class_sheet; "
                     "number of interpolation rows with --interpolate).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_float("truncation", 0.0, "Truncation threshold: |z_i| > T is resampled; 0 = off.")
flags.DEFINE_string("labels", "random", "'random' or comma-separated class ids (repeated "
                    "cyclically up to --num_samples).")
flags.DEFINE_bool("grid", False, "With a .npz output, also write FILE.png with a grid.")
flags.DEFINE_bool("class_sheet", False, "One row per class, --num_samples columns.")
flags.DEFINE_integer("interpolate", 0, "If > 1: --num_samples rows, each a latent "
                     "interpolation in this many steps between two samples of one class.")
flags.DEFINE_integer("standing_stats", 0, "If > 0: replace BN running averages by standing "
                     "statistics over this many batches (BigGAN's sampling recipe).")
flags.DEFINE_integer("batch_size", 256, "Generation batch size.")
flags.DEFINE_integer("step", None, "Checkpoint step to use (default: latest).")
define_distributed_flags()
FLAGS = flags.FLAGS


class SampleError(ValueError):
  pass


def parse_labels(spec: str, count: int, num_classes: int, key: jax.Array) -> np.ndarray:
  if spec == "random":
    return np.asarray(jax.random.randint(key, (count,), 0, num_classes, jnp.int32))
  try:
    ids = [int(x) for x in spec.split(",") if x.strip()]
  except ValueError as e:
    raise SampleError(f"--labels={spec!r}: expected 'random' or comma-separated integers") from e
  if not ids:
    raise SampleError("--labels is empty")
  bad = [i for i in ids if not 0 <= i < num_classes]
  if bad:
    raise SampleError(f"--labels {bad} outside [0, {num_classes}) (the model has {num_classes} "
                      "classes)")
  return np.resize(np.asarray(ids, np.int32), count)


def load_generator(workdir: str, step: int | None = None):
  """Returns (trainer, ema_params, ema_state, step) from a workdir's checkpoint."""
  from biggan_jax.train import BigGANTrainer
  from gan_core import parallel
  from gan_core.checkpointing import open_checkpoint
  checkpoints, step, meta = open_checkpoint(workdir, step, "python -m biggan_jax.main")
  config = ml_collections.ConfigDict(meta["config"])
  mesh = parallel.sampling_mesh()
  # The training batch need not split over the sampling devices; the trainer checks it.
  config.batch_size, config.num_accumulations = mesh.devices.size, 1
  trainer = BigGANTrainer(config, meta["num_classes"], mesh)
  state = checkpoints.restore_state(step, trainer.abstract_state())
  checkpoints.close()
  return trainer, state.ema_params, state.ema_state, step


def generate(trainer, params, variables, z: np.ndarray, labels: np.ndarray,
             batch_size: int) -> np.ndarray:
  from gan_core import monitoring, parallel
  out = []
  for start in range(0, len(z), batch_size):
    zb, yb = z[start:start + batch_size], labels[start:start + batch_size]
    pad = batch_size - len(zb) if len(z) > batch_size else 0
    if pad:  # Keep one compiled shape; BN uses running statistics, so padding is inert.
      zb = np.concatenate([zb, np.zeros((pad,) + zb.shape[1:], zb.dtype)])
      yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
    images = monitoring.to_host(trainer.generate(
        params, variables, parallel.put_replicated(zb, trainer.mesh),
        parallel.put_replicated(yb, trainer.mesh)))
    out.append(images[:len(images) - pad])
  return np.concatenate(out)


def main(argv):
  from biggan_jax.train import sample_latents
  from gan_core.images import make_grid, save_npz_deterministic, save_png
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir or not FLAGS.out:
    raise app.UsageError("--workdir and --out are required")
  if not FLAGS.out.endswith((".npz", ".png")):
    raise app.UsageError("--out must end in .npz or .png")
  if FLAGS.num_samples <= 0:
    raise app.UsageError("--num_samples must be positive")
  from gan_core.checkpointing import CheckpointError
  initialize_distributed()
  try:
    trainer, params, variables, step = load_generator(FLAGS.workdir, FLAGS.step)
  except (SampleError, CheckpointError) as e:
    raise app.UsageError(str(e))
  key = jax.random.PRNGKey(FLAGS.seed)
  k_z, k_y, k_stats, k_end = jax.random.split(key, 4)
  if FLAGS.standing_stats > 0:
    variables = trainer.standing_stats(params, variables, k_stats, FLAGS.standing_stats,
                                       min(FLAGS.batch_size, 256))
  num_classes, dim_z, n = trainer.num_classes, trainer.models.dim_z, FLAGS.num_samples
  truncation = FLAGS.truncation or None
  columns = None
  try:
    if FLAGS.class_sheet:
      labels = np.repeat(np.arange(num_classes, dtype=np.int32), n)
      columns = n
    else:
      labels = parse_labels(FLAGS.labels, n, num_classes, k_y)
  except SampleError as e:
    raise app.UsageError(str(e))
  z = np.asarray(sample_latents(k_z, len(labels), dim_z, num_classes, truncation)[0])
  if FLAGS.interpolate > 1:
    z_end = np.asarray(sample_latents(k_end, len(labels), dim_z, num_classes, truncation)[0])
    t = np.linspace(0.0, 1.0, FLAGS.interpolate, dtype=np.float32)[None, :, None]
    z = (z[:, None] * (1 - t) + z_end[:, None] * t).reshape(-1, dim_z)
    labels = np.repeat(labels, FLAGS.interpolate)
    columns = FLAGS.interpolate
  images = generate(trainer, params, variables, z, labels, FLAGS.batch_size)
  if jax.process_index() > 0:
    return  # Every process generated (collectively); process 0 writes.
  if FLAGS.out.endswith(".npz"):
    save_npz_deterministic(FLAGS.out, images=images, labels=labels.astype(np.int32))
  if FLAGS.out.endswith(".png") or FLAGS.grid:
    save_png(os.path.splitext(FLAGS.out)[0] + ".png", make_grid(images, columns))
  print(f"wrote {len(images)} samples from step {step} to {FLAGS.out}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
