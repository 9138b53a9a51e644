"""PGGAN training: the train state, one jitted iteration per (resolution, fading), and the
task that `gan_core.training` (the loop shared with BigGAN) runs.

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

import math
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gan_core import augment, checkpointing, loops, monitoring, parallel, training
from gan_core.errors import ConfigError
from gan_core.ema import ema_update
from gan_core.images import images_to_uint8
from gan_core.training import Plan
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
  augment: Any  # ADA's p and r_t statistics (gan_core/augment.py); inert for other kinds.


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


class PGGANTrainer(checkpointing.StateLayout):
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
    self.augmenter = augment.Augmenter(config)
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
                      ema_params=g_params, augment=augment.init_state(self.config))

  def _reset_optimizers(self, state: TrainState) -> TrainState:
    return state.replace(g_opt_state=self.tx.init(state.g_params),
                         d_opt_state=self.tx.init(state.d_params))

  # ---------------------------------------------------------------- one iteration
  def _shard(self, x: jax.Array) -> jax.Array:
    return jax.lax.with_sharding_constraint(x, self.batch_sharding)

  def _g_apply(self, params, z, labels, res, alpha, fading):
    return self.generator.apply({"params": params}, z, labels, res=res, alpha=alpha,
                                fading=fading)

  def _augment(self, x, key, aug_state):
    """D's input through the configured augmentation (none: untouched)."""
    if not self.augmenter.enabled:
      return x
    return self._shard(self.augmenter.apply(x, key, aug_state))

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
      d_params, d_opt_state, ema_params, aug_state = carry
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
      # Reals and fakes augmented independently (the gradient penalty then mixes the
      # augmented images), keyed apart from the latents and the penalty's mixing.
      reals = self._augment(reals, jax.random.fold_in(k, 1), state.augment)
      fakes = self._augment(fakes, jax.random.fold_in(k, 2), state.augment)

      def loss_fn(params):
        return losses.d_wgan_gp(self._d_apply_fn(params, res, alpha, fading), reals, fakes,
                                labels, kgp, **loss_kw)

      (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
      aug_state = self.augmenter.observe(aug_state, metrics.pop("real_scores"))
      d_params, d_opt_state, finite = self._adam_step(d_params, d_opt_state, grads,
                                                      learning_rate)
      metrics = dict(metrics, d_loss=loss, d_grad_norm=optax.global_norm(grads),
                     **{"layer_grad_norm/D": monitoring.layer_norms(grads)},
                     d_skipped=1.0 - finite.astype(jnp.float32))
      return (d_params, d_opt_state, ema_params, aug_state), metrics

    (d_params, d_opt_state, ema_params, aug_state), d_metrics = loops.scan(
        d_step, (state.d_params, state.d_opt_state, state.ema_params, state.augment),
        (batch["images"], batch["labels"], jax.random.split(d_key, cfg.num_d_steps)),
        self.unroll)

    kz, ky = jax.random.split(g_key)
    z = self._shard(jax.random.normal(kz, (batch_size, self.latent_size), jnp.float32))
    labels = (self._shard(jax.random.randint(ky, (batch_size,), 0, self.num_classes, jnp.int32))
              if conditional else None)

    def g_loss_fn(params):
      fakes = self._augment(self._g_apply(params, z, labels, res, alpha, fading), g_key,
                            state.augment)
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
    aug_state = self.augmenter.adapt(aug_state, state.step, cfg.num_d_steps * batch_size)
    metrics.update(self.augmenter.metrics(aug_state))
    skipped = jnp.sum(d_metrics["d_skipped"]) + metrics["g_skipped"]
    new_state = TrainState(
        step=state.step + 1, images_seen=state.images_seen + cfg.num_d_steps * batch_size,
        skipped_updates=state.skipped_updates + skipped.astype(jnp.int32), rng=state.rng,
        g_params=g_params, d_params=d_params, g_opt_state=g_opt_state,
        d_opt_state=d_opt_state, ema_params=ema_params, augment=aug_state)
    return new_state, metrics

  # ---------------------------------------------------------------- sampling
  def _generate(self, params, z, labels, alpha, *, res: int, fading: bool):
    labels = labels if self.num_classes else None
    return images_to_uint8(self._g_apply(params, z, labels, res, alpha, fading))


# ==================================================================== the task
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


class PGGANTask(training.TrainerTask):
  """PGGAN for `gan_core.training`. The plan is the schedule's phase at the images shown
  so far, re-evaluated every `minibatch_repeats` iterations: resolution, fade-in, batch
  size and learning rate; Adam is reset when the level of detail changes. Finished after
  `total_kimg` thousand real images (at a group boundary)."""

  kind = "pggan"

  def __init__(self, config: ml_collections.ConfigDict):
    schedule.validate(config)
    super().__init__(config)
    self.plan_interval = config.minibatch_repeats
    self.total_images = int(round(config.total_kimg * 1000))
    self._skips_seen = (0, 0)  # (step, skipped updates) at the last guard check.

  def build(self, dataset_classes: int, mesh) -> None:
    self.trainer = PGGANTrainer(self.config, resolve_num_classes(self.config, dataset_classes),
                                mesh)

  def position(self, state: TrainState) -> tuple[int, int]:
    return (int(monitoring.to_host(state.step)), int(monitoring.to_host(state.images_seen)))

  def plan(self, position: int) -> Plan:
    phase = schedule.phase_at(position, self.config)
    return Plan(leading_shape=(self.config.num_d_steps, phase.batch_size),
                resolution=phase.resolution,
                downscale=self.config.model.resolution // phase.resolution,
                static=(("res", phase.resolution), ("fading", phase.fading)),
                scalars=(phase.alpha, phase.learning_rate),
                info=(("alpha", phase.alpha), ("lod", phase.lod),
                      ("batch_size", phase.batch_size), ("learning_rate", phase.learning_rate)),
                phase=phase)

  def on_plan_change(self, state: TrainState, old: Plan | None, new: Plan) -> TrainState:
    if self.config.reset_optimizer_on_lod_change and schedule.needs_optimizer_reset(
        old.phase if old else None, new.phase):
      return self.trainer.reset_optimizers(state)
    return state

  def iteration(self, state: TrainState, batch, plan: Plan):
    alpha, learning_rate = plan.scalars
    return self.trainer.train_iteration(state, batch, jnp.float32(alpha),
                                        jnp.float32(learning_rate), **dict(plan.static))

  def guard_scalars(self, metrics, state: TrainState, step: int):
    """Non-finite gradients skip an update (as officially) and are reported; the guard
    watches the parameter norms, the D margin and `skipped_fraction`, the share of updates
    skipped since the last check (1: the run is stuck)."""
    scalars = monitoring.flatten_scalars(monitoring.to_host(metrics))
    skipped = int(monitoring.to_host(state.skipped_updates))
    last_step, last_skipped = self._skips_seen
    new_skips, possible = skipped - last_skipped, (step - last_step) * (self.config.num_d_steps + 1)
    self._skips_seen = (step, skipped)
    scalars["skipped_updates"] = float(skipped)
    if new_skips:
      bad = [k for k, v in scalars.items() if not np.isfinite(v)]
      logging.warning("%d of the last %d updates were skipped for non-finite gradients "
                      "(non-finite: %s).", new_skips, possible, ", ".join(bad) or "none now")
    watched = {k: scalars[k] for k in ("g_param_norm", "d_param_norm")}
    watched["skipped_fraction"] = new_skips / possible if possible else 0.0
    if np.isfinite(scalars["d_margin"]):  # A skipped update may leave non-finite scores.
      watched["d_margin"] = scalars["d_margin"]
    return scalars, watched

  def reset_guard(self, state: TrainState, step: int) -> None:
    self._skips_seen = (step, int(monitoring.to_host(state.skipped_updates)))

  @staticmethod
  def sampling_config(config: ml_collections.ConfigDict,
                      num_devices: int) -> ml_collections.ConfigDict:
    """The training batch sizes need not split over the sampling devices; the trainer checks
    them, so give it the smallest batch that does (and fits the minibatch-stddev groups)."""
    config = ml_collections.ConfigDict(config.to_dict())
    for key in config.batch_size:
      config.batch_size[key] = math.lcm(max(config.model.mbstd_group_size, 1), num_devices)
    return config

  @property
  def latent_size(self) -> int:
    return self.trainer.latent_size

  def latents(self, key: jax.Array, num: int, truncation: float | None = None):
    shape = (num, self.trainer.latent_size)
    z = (jax.random.truncated_normal(key, -truncation, truncation, shape, jnp.float32)
         if truncation else jax.random.normal(key, shape, jnp.float32))
    y = jax.random.randint(jax.random.fold_in(key, 1), (num,), 0, max(self.num_classes, 1))
    return z, y

  def generate(self, state: TrainState, z, y, plan: Plan,
               truncation: float | None = None) -> jax.Array:
    del truncation  # PGGAN's truncation acts on the latents only (`latents`).
    return self.trainer.generate(state.ema_params, z, y, jnp.float32(plan.phase.alpha),
                                 **dict(plan.static))

  def finished(self, step: int, examples: int) -> bool:
    return examples >= self.total_images

  def remaining(self, step: int, examples: int) -> tuple[float, str]:
    return max(self.total_images - examples, 0), "examples"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       max_iterations: int | None = None) -> TrainState:
  """Trains until config.total_kimg, resuming from workdir's latest checkpoint.

  `max_iterations` stops this call early (with a checkpoint, exactly as a
  preemption would) after that many iterations; rerunning continues.
  """
  return training.train(PGGANTask(config), config, workdir, max_iterations)
