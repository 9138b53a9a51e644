r"""Sampling and checkpoint evaluation for both GANs: G-EMA restored alone, latents in,
images out. `biggan_jax.sample` / `pggan_jax.sample` and `biggan_jax.evaluate` /
`pggan_jax.evaluate` are this module with their model's `Task`.

  python -m biggan_jax.sample --workdir=DIR --out=S.npz|S.png [--num_samples=64] [--seed=0]
      [--truncation=T] [--labels=3,3,7|random] [--grid] [--class_sheet]
      [--interpolate=STEPS] [--standing_stats=BATCHES] [--latents=FILE.npz] [--step=N]
  python -m biggan_jax.evaluate --workdir=DIR [--step=N] [--num_samples=50000]
      [--truncation=T] [--metrics=fid,is] [--standing_stats=BATCHES]

Sampling: `.npz` output holds `images` (uint8 NHWC), `z` (the latents) and, for a
conditional model, `labels` (int32); `.png` output is a grid. `--latents=FILE.npz`
renders given latents: arrays `z` (N x latent size) and, when the model is
conditional, `y` (N class ids) -- a sampling `.npz` is such a file. The same
arguments give the same bytes. The TF-Hub BigGAN-deep generators take `--truncation`
their way: z = T * TruncNormal(-2, 2) and BN statistics stored for T (also with
`--latents`, where T only picks the statistics). PGGAN samples at the resolution and fade-in of the
schedule at that checkpoint.

Evaluation: the metrics (default: the run's `config.eval.metrics`) of `--num_samples`
G-EMA samples against the run's dataset, sharded over every device and process;
printed, and appended as one JSON line to `DIR/evaluations.jsonl` (step, settings,
values). Dataset statistics are cached as during training.

Only the generator's fields of the train state (G-EMA, and for BigGAN its BN/SN state)
are read from the checkpoint. A checkpoint of the other model is refused.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import app, flags

from gan_core import compilation_cache
from gan_core.errors import UserError

FLAGS = flags.FLAGS


class SampleError(UserError, ValueError):
  """A sampling request the checkpoint or the arguments cannot satisfy."""


@dataclasses.dataclass
class Generator:
  """G-EMA of one checkpoint, ready to generate on `task.trainer.mesh`."""
  task: Any  # A built `gan_core.training.Task`.
  state: Any  # The train state with only `task.generator_fields` read.
  plan: Any  # The `Plan` at the checkpoint (PGGAN: resolution and fade-in).
  step: int
  meta: dict[str, Any]

  @property
  def num_classes(self) -> int:
    return self.task.num_classes

  @property
  def mesh(self):
    return self.task.trainer.mesh


def load(task_class: Callable, workdir: str, step: int | None = None, *,
         all_devices: bool = False) -> Generator:
  """G-EMA of `workdir`'s checkpoint `step` (default: latest) for `task_class`'s model.

  On one device of one process (sampling), or with `all_devices` over every device of
  every process (evaluation); in a multi-process run always every device.
  """
  from gan_core import parallel
  from gan_core.checkpointing import CheckpointError, open_checkpoint
  from gan_core.training import plan_position_of
  kind = task_class.kind
  checkpoints, step, meta = open_checkpoint(workdir, step, f"python -m {kind_package(kind)}.main")
  try:
    if meta.get("model") != kind:
      raise CheckpointError(f"{checkpoints.directory!r} holds a {meta.get('model')!r} checkpoint, "
                            f"not {kind!r}: use python -m {kind_package(meta.get('model'))}."
                            "sample / .evaluate for it")
    mesh = parallel.make_mesh() if all_devices else parallel.sampling_mesh()
    saved = ml_collections.ConfigDict(meta["config"])
    if task_class.default_config is not None:  # Fields added since the checkpoint was written.
      saved = fill_absent(saved, task_class.default_config())
    config = task_class.sampling_config(saved, mesh.devices.size)
    task = task_class(config)
    task.build(meta["num_classes"], mesh)
    state = checkpoints.restore_fields(step, task.abstract_state(), task.generator_fields)
  finally:
    checkpoints.close()
  return Generator(task, state, task.plan(plan_position_of(meta)), step, meta)


def fill_absent(config: ml_collections.ConfigDict,
                defaults: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with every field it lacks (at any depth) taken from `defaults`.

  A checkpoint's saved config predates the fields added later; each such field's default
  is the behaviour the checkpoint was trained with (`absent_config_means` lists them).
  """
  merged = ml_collections.ConfigDict(config.to_dict())
  for key, value in defaults.items():
    if key not in merged:
      merged[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(
        merged[key], ml_collections.ConfigDict):
      merged[key] = fill_absent(merged[key], value)
  return merged


def kind_package(kind: str | None) -> str:
  return {"biggan": "biggan_jax", "pggan": "pggan_jax"}.get(kind or "", f"<{kind}>")


def parse_labels(spec: str, count: int, num_classes: int, key: jax.Array) -> np.ndarray:
  """'random' (uniform over the classes; zeros for an unconditional model) or
  comma-separated class ids, repeated cyclically up to `count`."""
  if spec == "random":
    return np.asarray(jax.random.randint(key, (count,), 0, max(num_classes, 1), np.int32))
  try:
    ids = [int(x) for x in spec.split(",") if x.strip()]
  except ValueError as e:
    raise SampleError(f"--labels={spec!r}: expected 'random' or comma-separated integers") from e
  if not num_classes:
    raise SampleError("--labels given, but the model is unconditional")
  if not ids:
    raise SampleError("--labels is empty")
  bad = [i for i in ids if not 0 <= i < num_classes]
  if bad:
    raise SampleError(f"--labels {bad} outside [0, {num_classes}) (the model has {num_classes} "
                      "classes)")
  return np.resize(np.asarray(ids, np.int32), count)


def read_latents(path: str, generator: Generator) -> tuple[np.ndarray, np.ndarray]:
  """(z, y) from an `.npz` with `z` (N x latent size) and, if conditional, `y` (N ids)."""
  task = generator.task
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except (OSError, ValueError) as e:
    raise SampleError(f"cannot read --latents={path!r}: {e}") from e
  if "z" not in arrays:
    raise SampleError(f"--latents={path!r} has arrays {sorted(arrays)}; it needs 'z' "
                      f"(N x {task.latent_size}) and, for a conditional model, 'y' (N class ids)")
  z = arrays["z"]
  if z.ndim != 2 or z.shape[1] != task.latent_size or not len(z):
    raise SampleError(f"--latents: z has shape {z.shape}; this model needs (N, "
                      f"{task.latent_size}) with N > 0")
  if not np.issubdtype(z.dtype, np.floating) or not np.all(np.isfinite(z)):
    raise SampleError(f"--latents: z must be finite floating-point values (got {z.dtype})")
  if task.num_classes:
    y = arrays.get("y", arrays.get("labels"))
    if y is None:
      raise SampleError(f"--latents={path!r}: the model is conditional "
                        f"({task.num_classes} classes); add 'y' (N class ids)")
    y = np.asarray(y)
    if y.shape != (len(z),) or not np.issubdtype(y.dtype, np.integer):
      raise SampleError(f"--latents: y must be {len(z)} integer class ids, got {y.dtype} "
                        f"{y.shape}")
    if y.min() < 0 or y.max() >= task.num_classes:
      raise SampleError(f"--latents: y outside [0, {task.num_classes})")
  else:
    if "y" in arrays:
      raise SampleError("--latents has 'y', but the model is unconditional; remove it")
    y = np.zeros((len(z),), np.int32)
  return z.astype(np.float32), y.astype(np.int32)


def generate_images(generator: Generator, z: np.ndarray, y: np.ndarray,
                    batch_size: int, truncation: float | None = None) -> np.ndarray:
  """uint8 images of latents `z` and labels `y` (the same on every process), in batches
  of one compiled shape (the last one padded; G-EMA has no batch-dependent layers)."""
  from gan_core import monitoring, parallel
  out = []
  for start in range(0, len(z), batch_size):
    zb, yb = z[start:start + batch_size], y[start:start + batch_size]
    pad = batch_size - len(zb) if len(z) > batch_size else 0
    if pad:
      zb = np.concatenate([zb, np.zeros((pad,) + zb.shape[1:], zb.dtype)])
      yb = np.concatenate([yb, np.zeros((pad,), yb.dtype)])
    images = generator.task.generate(generator.state, parallel.put_replicated(zb, generator.mesh),
                                     parallel.put_replicated(yb, generator.mesh), generator.plan,
                                     truncation)
    out.append(monitoring.to_host(images)[:len(zb) - pad])
  return np.concatenate(out)


def describe(generator: Generator) -> str:
  plan = generator.plan
  alpha = dict(plan.info).get("alpha")
  text = f"{plan.resolution}x{plan.resolution}"
  return text + (f", alpha {alpha:.3f}" if alpha is not None else "")


# ------------------------------------------------------------------------ command lines

def _define(kind: str, name: str, default: Any, help_text: str) -> None:
  """Defines a flag unless it exists (the samplers and evaluators of both models may be
  imported into one process, e.g. by the tests)."""
  if name not in FLAGS:
    getattr(flags, f"DEFINE_{kind}")(name, default, help_text)


def _define_common_flags() -> None:
  from gan_core.cli import define_compilation_cache_flag, define_distributed_flags
  _define("string", "workdir", None, "Training workdir (its checkpoints/ are read).")
  _define("integer", "step", None, "Checkpoint step to use (default: latest).")
  _define("float", "truncation", 0.0, "Truncation threshold: |z_i| > T is resampled; 0 = off. "
          "TF-Hub BigGAN-deep: z = T * TruncNormal(-2, 2) and G's BN statistics at T "
          "(0 < T <= 1; 0 means 1); with --latents it only picks the statistics.")
  _define("integer", "standing_stats", 0, "BigGAN: if > 0, replace BN running averages by "
          "standing statistics over this many batches (BigGAN's sampling recipe).")
  _define("integer", "batch_size", 64, "Generation batch size.")
  define_compilation_cache_flag()
  if "coordinator_address" not in FLAGS:
    define_distributed_flags()


def _with_standing_stats(generator: Generator, key: jax.Array) -> Generator:
  if FLAGS.standing_stats > 0:
    state = generator.task.standing_stats(generator.state, key, FLAGS.standing_stats,
                                          min(FLAGS.batch_size, 256))
    generator = dataclasses.replace(generator, state=state)
  return generator


def sample_main(task_class: Callable) -> Callable[[list[str]], None]:
  """The `main` of `python -m <model>.sample` (see the module docstring)."""
  _define_common_flags()
  _define("string", "out", None, "Output file: FILE.npz (images, z, labels) or FILE.png (grid).")
  _define("integer", "num_samples", 64, "Number of samples (per class with --class_sheet; "
          "number of interpolation rows with --interpolate).")
  _define("integer", "seed", 0, "Sampling seed.")
  _define("string", "labels", "random", "Conditional models: 'random' or comma-separated "
          "class ids (repeated cyclically up to --num_samples).")
  _define("bool", "grid", False, "With a .npz output, also write FILE.png with a grid.")
  _define("bool", "class_sheet", False, "One row per class, --num_samples columns.")
  _define("integer", "interpolate", 0, "If > 1: --num_samples rows, each a latent "
          "interpolation in this many steps between two samples (of one class).")
  _define("string", "latents", None, "Render these latents: FILE.npz with 'z' (N x latent "
          "size) and, for a conditional model, 'y' (N class ids).")

  def main(argv: list[str]) -> None:
    from gan_core.cli import initialize_distributed
    from gan_core.images import make_grid, save_npz_deterministic, save_png
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir or not FLAGS.out:
      raise app.UsageError("--workdir and --out are required")
    if not FLAGS.out.endswith((".npz", ".png")):
      raise app.UsageError("--out must end in .npz or .png")
    if FLAGS.num_samples <= 0 or FLAGS.batch_size <= 0:
      raise app.UsageError("--num_samples and --batch_size must be positive")
    if FLAGS.latents and (FLAGS.class_sheet or FLAGS.interpolate > 1
                          or FLAGS.labels != "random"):
      raise app.UsageError("--latents gives z and y: it does not combine with --labels, "
                           "--class_sheet or --interpolate")
    initialize_distributed()
    compilation_cache.enable(FLAGS.compilation_cache)
    generator = load(task_class, FLAGS.workdir, FLAGS.step)
    task = generator.task
    if FLAGS.latents and FLAGS.truncation and not task.truncation_in_model:
      raise app.UsageError("--latents gives z: --truncation (which draws z) does not apply; "
                           "only models whose statistics depend on the truncation (TF-Hub "
                           "BigGAN-deep) take both")
    k_z, k_y, k_stats, k_end = jax.random.split(jax.random.PRNGKey(FLAGS.seed), 4)
    generator = _with_standing_stats(generator, k_stats)
    truncation = FLAGS.truncation or None
    columns = None
    if FLAGS.latents:
      z, labels = read_latents(FLAGS.latents, generator)
    else:
      if FLAGS.class_sheet:
        if not task.num_classes:
          raise SampleError("--class_sheet needs a conditional model; this one is "
                            "unconditional")
        labels = np.repeat(np.arange(task.num_classes, dtype=np.int32), FLAGS.num_samples)
        columns = FLAGS.num_samples
      else:
        labels = parse_labels(FLAGS.labels, FLAGS.num_samples, task.num_classes, k_y)
      z = np.asarray(task.latents(k_z, len(labels), truncation)[0])
      if FLAGS.interpolate > 1:
        z_end = np.asarray(task.latents(k_end, len(labels), truncation)[0])
        t = np.linspace(0.0, 1.0, FLAGS.interpolate, dtype=np.float32)[None, :, None]
        z = (z[:, None] * (1 - t) + z_end[:, None] * t).reshape(-1, z.shape[-1])
        labels = np.repeat(labels, FLAGS.interpolate)
        columns = FLAGS.interpolate
    images = generate_images(generator, z, labels, FLAGS.batch_size, truncation)
    if jax.process_index() > 0:
      return  # Every process generated (collectively); process 0 writes.
    if FLAGS.out.endswith(".npz"):
      arrays = {"images": images, "z": z.astype(np.float32)}
      if task.num_classes:
        arrays["labels"] = labels.astype(np.int32)
      save_npz_deterministic(FLAGS.out, **arrays)
    if FLAGS.out.endswith(".png") or FLAGS.grid:
      save_png(os.path.splitext(FLAGS.out)[0] + ".png", make_grid(images, columns))
    print(f"wrote {len(images)} samples ({describe(generator)}) from step {generator.step} "
          f"to {FLAGS.out}")

  return main


EVALUATIONS_FILE = "evaluations.jsonl"


def evaluate_main(task_class: Callable) -> Callable[[list[str]], None]:
  """The `main` of `python -m <model>.evaluate` (see the module docstring)."""
  _define_common_flags()
  _define("integer", "num_samples", 50_000, "Samples to evaluate (50000 as in the papers).")
  _define("string", "metrics", None, "Comma-separated subset of fid,is,kid,swd,ms_ssim "
          "(default: the run's config.eval.metrics).")
  _define("integer", "seed", None, "Latent seed (default: the run's config.eval.seed).")
  _define("string", "inception_weights", None, "pytorch-fid's "
          "pt_inception-2015-12-05-6726825d.pth (default: the run's, the environment, cache).")
  _define("bool", "download_inception", False, "Download the Inception weights if missing.")
  _define("string", "stats_dir", None, "Dataset statistics cache (default: the run's).")

  def main(argv: list[str]) -> None:
    from gan_core import files, parallel
    from gan_core.cli import initialize_distributed
    from gan_core.eval import weights
    from gan_core.eval.evaluator import Evaluator
    from gan_core.training import real_batches_of
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
      raise app.UsageError("--workdir is required")
    if FLAGS.num_samples <= 1:
      raise app.UsageError("--num_samples must be at least 2")
    initialize_distributed()
    compilation_cache.enable(FLAGS.compilation_cache)
    generator = load(task_class, FLAGS.workdir, FLAGS.step, all_devices=True)
    generator = _with_standing_stats(generator, jax.random.PRNGKey(0))
    config = ml_collections.ConfigDict(generator.meta["config"])
    eval_config = ml_collections.ConfigDict(config.eval.to_dict())
    eval_config.num_samples = FLAGS.num_samples
    eval_config.batch_size = FLAGS.batch_size
    for name in ("metrics", "seed", "inception_weights", "stats_dir"):
      if getattr(FLAGS, name) is not None:
        eval_config[name] = getattr(FLAGS, name)
    eval_config.download_inception = FLAGS.download_inception or eval_config.download_inception
    evaluator = Evaluator(eval_config, generator.mesh, dataset_id=config.dataset,
                          real_batches=real_batches_of(config), catch_errors=False)
    task, truncation = generator.task, FLAGS.truncation or None
    latents = jax.jit(lambda key: task.latents(key, evaluator.batch_size, truncation),
                      out_shardings=parallel.batch_sharding(generator.mesh))
    start = time.time()
    try:
      results = evaluator.measure(
          lambda key: task.generate(generator.state, *latents(key), generator.plan, truncation),
          resolution=generator.plan.resolution)
    except (weights.InceptionWeightsUnavailable, weights.InceptionWeightsError) as e:
      raise SampleError(f"{e} (or pass --inception_weights=FILE / --download_inception)") from e
    record = {"step": generator.step, "resolution": generator.plan.resolution,
              **dict(generator.plan.info), "num_samples": FLAGS.num_samples,
              "truncation": FLAGS.truncation, "standing_stats": FLAGS.standing_stats,
              "seed": eval_config.seed, **results, "seconds": round(time.time() - start, 1)}
    if jax.process_index() == 0:
      for name, value in results.items():
        print(f"{name}: {value:.10g}", flush=True)
      files.append_text(os.path.join(FLAGS.workdir, EVALUATIONS_FILE), json.dumps(record) + "\n")

  return main
