"""BigGAN building blocks: spectrally normalised layers, (conditional) batch norm,
self-attention and the residual blocks of BigGAN and BigGAN-deep.

Layouts are NHWC; kernels are HWIO. Conventions follow BigGAN-PyTorch:

* Spectral norm keeps one left singular vector estimate `u` per weight in the
  `spectral` collection (never in `params`) and runs one power iteration per
  forward. The estimate is stored only when `spectral` is mutable, so training
  forwards update it and sampling forwards do not. The current estimate of the
  largest singular value is stored beside it as `sigma` for diagnostics.
* Batch norm normalises with the statistics of the whole (global) batch in
  training; under `jit` over a batch-sharded array these are the cross-replica
  statistics. Running averages live in `batch_stats` and are updated only when
  that collection is mutable (momentum 0.1, unbiased variance, as in PyTorch).
* Spectral norm, batch-norm statistics and softmax run in float32 whatever the
  compute `dtype`.

Two options serve the TF-Hub BigGAN-deep generators (imported through
`pytorch-pretrained-biggan`'s layout; see biggan_jax/tfhub_weights.py), whose graph
differs from BigGAN-PyTorch's in evaluation:

* `sn_eval='stored'`: outside training (the `spectral` collection immutable) the
  stored `sigma` divides the weight, with no power iteration, as
  `torch.nn.utils.spectral_norm` evaluates (sigma = u . W v from its stored u, v).
  The default, 'power_iteration', runs one power iteration without storing it, as
  BigGAN-PyTorch's SN layers do in eval mode.
* `truncation_stats=N`: the running statistics are N rows, one per truncation value
  0, 1/(N-1), ..., 1, and evaluation reads them at the (static) truncation the way the
  TF-Hub module does (`truncation_statistics`). Training normalises with batch
  statistics and updates nothing: the modules ship no rule to update them.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_core.errors import ConfigError

Dtype = Any
SPECTRAL = "spectral"
BATCH_STATS = "batch_stats"

orthogonal_init = nn.initializers.orthogonal()


def torch_default_bias_init(fan_in: int) -> Callable:
  """PyTorch's default bias initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  BigGAN-PyTorch re-initialises weights (orthogonally) but keeps these biases.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _l2_normalize(x: jax.Array, eps: float) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x), eps)


SN_EVAL_MODES = ("power_iteration", "stored")
# The name scope of the spectral normalisation's ops (power iteration, sigma, W / sigma) in
# the compiled program's metadata: profiles and `gan_core.perf.kernel_census` attribute
# kernels to it. Metadata only; the computation is the same.
SN_SCOPE = "spectral_norm"


def spectral_normalize(module: nn.Module, weight_matrix: jax.Array, eps: float,
                       eval_mode: str = "power_iteration") -> jax.Array:
  """Returns sigma, the power-iteration estimate of the largest singular value.

  `weight_matrix` is (outputs, inputs), the layout whose rows BigGAN-PyTorch's
  `u` vector indexes. One power iteration per call; `u` and `sigma` are stored
  in the `spectral` collection when it is mutable (and not at init). Gradients
  flow through the weight only, as in the paper (u and v are constants).
  With `eval_mode='stored'` and the collection immutable, the stored sigma is
  returned instead (torch.nn.utils.spectral_norm's evaluation).
  """
  weight_matrix = weight_matrix.astype(jnp.float32)
  num_outputs = weight_matrix.shape[0]
  u_var = module.variable(SPECTRAL, "u",
                          lambda: jax.random.normal(module.make_rng("params"), (num_outputs,),
                                                    jnp.float32))
  sigma_var = module.variable(SPECTRAL, "sigma", lambda: jnp.ones((), jnp.float32))
  if eval_mode not in SN_EVAL_MODES:
    raise ValueError(f"sn_eval={eval_mode!r}: choose one of {SN_EVAL_MODES}")
  if (eval_mode == "stored" and not module.is_mutable_collection(SPECTRAL)
      and not module.is_initializing()):
    return sigma_var.value
  w_const = jax.lax.stop_gradient(weight_matrix)
  v = _l2_normalize(u_var.value @ w_const, eps)
  u = _l2_normalize(w_const @ v, eps)
  sigma = u @ weight_matrix @ v
  if module.is_mutable_collection(SPECTRAL) and not module.is_initializing():
    u_var.value = u
    sigma_var.value = jax.lax.stop_gradient(sigma)
  return sigma


class SNDense(nn.Module):
  """Spectrally normalised linear layer (orthogonal init)."""
  features: int
  use_bias: bool = True
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  sn_eval: str = "power_iteration"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", orthogonal_init, (fan_in, self.features), jnp.float32)
    with jax.named_scope(SN_SCOPE):
      sigma = spectral_normalize(self, kernel.T, self.sn_eps, self.sn_eval)
      kernel = (kernel / sigma).astype(self.dtype)
    y = jnp.dot(x.astype(self.dtype), kernel)
    if self.use_bias:
      bias = self.param("bias", torch_default_bias_init(fan_in), (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class SNConv(nn.Module):
  """Spectrally normalised 2-D convolution, stride 1, 'SAME' padding (orthogonal init)."""
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  sn_eval: str = "power_iteration"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, fan_in = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", orthogonal_init, (k, k, fan_in, self.features), jnp.float32)
    with jax.named_scope(SN_SCOPE):
      sigma = spectral_normalize(self, kernel.reshape(-1, self.features).T, self.sn_eps,
                                 self.sn_eval)
      kernel = (kernel / sigma).astype(self.dtype)
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = self.param("bias", torch_default_bias_init(fan_in * k * k), (self.features,),
                        jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class SNEmbed(nn.Module):
  """Spectrally normalised embedding (the discriminator's projection table)."""
  num_embeddings: int
  features: int
  sn_eps: float = 1e-6

  @nn.compact
  def __call__(self, labels: jax.Array) -> jax.Array:
    table = self.param("embedding", orthogonal_init, (self.num_embeddings, self.features),
                       jnp.float32)
    with jax.named_scope(SN_SCOPE):
      sigma = spectral_normalize(self, table, self.sn_eps)
      table = table / sigma
    return jnp.take(table, labels, axis=0)


def truncation_statistics(means: jax.Array, variances: jax.Array, truncation: float | None
                          ) -> tuple[jax.Array, jax.Array]:
  """The TF-Hub BigGAN-deep modules' statistics at `truncation` from N stored rows (for
  truncation 0, 1/(N-1), ..., 1), computed as `pytorch-pretrained-biggan` does: with
  `coef, i = modf(truncation * (N-1))` (in double precision, through its step 1/(N-1)),
  row i when coef is 0, else `row[i] * coef + row[i+1] * (1 - coef)`. (These weights are
  the reverse of a linear interpolation's; it is the module's behaviour, which the import
  must reproduce.)"""
  num = means.shape[0]
  if truncation is None:
    raise ValueError("these batch norms keep statistics per truncation value; pass the "
                     "truncation (0 < t <= 1) to the generator")
  if not 0.0 < truncation <= 1.0:
    raise ValueError(f"truncation {truncation} outside (0, 1], the range the statistics cover")
  coef, index = math.modf(truncation / (1.0 / (num - 1)))
  index = int(index)
  if coef == 0.0 or index + 1 >= num:
    return means[index], variances[index]
  return (means[index] * coef + means[index + 1] * (1.0 - coef),
          variances[index] * coef + variances[index + 1] * (1.0 - coef))


class BatchStatistics(nn.Module):
  """Affine-free batch normalisation: returns (x - mean) / sqrt(var + eps) in float32.

  `use_running_average=False` normalises with the batch's biased statistics and,
  when `batch_stats` is mutable, updates the running averages
  (`running = (1 - momentum) * running + momentum * batch`, unbiased variance),
  exactly as torch.nn.functional.batch_norm does. momentum=1 makes the running
  values equal the last batch's, which standing statistics use. With
  `truncation_stats` N > 0 the running values are N rows read at `truncation`
  (see the module docstring) and never updated.
  """
  eps: float = 1e-5
  momentum: float = 0.1
  truncation_stats: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool,
               truncation: float | None = None) -> jax.Array:
    channels = x.shape[-1]
    shape = (self.truncation_stats, channels) if self.truncation_stats else (channels,)
    running_mean = self.variable(BATCH_STATS, "mean", jnp.zeros, shape, jnp.float32)
    running_var = self.variable(BATCH_STATS, "var", jnp.ones, shape, jnp.float32)
    x = x.astype(jnp.float32)
    if use_running_average and self.truncation_stats:
      mean, var = truncation_statistics(running_mean.value, running_var.value, truncation)
    elif use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axes)
      var = jnp.mean(jnp.square(x - mean), axes)
      if (self.is_mutable_collection(BATCH_STATS) and not self.is_initializing()
          and not self.truncation_stats):
        count = math.prod(x.shape[:-1])
        unbiased = var * (count / max(count - 1, 1))
        running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * mean
        running_var.value = (1 - self.momentum) * running_var.value + self.momentum * unbiased
    return (x - mean) * jax.lax.rsqrt(var + self.eps)


class BatchNorm(nn.Module):
  """Batch norm with a learnable per-channel gain (init 1) and bias (init 0)."""
  eps: float = 1e-5
  momentum: float = 0.1
  dtype: Dtype = jnp.float32
  truncation_stats: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool,
               truncation: float | None = None) -> jax.Array:
    channels = x.shape[-1]
    normed = BatchStatistics(self.eps, self.momentum, self.truncation_stats,
                             name="stats")(x, use_running_average, truncation)
    gain = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    return (normed * gain + bias).astype(self.dtype)


class ConditionalBatchNorm(nn.Module):
  """BigGAN's class-conditional BN: `BN(x) * (1 + gain(c)) + bias(c)`.

  gain and bias are spectrally normalised linear maps without bias terms from the
  conditioning vector `c` (shared embedding, possibly concatenated with a z chunk).
  The `1 +` makes a freshly initialised layer close to plain BN.
  """
  eps: float = 1e-5
  momentum: float = 0.1
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  truncation_stats: int = 0
  sn_eval: str = "power_iteration"

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, use_running_average: bool,
               truncation: float | None = None) -> jax.Array:
    channels = x.shape[-1]
    normed = BatchStatistics(self.eps, self.momentum, self.truncation_stats,
                             name="stats")(x, use_running_average, truncation)
    dense = lambda name: SNDense(channels, use_bias=False, sn_eps=self.sn_eps,
                                 sn_eval=self.sn_eval, name=name)
    gain = dense("gain")(cond)
    bias = dense("bias")(cond)
    gain = gain.astype(jnp.float32)[:, None, None, :]
    bias = bias.astype(jnp.float32)[:, None, None, :]
    return (normed * (1.0 + gain) + bias).astype(self.dtype)


def upsample_nearest(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (2, 2), (2, 2))


def max_pool(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (2, 2), (2, 2))


def attend(theta: jax.Array, phi: jax.Array, g: jax.Array, dtype: Dtype = jnp.float32,
           query_chunk: int = 0) -> jax.Array:
  """softmax(theta phi^T) g for theta [n, q, c], phi [n, k, c], g [n, k, c']: [n, q, c'].

  The logits and softmax are float32, the attention map is cast to `dtype` for the second
  product. The map is [n, q, k]: at 256x256, G's attention at 128x128 has q = 16384 and
  k = 4096, 256 MiB per image in float32, and the backward pass keeps it. With
  `query_chunk` > 0 (a divisor of q) the rows are computed `query_chunk` at a time in a loop,
  each chunk rematerialised in the backward pass, so one [n, query_chunk, k] map is live
  instead of the whole map and its softmax. Every row's softmax depends only on its own
  logits, so this is the same function, at the price of computing the forward attention
  twice. `query_chunk` = -N (what `model.attention_query_chunk=-1` builds on CPU) asks for
  chunks of N where N divides q and q > N, and the whole map otherwise.
  """
  def rows(theta_rows: jax.Array) -> jax.Array:
    logits = jnp.einsum("nqc,nkc->nqk", theta_rows, phi, preferred_element_type=jnp.float32)
    beta = jax.nn.softmax(logits, axis=-1).astype(dtype)
    return jnp.einsum("nqk,nkc->nqc", beta, g)

  n, q, c = theta.shape
  if query_chunk < 0:  # Where it fits: chunks of -query_chunk, else the whole map.
    query_chunk = -query_chunk if q % -query_chunk == 0 else 0
  if query_chunk == 0 or query_chunk >= q:
    return rows(theta)
  if q % query_chunk:
    raise ConfigError(f"model.attention_query_chunk={query_chunk} must divide the "
                      f"{q} query positions of the attention it applies to (use a power of 2)")
  chunks = theta.reshape(n, q // query_chunk, query_chunk, c).swapaxes(0, 1)
  out = jax.lax.map(jax.checkpoint(rows), chunks)
  return out.swapaxes(0, 1).reshape(n, q, g.shape[-1])


class SelfAttention(nn.Module):
  """SAGAN non-local block: x + gamma * o(softmax(theta^T phi) g), phi and g 2x2 max-pooled.

  theta/phi have C/8 channels, g has C/2; all projections are bias-free SN 1x1
  convolutions; gamma is a learnable scalar initialised to 0.

  `query_chunk` > 0 computes the attention `query_chunk` query positions at a time (see
  `attend`): the same function and parameters, with at most one chunk's attention map live.
  """
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  sn_eval: str = "power_iteration"
  query_chunk: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    conv = lambda feats, name: SNConv(feats, 1, use_bias=False, sn_eps=self.sn_eps,
                                      dtype=self.dtype, sn_eval=self.sn_eval, name=name)
    theta = conv(c // 8, "theta")(x).reshape(n, h * w, c // 8)
    phi = max_pool(conv(c // 8, "phi")(x)).reshape(n, h * w // 4, c // 8)
    g = max_pool(conv(c // 2, "g")(x)).reshape(n, h * w // 4, c // 2)
    attended = attend(theta, phi, g, self.dtype, self.query_chunk).reshape(n, h, w, c // 2)
    o = conv(c, "o")(attended)
    gamma = self.param("gamma", nn.initializers.zeros, (), jnp.float32)
    return x + (gamma * o).astype(x.dtype)


class GBlock(nn.Module):
  """BigGAN generator block: CBN-ReLU-up-conv3-CBN-ReLU-conv3, 1x1 conv shortcut."""
  out_channels: int
  upsample: bool = True
  bn_eps: float = 1e-5
  bn_momentum: float = 0.1
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, train: bool) -> jax.Array:
    cbn = lambda name: ConditionalBatchNorm(self.bn_eps, self.bn_momentum, self.sn_eps,
                                            self.dtype, name=name)
    conv = lambda feats, k, name: SNConv(feats, k, sn_eps=self.sn_eps, dtype=self.dtype,
                                         name=name)
    in_channels = x.shape[-1]
    h = nn.relu(cbn("bn1")(x, cond, not train))
    if self.upsample:
      h, x = upsample_nearest(h), upsample_nearest(x)
    h = conv(self.out_channels, 3, "conv1")(h)
    h = nn.relu(cbn("bn2")(h, cond, not train))
    h = conv(self.out_channels, 3, "conv2")(h)
    if in_channels != self.out_channels or self.upsample:
      x = conv(self.out_channels, 1, "conv_sc")(x)
    return h + x


class GBlockDeep(nn.Module):
  """BigGAN-deep generator block: bottleneck (1x1, 3x3, 3x3, 1x1) with four CBNs.

  The skip path keeps the first `out_channels` channels of x (channel dropping)
  and is upsampled alongside the residual path; no learnable shortcut.
  """
  out_channels: int
  upsample: bool = False
  channel_ratio: int = 4
  bn_eps: float = 1e-5
  bn_momentum: float = 0.1
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32
  truncation_stats: int = 0
  sn_eval: str = "power_iteration"

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, train: bool,
               truncation: float | None = None) -> jax.Array:
    def cbn(name):
      layer = ConditionalBatchNorm(self.bn_eps, self.bn_momentum, self.sn_eps, self.dtype,
                                   self.truncation_stats, self.sn_eval, name=name)
      return lambda h: layer(h, cond, not train, truncation)
    conv = lambda feats, k, name: SNConv(feats, k, sn_eps=self.sn_eps, dtype=self.dtype,
                                         sn_eval=self.sn_eval, name=name)
    in_channels = x.shape[-1]
    hidden = in_channels // self.channel_ratio
    h = conv(hidden, 1, "conv1")(nn.relu(cbn("bn1")(x)))
    h = nn.relu(cbn("bn2")(h))
    if in_channels != self.out_channels:
      x = x[..., :self.out_channels]
    if self.upsample:
      h, x = upsample_nearest(h), upsample_nearest(x)
    h = conv(hidden, 3, "conv2")(h)
    h = conv(hidden, 3, "conv3")(nn.relu(cbn("bn3")(h)))
    h = conv(self.out_channels, 1, "conv4")(nn.relu(cbn("bn4")(h)))
    return h + x


class DBlock(nn.Module):
  """BigGAN discriminator block (wide: both convs output `out_channels`).

  With pre-activation (all blocks but the first) the input goes through ReLU and
  the shortcut convolves before pooling; the first block pools before it.
  """
  out_channels: int
  downsample: bool = True
  preactivation: bool = True
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda feats, k, name: SNConv(feats, k, sn_eps=self.sn_eps, dtype=self.dtype,
                                         name=name)
    in_channels = x.shape[-1]
    h = nn.relu(x) if self.preactivation else x
    h = conv(self.out_channels, 3, "conv1")(h)
    h = conv(self.out_channels, 3, "conv2")(nn.relu(h))
    if self.downsample:
      h = avg_pool(h)
    if in_channels != self.out_channels or self.downsample:
      shortcut = conv(self.out_channels, 1, "conv_sc")
      if self.preactivation:
        x = shortcut(x)
        x = avg_pool(x) if self.downsample else x
      else:
        x = avg_pool(x) if self.downsample else x
        x = shortcut(x)
    return h + x


class DBlockDeep(nn.Module):
  """BigGAN-deep discriminator block: bottleneck with a concat-extending skip.

  The skip is (pooled) x, extended to `out_channels` by concatenating a learned
  1x1 projection of x with `out - in` channels when the widths differ.
  """
  out_channels: int
  downsample: bool = False
  channel_ratio: int = 4
  sn_eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda feats, k, name: SNConv(feats, k, sn_eps=self.sn_eps, dtype=self.dtype,
                                         name=name)
    in_channels = x.shape[-1]
    hidden = self.out_channels // self.channel_ratio
    h = conv(hidden, 1, "conv1")(nn.relu(x))
    h = conv(hidden, 3, "conv2")(nn.relu(h))
    h = conv(hidden, 3, "conv3")(nn.relu(h))
    h = nn.relu(h)
    if self.downsample:
      h, x = avg_pool(h), avg_pool(x)
    h = conv(self.out_channels, 1, "conv4")(h)
    if in_channels != self.out_channels:
      x = jnp.concatenate([x, conv(self.out_channels - in_channels, 1, "conv_sc")(x)], axis=-1)
    return h + x
