"""BigGAN training: the train state, the single jitted iteration, sampling helpers, and
the task that `gan_core.training` (the loop shared with PGGAN) runs.

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
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from biggan_jax import losses
from biggan_jax.config import base_config
from biggan_jax.models import ModelPair, build_models
from gan_core import augment, checkpointing, loops, monitoring, parallel, training
from gan_core.errors import ConfigError
from gan_core.ema import ema_update
from gan_core.images import images_to_uint8
from gan_core.training import Plan

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
  augment: Any  # ADA's p and r_t statistics (gan_core/augment.py); inert for other kinds.


def sample_latents(key: jax.Array, num: int, dim_z: int, num_classes: int,
                   truncation: float | None = None, tfhub: bool = False
                   ) -> tuple[jax.Array, jax.Array]:
  """z ~ N(0, I) (or truncated to |z_i| <= truncation) and uniform class labels.

  Truncation draws from the normal conditioned on |z_i| <= t, which is the
  distribution of the paper's "resample values whose magnitude exceeds t".
  `tfhub`: the TF-Hub modules' convention instead, z = t * TruncNormal(-2, 2) with
  t = truncation (default 1), as pytorch-pretrained-biggan's `truncated_noise_sample`.
  """
  kz, ky = jax.random.split(key)
  if tfhub:
    t = check_tfhub_truncation(truncation)
    z = t * jax.random.truncated_normal(kz, -2.0, 2.0, (num, dim_z), jnp.float32)
  elif truncation:
    z = jax.random.truncated_normal(kz, -truncation, truncation, (num, dim_z), jnp.float32)
  else:
    z = jax.random.normal(kz, (num, dim_z), jnp.float32)
  y = jax.random.randint(ky, (num,), 0, num_classes, jnp.int32)
  return z, y


def check_tfhub_truncation(truncation: float | None) -> float:
  """The truncation of a TF-Hub BigGAN-deep generator: in (0, 1], 1 when not given."""
  t = 1.0 if truncation is None or truncation == 0 else float(truncation)
  if not 0.0 < t <= 1.0:
    raise ConfigError(f"truncation {truncation}: the TF-Hub BigGAN-deep generators take a "
                      "truncation in (0, 1] (their BN statistics are stored for that range)")
  return t


def ortho_reg_grads(params: Any, strength: float) -> Any:
  """Gradient of BigGAN's off-diagonal orthogonal regulariser.

  For every weight of G with ndim >= 2 except the shared embedding, viewed as
  W (outputs x rest) like BigGAN-PyTorch, the gradient of
  (strength / 2) * ||W W^T * (1 - I)||_F^2, i.e. 2 * strength * (W W^T * (1 - I)) W.

  Where W has more rows than columns (G's first linear layer: 24,576 outputs from a 20-value
  slice of z at 128x128, ch 96), W W^T would be a 24,576^2 matrix (2.4 GB in float32, which
  XLA:GPU materialises). There the same product is formed as W (W^T W) - diag(W W^T) W:
  (W W^T * (1 - I)) W = W W^T W - diag(W W^T) W, with W^T W columns x columns (20 x 20).
  """
  def leaf(path, w):
    if w.ndim < 2 or any(getattr(k, "key", None) == "shared" for k in path):
      return jnp.zeros_like(w)
    mat = w.reshape(-1, w.shape[-1]).T
    rows, cols = mat.shape
    if rows > cols:
      row_norms = jnp.sum(mat * mat, axis=1, keepdims=True)  # diag(W W^T)
      product = mat @ (mat.T @ mat) - row_norms * mat
    else:
      gram = mat @ mat.T
      gram = gram * (1.0 - jnp.eye(rows, dtype=gram.dtype))
      product = gram @ mat
    return (2.0 * strength * product).T.reshape(w.shape)
  return jax.tree_util.tree_map_with_path(leaf, params)


def images_to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


class BigGANTrainer(checkpointing.StateLayout):
  """Holds the models, optimizers and compiled functions for one config and mesh."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int, mesh: Mesh):
    self.config = config
    self.mesh = mesh
    self.models: ModelPair = build_models(config.model, num_classes,
                                          platform=mesh.devices.flat[0].platform)
    self.num_classes = self.models.num_classes
    if config.batch_size % config.num_accumulations:
      raise ConfigError(f"batch_size={config.batch_size} must be divisible by "
                       f"num_accumulations={config.num_accumulations}")
    self.micro_batch = config.batch_size // config.num_accumulations
    parallel.check_batch_divisible(self.micro_batch, mesh,
                                   "batch_size / num_accumulations")
    self.unroll = loops.should_unroll(config.scan_unroll)
    if config.diversity_reg < 0 or config.diversity_reg_max <= 0:
      raise ConfigError(f"diversity_reg={config.diversity_reg} must be >= 0 and "
                        f"diversity_reg_max={config.diversity_reg_max} > 0")
    self.diversity_reg = float(config.diversity_reg)
    if self.diversity_reg and self.micro_batch % 2:
      raise ConfigError(
          f"diversity_reg pairs G's samples, so batch_size / num_accumulations "
          f"({self.micro_batch}) must be even; change batch_size or set diversity_reg=0")
    self.augmenter = augment.Augmenter(config)
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
    self.generate = jax.jit(self._generate, static_argnames=("train", "truncation"))

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
        ema_params=g_params, ema_state=g_vars, augment=augment.init_state(self.config))

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
  def _augment(self, x, key, aug_state):
    """D's input through the configured augmentation (none: untouched)."""
    if not self.augmenter.enabled:
      return x
    return self._shard_batch(self.augmenter.apply(x, key, aug_state))

  def _d_micro_step(self, g_params, d_params, carry, inputs):
    g_state, d_state, grad_sum, aug_state = carry
    real, real_labels, key = inputs
    z, fake_labels = self._latents(key)
    fake, g_state = self._g_forward(g_params, g_state, z, fake_labels)
    fake = jax.lax.stop_gradient(fake)
    # One D pass over fakes and reals, interleaved per example so that every device
    # keeps its own shard (no resharding); D has no batch-dependent layers.
    batch = real.shape[0]
    x = jnp.stack([fake, images_to_float(real)], axis=1).reshape((2 * batch,) + real.shape[1:])
    y = jnp.stack([fake_labels, real_labels], axis=1).reshape(-1)
    x = self._augment(x, key, aug_state)

    def loss_fn(params):
      scores, new_d_state = self._d_forward(params, d_state, x, y)
      scores = scores.reshape(batch, 2)
      d_fake, d_real = scores[:, 0], scores[:, 1]
      loss_real, loss_fake = self.d_loss_fn(d_real, d_fake)
      metrics = {"d_loss_real": loss_real, "d_loss_fake": loss_fake,
                 "d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}
      return loss_real + loss_fake, (new_d_state, metrics, d_real)

    (loss, (d_state, metrics, d_real)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        d_params)
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    aug_state = self.augmenter.observe(aug_state, d_real)
    return (g_state, d_state, grad_sum, aug_state), dict(metrics, d_loss=loss)

  def _d_update(self, g_params, carry, inputs):
    g_state, d_params, d_state, d_opt_state, aug_state = carry
    real, labels, key = inputs
    keys = jax.random.split(key, self.config.num_accumulations)
    zeros = jax.tree.map(jnp.zeros_like, d_params)
    (g_state, d_state, grads, aug_state), metrics = loops.scan(
        functools.partial(self._d_micro_step, g_params, d_params),
        (g_state, d_state, zeros, aug_state), (real, labels, keys), self.unroll)
    grads = jax.tree.map(lambda g: g / self.config.num_accumulations, grads)
    updates, d_opt_state = self.d_tx.update(grads, d_opt_state, d_params)
    d_params = optax.apply_updates(d_params, updates)
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["d_grad_norm"] = optax.global_norm(grads)
    metrics["layer_grad_norm/D"] = monitoring.layer_norms(grads)
    return (g_state, d_params, d_state, d_opt_state, aug_state), metrics

  def _g_micro_step(self, g_params, d_params, aug_state, carry, key):
    g_state, d_state, grad_sum = carry
    z, labels = self._latents(key)
    if self.diversity_reg:  # Pairs (2i, 2i + 1) of one class; on one device when the
      # per-device batch is even, as at scale.
      labels = self._shard_batch(jnp.repeat(labels[0::2], 2))

    def loss_fn(params):
      fake, new_g_state = self._g_forward(params, g_state, z, labels)
      metrics = {}
      loss = 0.0
      if self.diversity_reg:
        ratio = losses.pair_diversity(fake, z)
        metrics["g_diversity"] = jnp.mean(ratio)
        loss = -self.diversity_reg * jnp.mean(
            jnp.minimum(ratio, self.config.diversity_reg_max))
      fake = self._augment(fake, key, aug_state)
      scores, new_d_state = self._d_forward(d_params, d_state, fake, labels)
      adversarial = self.g_loss_fn(scores)
      metrics["g_loss"] = adversarial
      total = adversarial + loss if self.diversity_reg else adversarial
      return total, (new_g_state, new_d_state, metrics)

    (_, (g_state, d_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        g_params)
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    return (g_state, d_state, grad_sum), metrics

  def _train_iteration(self, state: TrainState, batch: dict[str, jax.Array]
                       ) -> tuple[TrainState, dict[str, jax.Array]]:
    cfg = self.config
    key = jax.random.fold_in(state.rng, state.step)
    d_key, g_key = jax.random.split(key)

    # Discriminator: num_d_steps updates, each on its own real batch.
    (g_state, d_params, d_state, d_opt_state, aug_state), d_metrics = loops.scan(
        functools.partial(self._d_update, state.g_params),
        (state.g_state, state.d_params, state.d_state, state.d_opt_state, state.augment),
        (batch["images"], batch["labels"], jax.random.split(d_key, cfg.num_d_steps)),
        self.unroll)

    # Generator: one update against the updated D.
    zeros = jax.tree.map(jnp.zeros_like, state.g_params)
    (g_state, d_state, g_grads), g_metrics = loops.scan(
        functools.partial(self._g_micro_step, state.g_params, d_params, state.augment),
        (g_state, d_state, zeros), jax.random.split(g_key, cfg.num_accumulations), self.unroll)
    g_grads = jax.tree.map(lambda g: g / cfg.num_accumulations, g_grads)
    if cfg.ortho_reg > 0:
      g_grads = jax.tree.map(jnp.add, g_grads, ortho_reg_grads(state.g_params, cfg.ortho_reg))
    updates, g_opt_state = self.g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)

    # G-EMA over parameters and state (BN running stats, SN vectors), as
    # BigGAN-PyTorch averages the whole state dict; a plain copy before ema_start.
    # BigGAN-PyTorch counts iterations from 1 (train.py increments `itr` before each
    # update) and decays when itr >= ema_start: this update is iteration step + 1.
    decay = jnp.where(state.step + 1 < cfg.ema_start, 0.0, cfg.ema_decay)
    ema_params = ema_update(state.ema_params, g_params, decay)
    ema_state = ema_update(state.ema_state, g_state, decay)

    metrics = jax.tree.map(jnp.mean, d_metrics)  # Per-layer D norms: mean over D steps.
    metrics["d_margin"] = metrics["d_real"] - metrics["d_fake"]
    metrics.update(jax.tree.map(jnp.mean, g_metrics))  # g_loss: the adversarial term.
    metrics["g_grad_norm"] = optax.global_norm(g_grads)
    metrics["layer_grad_norm/G"] = monitoring.layer_norms(g_grads)
    # Non-finite iff some parameter is: the guard never keeps such a state.
    metrics["g_param_norm"] = optax.global_norm(g_params)
    metrics["d_param_norm"] = optax.global_norm(d_params)
    aug_state = self.augmenter.adapt(aug_state, state.step, self.examples_per_iteration)
    metrics.update(self.augmenter.metrics(aug_state))
    new_state = TrainState(
        step=state.step + 1, rng=state.rng, g_params=g_params, g_state=g_state,
        d_params=d_params, d_state=d_state, g_opt_state=g_opt_state, d_opt_state=d_opt_state,
        ema_params=ema_params, ema_state=ema_state, augment=aug_state)
    return new_state, metrics

  # ---------------------------------------------------------------- sampling
  def _generate(self, params, state, z, y, train: bool = False,
                truncation: float | None = None):
    images = self.models.generator.apply({"params": params, **state}, z, y, train=train,
                                         truncation=truncation)
    return images_to_uint8(images)

  def standing_stats(self, params, state, key: jax.Array, num_batches: int = 16,
                     batch_size: int = 256):
    """BigGAN's standing statistics: BN statistics averaged over `num_batches`
    batches of fresh samples, replacing the running averages for sampling."""
    if self.config.model.get("truncation_bn_stats", 0):
      raise ConfigError("standing statistics replace one set of BN statistics; this "
                        "generator (TF-Hub BigGAN-deep) stores them per truncation value. "
                        "Sample without --standing_stats.")
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


# ==================================================================== the task
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


class BigGANTask(training.TrainerTask):
  """BigGAN for `gan_core.training`: one constant plan (num_d_steps x accumulations x
  micro-batch real images per iteration), finished after `num_train_steps` iterations."""

  kind = "biggan"
  plan_interval = 1
  generator_fields = ("ema_params", "ema_state")
  default_config = staticmethod(base_config)
  absent_config_means = {"model.output_bn_eps": 1e-5, "model.sn_eval": "power_iteration",
                         "model.truncation_bn_stats": 0, "diversity_reg": 0.0,
                         "diversity_reg_max": 1.0}

  @staticmethod
  def sampling_config(config: ml_collections.ConfigDict,
                      num_devices: int) -> ml_collections.ConfigDict:
    """The training batch need not split over the sampling devices; the trainer checks it."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.batch_size, config.num_accumulations = num_devices, 1
    config.diversity_reg = 0.0  # A term of G's update, which sampling never builds.
    return config

  @property
  def latent_size(self) -> int:
    return self.trainer.models.dim_z

  def standing_stats(self, state: TrainState, key: jax.Array, num_batches: int,
                     batch_size: int) -> TrainState:
    return state.replace(ema_state=self.trainer.standing_stats(
        state.ema_params, state.ema_state, key, num_batches, batch_size))

  def build(self, dataset_classes: int, mesh) -> None:
    self.trainer = BigGANTrainer(self.config, resolve_num_classes(self.config, dataset_classes),
                                 mesh)

  def position(self, state: TrainState) -> tuple[int, int]:
    step = int(monitoring.to_host(state.step))
    return step, step * self.trainer.examples_per_iteration

  def plan(self, position: int) -> Plan:
    return Plan(leading_shape=self.trainer.batch_leading_shape,
                resolution=self.config.model.resolution)

  def iteration(self, state: TrainState, batch, plan: Plan):
    return self.trainer.train_iteration(state, batch)

  def guard_scalars(self, metrics, state: TrainState, step: int):
    """Every scalar, with per-layer singular values of G and D; the guard watches all."""
    scalars = monitoring.flatten_scalars(monitoring.to_host(metrics))
    spectral = monitoring.to_host({"G": state.g_state["spectral"],
                                   "D": state.d_state["spectral"]})
    scalars.update(monitoring.singular_values(spectral["G"], "G"))
    scalars.update(monitoring.singular_values(spectral["D"], "D"))
    watched = dict(scalars)
    scalars.update(g_lr=self.config.g_lr, d_lr=self.config.d_lr)
    return scalars, watched

  @property
  def truncation_in_model(self) -> bool:
    """The TF-Hub BigGAN-deep variant: truncation also picks G's BN statistics, and
    latents follow the modules' convention (see `sample_latents`)."""
    return bool(self.config.model.get("truncation_bn_stats", 0))

  def latents(self, key: jax.Array, num: int, truncation: float | None = None):
    return sample_latents(key, num, self.trainer.models.dim_z, self.num_classes, truncation,
                          tfhub=self.truncation_in_model)

  def generate(self, state: TrainState, z, y, plan: Plan,
               truncation: float | None = None) -> jax.Array:
    if self.truncation_in_model:
      return self.trainer.generate(state.ema_params, state.ema_state, z, y,
                                   truncation=check_tfhub_truncation(truncation))
    return self.trainer.generate(state.ema_params, state.ema_state, z, y)

  def finished(self, step: int, examples: int) -> bool:
    return step >= self.config.num_train_steps

  def remaining(self, step: int, examples: int) -> tuple[float, str]:
    return max(self.config.num_train_steps - step, 0), "steps"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains until config.num_train_steps, resuming from workdir's latest checkpoint."""
  if config.model.get("truncation_bn_stats", 0):
    raise ConfigError(
        "model.truncation_bn_stats > 0 is the TF-Hub BigGAN-deep generator, which samples and "
        "evaluates (python -m biggan_jax.sample / .evaluate) but does not train: its BN "
        "statistics are stored per truncation value with no rule to update them, and no "
        "discriminator or optimizer state was released. To fine-tune, import a BigGAN-PyTorch "
        "checkpoint (--from=biggan_pytorch) instead.")
  return training.train(BigGANTask(config), config, workdir)
