"""BigGAN training: the train state, the single jitted iteration, sampling helpers.

One call of `train_iteration` is one BigGAN iteration, compiled as one XLA
program: `num_d_steps` discriminator updates (a `lax.scan` on accelerators,
unrolled on CPU, see gan_core/loops.py; each over
`num_accumulations` micro-batches), one generator update (with orthogonal
regularisation), and the G-EMA update. Spectral-norm vectors of G and D and G's
batch-norm running statistics advance with every training forward pass, as in
BigGAN-PyTorch (G in train mode while D trains, D in train mode while G trains).
The state is donated; with the batch sharded on the mesh's `data` axis all
batch norms use global-batch statistics.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from biggan_jax import losses
from biggan_jax.models import ModelPair, build_models
from gan_core import checkpointing, loops, monitoring, parallel
from gan_core.data import build_pipeline
from gan_core.errors import ConfigError
from gan_core.ema import ema_update
from gan_core.eval.evaluator import Evaluator
from gan_core.guard import Guard, rollback_key
from gan_core.images import images_to_uint8, make_grid
from gan_core.preemption import PreemptionFlag
from gan_core.workdir_lock import exclusive_workdir

MUTABLE_G = ("batch_stats", "spectral")
MUTABLE_D = ("spectral",)


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # Completed iterations.
  rng: jax.Array  # Base key; iteration i uses fold_in(rng, i).
  g_params: Any
  g_state: Any  # {'batch_stats': ..., 'spectral': ...}
  d_params: Any
  d_state: Any  # {'spectral': ...}
  g_opt_state: Any
  d_opt_state: Any
  ema_params: Any
  ema_state: Any


def sample_latents(key: jax.Array, num: int, dim_z: int, num_classes: int,
                   truncation: float | None = None) -> tuple[jax.Array, jax.Array]:
  """z ~ N(0, I) (or truncated to |z_i| <= truncation) and uniform class labels.

  Truncation draws from the normal conditioned on |z_i| <= t, which is the
  distribution of the paper's "resample values whose magnitude exceeds t".
  """
  kz, ky = jax.random.split(key)
  if truncation:
    z = jax.random.truncated_normal(kz, -truncation, truncation, (num, dim_z), jnp.float32)
  else:
    z = jax.random.normal(kz, (num, dim_z), jnp.float32)
  y = jax.random.randint(ky, (num,), 0, num_classes, jnp.int32)
  return z, y


def ortho_reg_grads(params: Any, strength: float) -> Any:
  """Gradient of BigGAN's off-diagonal orthogonal regulariser.

  For every weight of G with ndim >= 2 except the shared embedding, viewed as
  W (outputs x rest) like BigGAN-PyTorch, the gradient of
  (strength / 2) * ||W W^T * (1 - I)||_F^2, i.e. 2 * strength * (W W^T * (1 - I)) W.
  """
  def leaf(path, w):
    if w.ndim < 2 or any(getattr(k, "key", None) == "shared" for k in path):
      return jnp.zeros_like(w)
    mat = w.reshape(-1, w.shape[-1]).T
    gram = mat @ mat.T
    gram = gram * (1.0 - jnp.eye(gram.shape[0], dtype=gram.dtype))
    return (2.0 * strength * (gram @ mat)).T.reshape(w.shape)
  return jax.tree_util.tree_map_with_path(leaf, params)


def images_to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


class BigGANTrainer:
  """Holds the models, optimizers and compiled functions for one config and mesh."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int, mesh: Mesh):
    self.config = config
    self.mesh = mesh
    self.models: ModelPair = build_models(config.model, num_classes)
    self.num_classes = self.models.num_classes
    if config.batch_size % config.num_accumulations:
      raise ConfigError(f"batch_size={config.batch_size} must be divisible by "
                       f"num_accumulations={config.num_accumulations}")
    self.micro_batch = config.batch_size // config.num_accumulations
    parallel.check_batch_divisible(self.micro_batch, mesh,
                                   "batch_size / num_accumulations")
    self.unroll = loops.should_unroll(config.scan_unroll)
    self.d_loss_fn, self.g_loss_fn = losses.get_losses(config.loss)
    adam = functools.partial(optax.adam, b1=config.adam_b1, b2=config.adam_b2,
                             eps=config.adam_eps)
    self.g_tx = adam(config.g_lr)
    self.d_tx = adam(config.d_lr)
    self.replicated = parallel.replicated(mesh)
    self.batch_sharding = NamedSharding(mesh, P(parallel.DATA_AXIS))
    self.init_state = jax.jit(self._init_state, static_argnums=0,
                              out_shardings=self.replicated)
    self.train_iteration = jax.jit(self._train_iteration, donate_argnums=0,
                                   out_shardings=(self.replicated, self.replicated))
    self.generate = jax.jit(self._generate, static_argnames=("train",))

  # ---------------------------------------------------------------- state
  @property
  def batch_leading_shape(self) -> tuple[int, int, int]:
    """Shape of the leading axes of one iteration's real batch (batch axis last)."""
    return (self.config.num_d_steps, self.config.num_accumulations, self.micro_batch)

  @property
  def examples_per_iteration(self) -> int:
    return self.config.num_d_steps * self.config.batch_size

  def _init_variables(self, key: jax.Array):
    res, dim_z = self.models.resolution, self.models.dim_z
    kg, kd = jax.random.split(key)
    z = jnp.zeros((2, dim_z), jnp.float32)
    y = jnp.zeros((2,), jnp.int32)
    g_vars = self.models.generator.init(kg, z, y, train=True)
    d_vars = self.models.discriminator.init(kd, jnp.zeros((2, res, res, 3), jnp.float32), y)
    return g_vars, d_vars

  def _init_state(self, seed: int) -> TrainState:
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    g_vars, d_vars = self._init_variables(init_key)
    g_vars = dict(g_vars)
    d_vars = dict(d_vars)
    g_params = g_vars.pop("params")
    d_params = d_vars.pop("params")
    return TrainState(
        step=jnp.zeros((), jnp.int32), rng=train_key,
        g_params=g_params, g_state=g_vars, d_params=d_params, d_state=d_vars,
        g_opt_state=self.g_tx.init(g_params), d_opt_state=self.d_tx.init(d_params),
        ema_params=g_params, ema_state=g_vars)

  @functools.cached_property
  def state_shapes(self) -> TrainState:
    """Shapes and dtypes of the train state, traced once (no computation, no memory)."""
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

  # ---------------------------------------------------------------- forward passes
  def _shard_batch(self, x: jax.Array) -> jax.Array:
    return jax.lax.with_sharding_constraint(x, self.batch_sharding)

  def _g_forward(self, g_params, g_state, z, y):
    return self.models.generator.apply({"params": g_params, **g_state}, z, y, train=True,
                                       mutable=MUTABLE_G)

  def _d_forward(self, d_params, d_state, x, y):
    return self.models.discriminator.apply({"params": d_params, **d_state}, x, y,
                                           mutable=MUTABLE_D)

  def _latents(self, key):
    z, y = sample_latents(key, self.micro_batch, self.models.dim_z, self.num_classes)
    return self._shard_batch(z), self._shard_batch(y)

  # ---------------------------------------------------------------- one iteration
  def _d_micro_step(self, g_params, d_params, carry, inputs):
    g_state, d_state, grad_sum = carry
    real, real_labels, key = inputs
    z, fake_labels = self._latents(key)
    fake, g_state = self._g_forward(g_params, g_state, z, fake_labels)
    fake = jax.lax.stop_gradient(fake)
    # One D pass over fakes and reals, interleaved per example so that every device
    # keeps its own shard (no resharding); D has no batch-dependent layers.
    batch = real.shape[0]
    x = jnp.stack([fake, images_to_float(real)], axis=1).reshape((2 * batch,) + real.shape[1:])
    y = jnp.stack([fake_labels, real_labels], axis=1).reshape(-1)

    def loss_fn(params):
      scores, new_d_state = self._d_forward(params, d_state, x, y)
      scores = scores.reshape(batch, 2)
      d_fake, d_real = scores[:, 0], scores[:, 1]
      loss_real, loss_fake = self.d_loss_fn(d_real, d_fake)
      metrics = {"d_loss_real": loss_real, "d_loss_fake": loss_fake,
                 "d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}
      return loss_real + loss_fake, (new_d_state, metrics)

    (loss, (d_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    return (g_state, d_state, grad_sum), dict(metrics, d_loss=loss)

  def _d_update(self, g_params, carry, inputs):
    g_state, d_params, d_state, d_opt_state = carry
    real, labels, key = inputs
    keys = jax.random.split(key, self.config.num_accumulations)
    zeros = jax.tree.map(jnp.zeros_like, d_params)
    (g_state, d_state, grads), metrics = loops.scan(
        functools.partial(self._d_micro_step, g_params, d_params), (g_state, d_state, zeros),
        (real, labels, keys), self.unroll)
    grads = jax.tree.map(lambda g: g / self.config.num_accumulations, grads)
    updates, d_opt_state = self.d_tx.update(grads, d_opt_state, d_params)
    d_params = optax.apply_updates(d_params, updates)
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["d_grad_norm"] = optax.global_norm(grads)
    metrics["layer_grad_norm/D"] = monitoring.layer_norms(grads)
    return (g_state, d_params, d_state, d_opt_state), metrics

  def _g_micro_step(self, g_params, d_params, carry, key):
    g_state, d_state, grad_sum = carry
    z, labels = self._latents(key)

    def loss_fn(params):
      fake, new_g_state = self._g_forward(params, g_state, z, labels)
      scores, new_d_state = self._d_forward(d_params, d_state, fake, labels)
      return self.g_loss_fn(scores), (new_g_state, new_d_state)

    (loss, (g_state, d_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(g_params)
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    return (g_state, d_state, grad_sum), loss

  def _train_iteration(self, state: TrainState, batch: dict[str, jax.Array]
                       ) -> tuple[TrainState, dict[str, jax.Array]]:
    cfg = self.config
    key = jax.random.fold_in(state.rng, state.step)
    d_key, g_key = jax.random.split(key)

    # Discriminator: num_d_steps updates, each on its own real batch.
    (g_state, d_params, d_state, d_opt_state), d_metrics = loops.scan(
        functools.partial(self._d_update, state.g_params),
        (state.g_state, state.d_params, state.d_state, state.d_opt_state),
        (batch["images"], batch["labels"], jax.random.split(d_key, cfg.num_d_steps)),
        self.unroll)

    # Generator: one update against the updated D.
    zeros = jax.tree.map(jnp.zeros_like, state.g_params)
    (g_state, d_state, g_grads), g_losses = loops.scan(
        functools.partial(self._g_micro_step, state.g_params, d_params),
        (g_state, d_state, zeros), jax.random.split(g_key, cfg.num_accumulations), self.unroll)
    g_grads = jax.tree.map(lambda g: g / cfg.num_accumulations, g_grads)
    if cfg.ortho_reg > 0:
      g_grads = jax.tree.map(jnp.add, g_grads, ortho_reg_grads(state.g_params, cfg.ortho_reg))
    updates, g_opt_state = self.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)

    # G-EMA over parameters and state (BN running stats, SN vectors), as
    # BigGAN-PyTorch averages the whole state dict; a plain copy before ema_start.
    decay = jnp.where(state.step < cfg.ema_start, 0.0, cfg.ema_decay)
    ema_params = ema_update(state.ema_params, g_params, decay)
    ema_state = ema_update(state.ema_state, g_state, decay)

    metrics = jax.tree.map(jnp.mean, d_metrics)  # Per-layer D norms: mean over D steps.
    metrics["d_margin"] = metrics["d_real"] - metrics["d_fake"]
    metrics["g_loss"] = jnp.mean(g_losses)
    metrics["g_grad_norm"] = optax.global_norm(g_grads)
    metrics["layer_grad_norm/G"] = monitoring.layer_norms(g_grads)
    # Non-finite iff some parameter is: the guard never keeps such a state.
    metrics["g_param_norm"] = optax.global_norm(g_params)
    metrics["d_param_norm"] = optax.global_norm(d_params)
    new_state = TrainState(
        step=state.step + 1, rng=state.rng, g_params=g_params, g_state=g_state,
        d_params=d_params, d_state=d_state, g_opt_state=g_opt_state, d_opt_state=d_opt_state,
        ema_params=ema_params, ema_state=ema_state)
    return new_state, metrics

  # ---------------------------------------------------------------- sampling
  def _generate(self, params, state, z, y, train: bool = False):
    images = self.models.generator.apply({"params": params, **state}, z, y, train=train)
    return images_to_uint8(images)

  def standing_stats(self, params, state, key: jax.Array, num_batches: int = 16,
                     batch_size: int = 256):
    """BigGAN's standing statistics: BN statistics averaged over `num_batches`
    batches of fresh samples, replacing the running averages for sampling."""
    g_once = self.models.generator.clone(bn_momentum=1.0)

    @jax.jit
    def batch_stats_of(params, state, k):  # Arguments, not closures: global arrays.
      z, y = sample_latents(k, batch_size, self.models.dim_z, self.num_classes)
      _, new = g_once.apply({"params": params, **state}, z, y, train=True,
                            mutable=["batch_stats"])
      return new["batch_stats"]

    total = None
    for k in jax.random.split(key, num_batches):
      stats = batch_stats_of(params, state, k)
      total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    return {**state, "batch_stats": jax.tree.map(lambda s: s / num_batches, total)}


# ==================================================================== the loop
def resolve_num_classes(config: ml_collections.ConfigDict, dataset_classes: int) -> int:
  """Checks config.model.num_classes against the dataset (0 in the config: take the dataset's)."""
  wanted = config.model.num_classes
  if wanted and dataset_classes and wanted != dataset_classes:
    raise ConfigError(f"config.model.num_classes={wanted} but dataset {config.dataset!r} has "
                     f"{dataset_classes} classes. Set --config.model.num_classes="
                     f"{dataset_classes} (or 0 to take it from the dataset).")
  if wanted and not dataset_classes and wanted > 1:
    raise ConfigError(f"dataset {config.dataset!r} has no labels (unconditional) but "
                     f"config.model.num_classes={wanted}. Set --config.model.num_classes=0.")
  return wanted or dataset_classes


def run_meta(config: ml_collections.ConfigDict, trainer: BigGANTrainer, step: int,
             rollbacks: int = 0) -> dict:
  """What a checkpoint records besides the state (checked when resuming)."""
  return {"step": step, "model": "biggan",
          "config": json.loads(config.to_json_best_effort()),
          "num_classes": trainer.num_classes,
          "data_position": step * trainer.examples_per_iteration,
          "parameter_shapes": trainer.parameter_shapes,
          "rollbacks": rollbacks}


def make_evaluator(config: ml_collections.ConfigDict, workdir: str, mesh,
                   writer) -> Evaluator | None:
  """FID/IS/KID of G-EMA every `config.eval_every_steps` (0: never), against unflipped reals."""
  if not config.eval_every_steps:
    return None
  reals = build_pipeline(config.dataset, config.model.resolution, config.seed + 7,
                         random_flip=False, data_dir=config.data_dir or None,
                         download=config.download_dataset, num_workers=config.data_workers)
  return Evaluator(config.eval, workdir, mesh, dataset_id=config.dataset,
                   real_batches=lambda resolution, batch: (
                       b["images"] for b in reals.iterate(0, (batch,))),
                   writer=writer)


def host_scalars(metrics: dict, state: TrainState) -> dict[str, float]:
  """One iteration's metrics on the host, flat, with per-layer singular values of G and D."""
  scalars = monitoring.flatten_scalars(monitoring.to_host(metrics))
  spectral = monitoring.to_host({"G": state.g_state["spectral"], "D": state.d_state["spectral"]})
  scalars.update(monitoring.singular_values(spectral["G"], "G"))
  scalars.update(monitoring.singular_values(spectral["D"], "D"))
  return scalars


@exclusive_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains until config.num_train_steps, resuming from workdir's latest checkpoint."""
  mesh = parallel.make_mesh()
  pipeline = build_pipeline(config.dataset, config.model.resolution, config.seed,
                            config.random_flip, data_dir=config.data_dir or None,
                            download=config.download_dataset, num_workers=config.data_workers)
  trainer = BigGANTrainer(config, resolve_num_classes(config, pipeline.num_classes), mesh)
  checkpoints = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                           config.max_to_keep,
                                           keep_every_steps=config.keep_checkpoint_every_steps)
  guard = Guard(config.guard)
  resumed = checkpoints.restore_newest_readable(
      trainer.abstract_state(), lambda saved, at: checkpointing.check_compatible(
          saved, run_meta(config, trainer, at), checkpoints.directory, at))
  if resumed is not None:
    latest, state, saved_meta = resumed
    guard.rollbacks = int(saved_meta.get("rollbacks", 0))
    logging.info("Resumed from %s at step %d.", checkpoints.directory, latest)
  else:
    state = trainer.init_state(config.seed)
  start_step = int(monitoring.to_host(state.step))

  writer = monitoring.create_writer(workdir)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in config.items() if not isinstance(v, dict)
                          and not hasattr(v, "items")})
  g_count = monitoring.log_parameter_overview("Generator", state.g_params)
  d_count = monitoring.log_parameter_overview("Discriminator", state.d_params)
  logging.info("G parameters: %d, D parameters: %d, devices: %d, processes: %d", g_count,
               d_count, mesh.devices.size, jax.process_count())

  grid_z, _ = sample_latents(jax.random.PRNGKey(config.seed + 1), config.num_grid_samples,
                             trainer.models.dim_z, trainer.num_classes)
  grid_y = jnp.arange(config.num_grid_samples, dtype=jnp.int32) % trainer.num_classes

  evaluator = make_evaluator(config, workdir, mesh, writer)
  eval_latents = jax.jit(
      lambda key: sample_latents(key, evaluator.batch_size, trainer.models.dim_z,
                                 trainer.num_classes),
      out_shardings=parallel.batch_sharding(mesh)) if evaluator else None
  reseed = jax.jit(rollback_key, static_argnums=1, out_shardings=trainer.replicated)

  def start_data(at_step: int):
    return parallel.prefetch_to_devices(
        pipeline.iterate(at_step * trainer.examples_per_iteration, trainer.batch_leading_shape),
        mesh, leading_unsharded_dims=2)

  def meta(at_step: int) -> dict:
    return run_meta(config, trainer, at_step, guard.rollbacks)

  data = start_data(start_step)
  progress = monitoring.Progress(start_step, config.num_train_steps,
                                 trainer.examples_per_iteration)
  preemption = PreemptionFlag()
  step = start_step
  try:
    while step < config.num_train_steps and not preemption.requested:
      state, metrics = trainer.train_iteration(state, next(data))
      step += 1
      preemption.check(step)
      last = step == config.num_train_steps
      save = last or preemption.requested or step % config.checkpoint_every_steps == 0
      if save or step % config.log_every_steps == 0:
        scalars = host_scalars(metrics, state)
        problem = guard.check(scalars)
        if problem:  # Not kept: back to the last good checkpoint, on another random path.
          good_step = guard.start_rollback(step, problem, checkpoints)
          state = (trainer.init_state(config.seed) if good_step is None else
                   checkpoints.restore_state(good_step, trainer.abstract_state()))
          state = state.replace(rng=reseed(state.rng, guard.rollbacks))
          step = good_step or 0
          data.close()
          data = start_data(step)
          progress = monitoring.Progress(step, config.num_train_steps,
                                         trainer.examples_per_iteration)
          writer.write_scalars(step, {"guard/rollbacks": guard.rollbacks})
          continue
        scalars.update(progress.report(step), g_lr=config.g_lr, d_lr=config.d_lr)
        writer.write_scalars(step, scalars)
      if config.sample_every_steps and (step % config.sample_every_steps == 0 or last):
        images = trainer.generate(state.ema_params, state.ema_state, grid_z, grid_y)
        writer.write_images(step, {"samples_ema": make_grid(
            monitoring.to_host(images), int(np.ceil(np.sqrt(config.num_grid_samples))))[None]})
      if evaluator and (step % config.eval_every_steps == 0 or last):
        results = evaluator.evaluate(
            step, lambda key: trainer.generate(state.ema_params, state.ema_state,
                                               *eval_latents(key)),
            resolution=config.model.resolution)
        evaluator.maybe_keep_best(step, results, state, meta(step))
      if save:
        checkpoints.save(step, state, meta(step))
    if preemption.requested and checkpoints.latest_step() != step:
      checkpoints.save(step, state, meta(step))  # SIGTERM before the first iteration.
    writer.flush()
  finally:
    data.close()
    preemption.restore()
    checkpoints.close()
    if evaluator:
      evaluator.close()
    writer.close()
  if step < config.num_train_steps:
    logging.warning("Stopped at step %d on request; rerun the same command to continue.", step)
  return state
