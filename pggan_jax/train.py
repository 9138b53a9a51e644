"""PGGAN training: the train state, one jitted iteration per (resolution, fading), the loop.

One call of `train_iteration` is one official training round: `num_d_steps`
D updates (each with the G-EMA update, as the official code runs them
together) and one G update, compiled as one XLA program with the state donated.
The resolution and whether a fade-in is running are static (one compilation
each); alpha and the learning rate are traced scalars. The loop re-evaluates
the schedule every `minibatch_repeats` iterations from the number of real
images seen, resets Adam when the level of detail changes, and rebuilds the
input iterator when the resolution or batch size does.
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gan_core import checkpointing, files, loops, monitoring, parallel
from gan_core.data import build_pipeline
from gan_core.errors import ConfigError
from gan_core.ema import ema_update
from gan_core.eval.evaluator import Evaluator
from gan_core.guard import Guard, rollback_key
from gan_core.images import images_to_uint8, make_grid, save_png
from gan_core.preemption import PreemptionFlag
from gan_core.workdir_lock import exclusive_workdir
from pggan_jax import losses, schedule
from pggan_jax.layers import downscale2d, upscale2d
from pggan_jax.models import build_models


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # Completed iterations.
  images_seen: jax.Array  # Real images shown to D so far (drives the schedule and the data).
  skipped_updates: jax.Array  # D and G updates skipped for non-finite gradients, in total.
  rng: jax.Array  # Base key; iteration i uses fold_in(rng, i).
  g_params: Any
  d_params: Any
  g_opt_state: Any
  d_opt_state: Any
  ema_params: Any


class TFAdamState(NamedTuple):
  count: jax.Array
  mu: Any
  nu: Any


def tf_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
  """Adam as TF1's AdamOptimizer computes it (the official code's optimizer).

  The update direction is sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps): eps is
  added to the uncorrected sqrt(v), unlike optax.adam. Multiply by -lr to apply.
  """
  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return TFAdamState(jnp.zeros((), jnp.int32), zeros, zeros)

  def update(grads, state, params=None):
    del params
    count = state.count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.nu, grads)
    t = count.astype(jnp.float32)
    step = jnp.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
    updates = jax.tree.map(lambda m, v: step * m / (jnp.sqrt(v) + eps), mu, nu)
    return updates, TFAdamState(count, mu, nu)

  return optax.GradientTransformation(init, update)


def images_to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def fade_reals(reals: jax.Array, alpha: jax.Array) -> jax.Array:
  """Blends reals with their 2x2-averaged, re-upsampled version (weight 1 - alpha), as D's
  input is blended during a fade-in (the official `process_reals` FadeLOD step)."""
  coarse = upscale2d(downscale2d(reals))
  return reals + (coarse - reals) * (1.0 - alpha)


class PGGANTrainer:
  """The models, optimizer and compiled functions for one config and mesh."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int, mesh: Mesh):
    schedule.validate(config)
    self.config = config
    self.mesh = mesh
    self.num_classes = num_classes
    self.generator, self.discriminator = build_models(config.model, num_classes)
    self.latent_size = self.generator.latent_size
    self.resolutions = [config.initial_resolution * 2 ** i for i in range(
        int(math.log2(config.model.resolution // config.initial_resolution)) + 1)]
    group = config.model.mbstd_group_size
    for res in self.resolutions:
      batch = config.batch_size[f"r{res}"]
      parallel.check_batch_divisible(batch, mesh, f"batch_size.r{res}")
      if group > 1 and batch % min(group, batch):
        raise ConfigError(f"batch_size.r{res}={batch} must be a multiple of the minibatch-stddev "
                         f"group size {group} (model.mbstd_group_size)")
    self.unroll = loops.should_unroll(config.scan_unroll)
    self.tx = tf_adam(config.adam_b1, config.adam_b2, config.adam_eps)
    self.replicated = parallel.replicated(mesh)
    self.batch_sharding = NamedSharding(mesh, P(parallel.DATA_AXIS))
    self.init_state = jax.jit(self._init_state, static_argnums=0,
                              out_shardings=self.replicated)
    self.train_iteration = jax.jit(self._train_iteration, static_argnames=("res", "fading"),
                                   donate_argnums=0,
                                   out_shardings=(self.replicated, self.replicated))
    self.reset_optimizers = jax.jit(self._reset_optimizers, donate_argnums=0,
                                    out_shardings=self.replicated)
    self.generate = jax.jit(self._generate, static_argnames=("res", "fading"))

  # ---------------------------------------------------------------- state
  def _init_state(self, seed: int) -> TrainState:
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    kg, kd = jax.random.split(init_key)
    res = self.config.model.resolution
    z = jnp.zeros((2, self.latent_size), jnp.float32)
    labels = jnp.zeros((2,), jnp.int32) if self.num_classes else None
    g_params = self.generator.init(kg, z, labels)["params"]
    images = jnp.zeros((2, res, res, self.config.model.num_channels), jnp.float32)
    d_params = self.discriminator.init(kd, images)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), images_seen=jnp.zeros((), jnp.int32),
                      skipped_updates=jnp.zeros((), jnp.int32), rng=train_key,
                      g_params=g_params, d_params=d_params,
                      g_opt_state=self.tx.init(g_params), d_opt_state=self.tx.init(d_params),
                      ema_params=g_params)

  @functools.cached_property
  def state_shapes(self) -> TrainState:
    return jax.eval_shape(self._init_state, self.config.seed)

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of the train state (for restoring)."""
    return checkpointing.abstract_state(self.state_shapes, self.replicated)

  @functools.cached_property
  def parameter_shapes(self) -> dict[str, dict[str, list[int]]]:
    """{'generator': {path: shape}, 'discriminator': {...}} of trainable parameters."""
    state = self.state_shapes
    return {"generator": checkpointing.shape_table(state.g_params),
            "discriminator": checkpointing.shape_table(state.d_params)}

  def _reset_optimizers(self, state: TrainState) -> TrainState:
    return state.replace(g_opt_state=self.tx.init(state.g_params),
                         d_opt_state=self.tx.init(state.d_params))

  # ---------------------------------------------------------------- one iteration
  def _shard(self, x: jax.Array) -> jax.Array:
    return jax.lax.with_sharding_constraint(x, self.batch_sharding)

  def _g_apply(self, params, z, labels, res, alpha, fading):
    return self.generator.apply({"params": params}, z, labels, res=res, alpha=alpha,
                                fading=fading)

  def _d_apply_fn(self, params, res, alpha, fading):
    return lambda x: self.discriminator.apply({"params": params}, x, res=res, alpha=alpha,
                                              fading=fading)

  def _adam_step(self, params, opt_state, grads, learning_rate):
    """One Adam update, skipped entirely (params and moments kept) if any gradient is
    non-finite, as the official optimizer does."""
    updates, new_opt_state = self.tx.update(grads, opt_state)
    new_params = jax.tree.map(lambda p, u: p - learning_rate * u, params, updates)
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    return keep(new_params, params), keep(new_opt_state, opt_state), finite

  def _train_iteration(self, state: TrainState, batch: dict[str, jax.Array], alpha: jax.Array,
                       learning_rate: jax.Array, *, res: int, fading: bool
                       ) -> tuple[TrainState, dict[str, jax.Array]]:
    cfg = self.config
    conditional = self.num_classes > 0
    alpha = jnp.asarray(alpha, jnp.float32)
    key = jax.random.fold_in(state.rng, state.step)
    d_key, g_key = jax.random.split(key)
    batch_size = batch["images"].shape[1]
    loss_kw = dict(wgan_lambda=cfg.wgan_lambda, wgan_target=cfg.wgan_target,
                   wgan_epsilon=cfg.wgan_epsilon, cond_weight=cfg.cond_weight)

    def d_step(carry, inputs):
      d_params, d_opt_state, ema_params = carry
      images, labels, k = inputs
      # The official loop runs the G-EMA update together with every D update.
      ema_params = ema_update(ema_params, state.g_params, cfg.ema_decay)
      kz, kgp = jax.random.split(k)
      reals = images_to_float(images)
      if fading:
        reals = fade_reals(reals, alpha)
      labels = labels if conditional else None
      z = self._shard(jax.random.normal(kz, (batch_size, self.latent_size), jnp.float32))
      fakes = jax.lax.stop_gradient(self._g_apply(state.g_params, z, labels, res, alpha, fading))

      def loss_fn(params):
        return losses.d_wgan_gp(self._d_apply_fn(params, res, alpha, fading), reals, fakes,
                                labels, kgp, **loss_kw)

      (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
      d_params, d_opt_state, finite = self._adam_step(d_params, d_opt_state, grads,
                                                      learning_rate)
      metrics = dict(metrics, d_loss=loss, d_grad_norm=optax.global_norm(grads),
                     **{"layer_grad_norm/D": monitoring.layer_norms(grads)},
                     d_skipped=1.0 - finite.astype(jnp.float32))
      return (d_params, d_opt_state, ema_params), metrics

    (d_params, d_opt_state, ema_params), d_metrics = loops.scan(
        d_step, (state.d_params, state.d_opt_state, state.ema_params),
        (batch["images"], batch["labels"], jax.random.split(d_key, cfg.num_d_steps)),
        self.unroll)

    kz, ky = jax.random.split(g_key)
    z = self._shard(jax.random.normal(kz, (batch_size, self.latent_size), jnp.float32))
    labels = (self._shard(jax.random.randint(ky, (batch_size,), 0, self.num_classes, jnp.int32))
              if conditional else None)

    def g_loss_fn(params):
      fakes = self._g_apply(params, z, labels, res, alpha, fading)
      return losses.g_wgan(self._d_apply_fn(d_params, res, alpha, fading), fakes, labels,
                           cfg.cond_weight)

    (g_loss, g_metrics), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    g_params, g_opt_state, g_finite = self._adam_step(state.g_params, state.g_opt_state, g_grads,
                                                      learning_rate)
    metrics = jax.tree.map(jnp.mean, d_metrics)
    metrics.update(g_metrics, g_loss=g_loss, g_grad_norm=optax.global_norm(g_grads),
                   g_skipped=1.0 - g_finite.astype(jnp.float32),
                   d_margin=metrics["d_real"] - metrics["d_fake"],
                   # Non-finite iff some parameter is: the guard never keeps such a state.
                   g_param_norm=optax.global_norm(g_params),
                   d_param_norm=optax.global_norm(d_params))
    metrics["layer_grad_norm/G"] = monitoring.layer_norms(g_grads)
    skipped = jnp.sum(d_metrics["d_skipped"]) + metrics["g_skipped"]
    new_state = TrainState(
        step=state.step + 1, images_seen=state.images_seen + cfg.num_d_steps * batch_size,
        skipped_updates=state.skipped_updates + skipped.astype(jnp.int32), rng=state.rng,
        g_params=g_params, d_params=d_params, g_opt_state=g_opt_state,
        d_opt_state=d_opt_state, ema_params=ema_params)
    return new_state, metrics

  # ---------------------------------------------------------------- sampling
  def _generate(self, params, z, labels, alpha, *, res: int, fading: bool):
    labels = labels if self.num_classes else None
    return images_to_uint8(self._g_apply(params, z, labels, res, alpha, fading))


# ==================================================================== the loop
def resolve_num_classes(config: ml_collections.ConfigDict, dataset_classes: int) -> int:
  """0 in the config: unconditional (the official default, even for labelled data)."""
  wanted = config.model.num_classes
  if wanted and not dataset_classes:
    raise ConfigError(f"config.model.num_classes={wanted} asks for a conditional PGGAN but "
                     f"dataset {config.dataset!r} has no labels. Set --config.model.num_classes=0.")
  if wanted and wanted != dataset_classes:
    raise ConfigError(f"config.model.num_classes={wanted} but dataset {config.dataset!r} has "
                     f"{dataset_classes} classes. Set --config.model.num_classes={dataset_classes} "
                     "(conditional) or 0 (unconditional).")
  return wanted


def run_meta(config: ml_collections.ConfigDict, trainer: PGGANTrainer, step: int,
             images_seen: int, schedule_images_seen: int, rollbacks: int = 0) -> dict:
  """What a checkpoint records besides the state (checked when resuming)."""
  phase = schedule.phase_at(schedule_images_seen, config)
  return {"step": step, "model": "pggan", "config": json.loads(config.to_json_best_effort()),
          "num_classes": trainer.num_classes, "images_seen": images_seen,
          "schedule_images_seen": schedule_images_seen, "resolution": phase.resolution,
          "alpha": phase.alpha, "lod": phase.lod, "parameter_shapes": trainer.parameter_shapes,
          "rollbacks": rollbacks}


def _crossed(before: int, after: int, every_kimg: float) -> bool:
  interval = int(round(every_kimg * 1000))
  return interval > 0 and before // interval != after // interval


def make_evaluator(config: ml_collections.ConfigDict, workdir: str, mesh,
                   writer) -> Evaluator | None:
  """FID/IS/KID of G-EMA every `config.eval_every_kimg` (0: never) and at the end, at the
  current resolution against reals box-downsampled to it (as D sees them, unmirrored)."""
  if not config.eval_every_kimg:
    return None
  reals = build_pipeline(config.dataset, config.model.resolution, config.seed + 7,
                         False, data_dir=config.data_dir or None,
                         download=config.download_dataset, num_workers=config.data_workers)
  return Evaluator(config.eval, workdir, mesh, dataset_id=config.dataset,
                   real_batches=lambda resolution, batch: (
                       b["images"] for b in reals.iterate(
                           0, (batch,), downscale=config.model.resolution // resolution)),
                   writer=writer)


@exclusive_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       max_iterations: int | None = None) -> TrainState:
  """Trains until config.total_kimg, resuming from workdir's latest checkpoint.

  `max_iterations` stops this call early (with a checkpoint, exactly as a
  preemption would) after that many iterations; rerunning continues.
  """
  schedule.validate(config)
  mesh = parallel.make_mesh()
  pipeline = build_pipeline(config.dataset, config.model.resolution, config.seed,
                            config.mirror_augment, data_dir=config.data_dir or None,
                            download=config.download_dataset, num_workers=config.data_workers)
  trainer = PGGANTrainer(config, resolve_num_classes(config, pipeline.num_classes), mesh)
  checkpoints = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                           config.max_to_keep,
                                           keep_every_steps=config.keep_checkpoint_every_steps)
  guard = Guard(config.guard)

  def restore(at_step: int):
    """(state, schedule_images_seen, phase, meta) of checkpoint `at_step`."""
    meta = checkpoints.restore_meta(at_step)
    restored = checkpoints.restore_state(at_step, trainer.abstract_state())
    at_schedule = int(meta["schedule_images_seen"])
    return restored, at_schedule, schedule.phase_at(at_schedule, config), meta

  phase = None
  resumed = checkpoints.restore_newest_readable(
      trainer.abstract_state(), lambda saved, at: checkpointing.check_compatible(
          saved, run_meta(config, trainer, at, 0, 0), checkpoints.directory, at))
  if resumed is not None:
    latest, state, meta = resumed
    schedule_images_seen = int(meta["schedule_images_seen"])
    phase = schedule.phase_at(schedule_images_seen, config)
    guard.rollbacks = int(meta.get("rollbacks", 0))
    logging.info("Resumed from %s at step %d (%.1f kimg, %dx%d, alpha %.3f).",
                 checkpoints.directory, latest, meta["images_seen"] / 1000, phase.resolution,
                 phase.resolution, phase.alpha)
  else:
    state = trainer.init_state(config.seed)
    schedule_images_seen = 0
  step = int(monitoring.to_host(state.step))
  images_seen = int(monitoring.to_host(state.images_seen))
  total_images = int(round(config.total_kimg * 1000))

  writer = monitoring.create_writer(workdir)
  g_count = monitoring.log_parameter_overview("Generator", state.g_params)
  d_count = monitoring.log_parameter_overview("Discriminator", state.d_params)
  logging.info("G parameters: %d, D parameters: %d, devices: %d, processes: %d", g_count,
               d_count, mesh.devices.size, jax.process_count())
  grid_z = jax.random.normal(jax.random.PRNGKey(config.seed + 1),
                             (config.num_grid_samples, trainer.latent_size), jnp.float32)
  grid_y = jnp.arange(config.num_grid_samples, dtype=jnp.int32) % max(trainer.num_classes, 1)
  sample_dir = os.path.join(workdir, "samples")

  def write_samples(at_phase: schedule.Phase) -> None:
    images = monitoring.to_host(trainer.generate(
        state.ema_params, grid_z, grid_y, jnp.float32(at_phase.alpha),
        res=at_phase.resolution, fading=at_phase.fading))
    grid = make_grid(images, int(np.ceil(np.sqrt(len(images)))))
    writer.write_images(step, {f"samples_ema/{at_phase.resolution}x{at_phase.resolution}":
                               grid[None]})
    if jax.process_index() == 0:
      files.makedirs(sample_dir)
      save_png(os.path.join(sample_dir, f"kimg{images_seen // 1000:06d}_"
                            f"{at_phase.resolution}x{at_phase.resolution}.png"), grid)

  evaluator = make_evaluator(config, workdir, mesh, writer)
  if evaluator:
    eval_latents = jax.jit(
        lambda key: (jax.random.normal(key, (evaluator.batch_size, trainer.latent_size)),
                     jax.random.randint(jax.random.fold_in(key, 1), (evaluator.batch_size,), 0,
                                        max(trainer.num_classes, 1))),
        out_shardings=parallel.batch_sharding(mesh))

  def evaluate(at_phase: schedule.Phase) -> None:
    results = evaluator.evaluate(
        step, lambda key: trainer.generate(state.ema_params, *eval_latents(key),
                                           jnp.float32(at_phase.alpha),
                                           res=at_phase.resolution, fading=at_phase.fading),
        resolution=at_phase.resolution,
        extra={"kimg": images_seen / 1000, "alpha": at_phase.alpha})
    if at_phase.resolution == config.model.resolution:  # FIDs at lower resolutions don't rank.
      evaluator.maybe_keep_best(step, results, state, run_meta(
          config, trainer, step, images_seen, schedule_images_seen, guard.rollbacks))

  skip_tracker = {"step": step, "skipped": int(monitoring.to_host(state.skipped_updates))}

  def check_updates(metrics) -> tuple[dict, str | None]:
    """Host scalars and the guard's verdict. Non-finite gradients skip an update (as
    officially) and are reported; a run in which every update since the last report was
    skipped is stuck, which the guard treats like non-finite parameters or a D margin
    above guard.max_d_margin."""
    scalars = monitoring.flatten_scalars(monitoring.to_host(metrics))
    skipped = int(monitoring.to_host(state.skipped_updates))
    new_skips = skipped - skip_tracker["skipped"]
    possible = (step - skip_tracker["step"]) * (config.num_d_steps + 1)
    skip_tracker.update(step=step, skipped=skipped)
    scalars["skipped_updates"] = float(skipped)
    if new_skips:
      bad = [k for k, v in scalars.items() if not np.isfinite(v)]
      logging.warning("%d of the last %d updates were skipped for non-finite gradients "
                      "(non-finite: %s).", new_skips, possible, ", ".join(bad) or "none now")
    if possible and new_skips >= possible:
      return scalars, (f"stuck: every update in the last {possible} was skipped for "
                       "non-finite gradients")
    checked = {k: scalars[k] for k in ("g_param_norm", "d_param_norm")}
    if np.isfinite(scalars["d_margin"]):  # A skipped update may leave non-finite scores.
      checked["d_margin"] = scalars["d_margin"]
    return scalars, guard.check(checked)

  data = None
  data_key = None
  reseed = jax.jit(rollback_key, static_argnums=1, out_shardings=trainer.replicated)
  preemption = PreemptionFlag()
  last_time, last_images = time.perf_counter(), images_seen
  repeats = config.minibatch_repeats
  stop_at = None if max_iterations is None else step + max_iterations
  try:
    while not preemption.requested:
      if step % repeats == 0:
        if images_seen >= total_images:
          break
        new_phase = schedule.phase_at(images_seen, config)
        if config.reset_optimizer_on_lod_change and schedule.needs_optimizer_reset(phase,
                                                                                   new_phase):
          state = trainer.reset_optimizers(state)
        if phase is not None and new_phase.resolution != phase.resolution:
          write_samples(phase)  # The last samples of the finished resolution.
          logging.info("Growing to %dx%d at %.1f kimg.", new_phase.resolution,
                       new_phase.resolution, images_seen / 1000)
        phase, schedule_images_seen = new_phase, images_seen
      key = (phase.resolution, phase.batch_size)
      if data_key != key:
        if data is not None:
          data.close()
        data = parallel.prefetch_to_devices(
            pipeline.iterate(images_seen, (config.num_d_steps, phase.batch_size),
                             downscale=config.model.resolution // phase.resolution),
            mesh, leading_unsharded_dims=1)
        data_key = key
      state, metrics = trainer.train_iteration(
          state, next(data), jnp.float32(phase.alpha), jnp.float32(phase.learning_rate),
          res=phase.resolution, fading=phase.fading)
      step += 1
      before, images_seen = images_seen, images_seen + config.num_d_steps * phase.batch_size
      done = step % repeats == 0 and images_seen >= total_images
      preemption.check(step)
      if step == stop_at:
        preemption.requested = True
      save = done or preemption.requested or _crossed(before, images_seen,
                                                      config.checkpoint_every_kimg)
      if save or _crossed(before, images_seen, config.log_every_kimg):
        scalars, problem = check_updates(metrics)
        if problem:  # Not kept: back to the last good checkpoint, on another random path.
          good_step = guard.start_rollback(step, problem, checkpoints)
          if good_step is None:
            state, schedule_images_seen, phase = trainer.init_state(config.seed), 0, None
          else:
            state, schedule_images_seen, phase, _ = restore(good_step)
          state = state.replace(rng=reseed(state.rng, guard.rollbacks))
          step = int(monitoring.to_host(state.step))
          images_seen = int(monitoring.to_host(state.images_seen))
          skip_tracker.update(step=step, skipped=int(monitoring.to_host(state.skipped_updates)))
          data.close()
          data, data_key = None, None
          last_time, last_images = time.perf_counter(), images_seen
          writer.write_scalars(step, {"guard/rollbacks": guard.rollbacks})
          continue
        now = time.perf_counter()
        sec_per_kimg = (now - last_time) / max(images_seen - last_images, 1) * 1000
        last_time, last_images = now, images_seen
        scalars.update(
            kimg=images_seen / 1000, resolution=phase.resolution, alpha=phase.alpha,
            lod=phase.lod, batch_size=phase.batch_size, learning_rate=phase.learning_rate,
            sec_per_kimg=sec_per_kimg, images_per_sec=1000 / max(sec_per_kimg, 1e-9),
            eta_hours=max(total_images - images_seen, 0) / 1000 * sec_per_kimg / 3600)
        writer.write_scalars(step, scalars)
      if done or _crossed(before, images_seen, config.sample_every_kimg):
        write_samples(phase)
      if evaluator and (done or _crossed(before, images_seen, config.eval_every_kimg)):
        evaluate(phase)
      if save:
        checkpoints.save(step, state, run_meta(config, trainer, step, images_seen,
                                               schedule_images_seen, guard.rollbacks))
    if preemption.requested and checkpoints.latest_step() != step:
      checkpoints.save(step, state, run_meta(config, trainer, step, images_seen,
                                             schedule_images_seen, guard.rollbacks))
    writer.flush()
  finally:
    if data is not None:
      data.close()
    preemption.restore()
    checkpoints.close()
    if evaluator:
      evaluator.close()
    writer.close()
  if images_seen < total_images:
    logging.warning("Stopped at %.1f kimg on request; rerun the same command to continue.",
                    images_seen / 1000)
  return state
