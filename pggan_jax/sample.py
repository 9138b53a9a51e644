r"""Samples from a trained PGGAN: the latest checkpoint's G-EMA at its resolution.

  python -m pggan_jax.sample --workdir=DIR --out=samples.npz [--num_samples=64]
      [--seed=0] [--grid] [--interpolate=STEPS] [--labels=3,3,7|random] [--step=N]

The generator runs at the resolution (and fade-in alpha) of the schedule at
that checkpoint. `.npz` output holds `images` (uint8 NHWC) and, for a
conditional model, `labels` (int32); `.png` output is a grid. With
`--interpolate=STEPS`, each of the --num_samples rows walks linearly from one
latent to another in STEPS images. The same arguments give the same bytes.
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from gan_core.cli import define_distributed_flags, initialize_distributed, parse_flags

flags.DEFINE_string("workdir", None, "Training workdir (its checkpoints/ are read).")
flags.DEFINE_string("out", None, "Output file: FILE.npz or FILE.png (grid).")
flags.DEFINE_integer("num_samples", 64, "Number of samples (rows with --interpolate).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_bool("grid", False, "With a .npz output, also write FILE.png with a grid.")
flags.DEFINE_integer("interpolate", 0, "If > 1: latent interpolations in this many steps.")
flags.DEFINE_string("labels", "random", "Conditional models: 'random' or comma-separated "
                    "class ids (repeated cyclically).")
flags.DEFINE_integer("batch_size", 64, "Generation batch size.")
flags.DEFINE_integer("step", None, "Checkpoint step to use (default: latest).")
define_distributed_flags()
FLAGS = flags.FLAGS


class SampleError(ValueError):
  pass


def load_generator(workdir: str, step: int | None = None):
  """Returns (trainer, ema_params, phase, step) from a workdir's checkpoint."""
  from gan_core import parallel
  from gan_core.checkpointing import open_checkpoint
  from gan_core.training import plan_position_of
  from pggan_jax import schedule
  from pggan_jax.train import PGGANTrainer
  checkpoints, step, meta = open_checkpoint(workdir, step, "python -m pggan_jax.main")
  if meta.get("model") != "pggan":
    raise SampleError(f"{checkpoints.directory!r} holds a {meta.get('model')!r} checkpoint, not PGGAN")
  config = ml_collections.ConfigDict(meta["config"])
  mesh = parallel.sampling_mesh()
  trainer = PGGANTrainer(_sampling_batches(config, mesh.devices.size), meta["num_classes"], mesh)
  state = checkpoints.restore_state(step, trainer.abstract_state())
  checkpoints.close()
  phase = schedule.phase_at(plan_position_of(meta), config)
  return trainer, state.ema_params, phase, step


def _sampling_batches(config: ml_collections.ConfigDict,
                      num_devices: int) -> ml_collections.ConfigDict:
  """The training batch sizes need not split over the sampling devices; the trainer checks
  them, so give it the smallest batch that does (and fits the minibatch-stddev groups)."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key in config.batch_size:
    config.batch_size[key] = math.lcm(max(config.model.mbstd_group_size, 1), num_devices)
  return config


def parse_labels(spec: str, count: int, num_classes: int, key: jax.Array) -> np.ndarray:
  if spec == "random":
    return np.asarray(jax.random.randint(key, (count,), 0, max(num_classes, 1), jnp.int32))
  try:
    ids = [int(x) for x in spec.split(",") if x.strip()]
  except ValueError as e:
    raise SampleError(f"--labels={spec!r}: expected 'random' or comma-separated integers") from e
  if not num_classes:
    raise SampleError("--labels given, but the model is unconditional")
  bad = [i for i in ids if not 0 <= i < num_classes]
  if not ids or bad:
    raise SampleError(f"--labels must be ids in [0, {num_classes}); got {spec!r}")
  return np.resize(np.asarray(ids, np.int32), count)


def generate(trainer, params, phase, z: np.ndarray, labels: np.ndarray,
             batch_size: int) -> np.ndarray:
  from gan_core import monitoring, parallel
  out = []
  for start in range(0, len(z), batch_size):
    zb, yb = z[start:start + batch_size], labels[start:start + batch_size]
    pad = batch_size - len(zb) if len(z) > batch_size else 0
    if pad:  # One compiled shape; G has no batch-dependent layers.
      zb = np.concatenate([zb, np.zeros((pad,) + zb.shape[1:], zb.dtype)])
      yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
    images = trainer.generate(params, parallel.put_replicated(zb, trainer.mesh),
                              parallel.put_replicated(yb, trainer.mesh),
                              parallel.put_replicated(np.float32(phase.alpha), trainer.mesh),
                              res=phase.resolution, fading=phase.fading)
    out.append(monitoring.to_host(images)[:len(zb) - pad])
  return np.concatenate(out)


def main(argv):
  from gan_core.images import make_grid, save_npz_deterministic, save_png
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir or not FLAGS.out:
    raise app.UsageError("--workdir and --out are required")
  if not FLAGS.out.endswith((".npz", ".png")):
    raise app.UsageError("--out must end in .npz or .png")
  if FLAGS.num_samples <= 0 or FLAGS.batch_size <= 0:
    raise app.UsageError("--num_samples and --batch_size must be positive")
  from gan_core.checkpointing import CheckpointError
  initialize_distributed()
  try:
    trainer, params, phase, step = load_generator(FLAGS.workdir, FLAGS.step)
    k_z, k_y, k_end = jax.random.split(jax.random.PRNGKey(FLAGS.seed), 3)
    labels = parse_labels(FLAGS.labels, FLAGS.num_samples, trainer.num_classes, k_y)
  except (SampleError, CheckpointError) as e:
    raise app.UsageError(str(e))
  n, dim = FLAGS.num_samples, trainer.latent_size
  z = np.asarray(jax.random.normal(k_z, (n, dim), jnp.float32))
  columns = None
  if FLAGS.interpolate > 1:
    z_end = np.asarray(jax.random.normal(k_end, (n, dim), jnp.float32))
    t = np.linspace(0.0, 1.0, FLAGS.interpolate, dtype=np.float32)[None, :, None]
    z = (z[:, None] * (1 - t) + z_end[:, None] * t).reshape(-1, dim)
    labels = np.repeat(labels, FLAGS.interpolate)
    columns = FLAGS.interpolate
  images = generate(trainer, params, phase, z, labels, FLAGS.batch_size)
  if jax.process_index() > 0:
    return  # Every process generated (collectively); process 0 writes.
  if FLAGS.out.endswith(".npz"):
    arrays = {"images": images}
    if trainer.num_classes:
      arrays["labels"] = labels.astype(np.int32)
    save_npz_deterministic(FLAGS.out, **arrays)
  if FLAGS.out.endswith(".png") or FLAGS.grid:
    save_png(os.path.splitext(FLAGS.out)[0] + ".png", make_grid(images, columns))
  print(f"wrote {len(images)} samples ({phase.resolution}x{phase.resolution}, alpha "
        f"{phase.alpha:.3f}) from step {step} to {FLAGS.out}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
