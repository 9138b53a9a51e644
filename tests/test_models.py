"""Architecture facts: parameter counts, conditional BN, spectral norm, attention."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from biggan_jax import layers
from biggan_jax.models import build_models
from conftest import load_config
from gan_core.errors import ConfigError


def count(tree):
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def param_counts(config):
  pair = build_models(config.model, config.model.num_classes)
  r, dz = config.model.resolution, config.model.dim_z
  y = jnp.zeros((2,), jnp.int32)
  g = jax.eval_shape(lambda: pair.generator.init(jax.random.PRNGKey(0), jnp.zeros((2, dz)), y))
  d = jax.eval_shape(lambda: pair.discriminator.init(jax.random.PRNGKey(0),
                                                      jnp.zeros((2, r, r, 3)), y))
  return count(g["params"]), count(d["params"]), g, d


# BigGAN-PyTorch's trainable-parameter counts (the published models).
@pytest.mark.parametrize("name,arg,overrides,expected", [
    ("imagenet128", None, {}, (70_433_988, 87_982_370)),
    ("imagenet128", None, {"ch": 64}, (31_978_628, 39_448_258)),
    ("imagenet128_deep", None, {}, (50_244_484, 34_590_210)),
    ("imagenet128", "deep", {}, (50_244_484, 34_590_210)),
    ("imagenet256", None, {}, (82_097_604, 99_225_890)),
])
def test_parameter_counts_equal_biggan_pytorch(name, arg, overrides, expected):
  config = load_config(name, arg)
  for key, value in overrides.items():
    config.model[key] = value
  g, d, _, _ = param_counts(config)
  assert (g, d) == expected


@pytest.mark.parametrize("name", ["imagenet512", "imagenet256_deep", "imagenet512_deep"])
def test_other_presets_build_and_keep_state_out_of_params(name):
  g, d, g_vars, d_vars = param_counts(load_config(name))
  assert g > 4e7 and d > 3e7
  assert set(g_vars) == {"params", "batch_stats", "spectral"}
  assert set(d_vars) == {"params", "spectral"}
  # Power-iteration vectors and BN statistics are never trainable parameters.
  flat = jax.tree_util.tree_flatten_with_path(g_vars["params"])[0]
  assert not any("u" == getattr(p[-1], "key", None) for p, _ in flat)


def test_conditional_bn_is_bn_times_one_plus_gain_plus_bias():
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 4, 4, 3)) * 3 + 1
  cond = jax.random.normal(jax.random.PRNGKey(1), (6, 5))
  module = layers.ConditionalBatchNorm(eps=1e-5)
  variables = module.init(jax.random.PRNGKey(2), x, cond, False)
  params = variables["params"]
  out = module.apply(variables, x, cond, False)
  mean = x.mean((0, 1, 2))
  var = x.var((0, 1, 2))
  normed = (x - mean) / np.sqrt(var + 1e-5)

  def linear(name):  # SN linear without bias, using the stored u (one iteration, not kept).
    w = np.asarray(params[name]["kernel"])
    u = np.asarray(variables["spectral"][name]["u"])
    v = w @ u
    v /= max(np.linalg.norm(v), 1e-6)
    u2 = w.T @ v
    u2 /= max(np.linalg.norm(u2), 1e-6)
    sigma = u2 @ w.T @ v
    return np.asarray(cond) @ (w / sigma)

  gain, bias = linear("gain"), linear("bias")
  expected = normed * (1 + gain[:, None, None]) + bias[:, None, None]
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  # With zero conditioning the layer is plain (affine-free) BN: the "+1" matters.
  out0 = module.apply(variables, x, jnp.zeros_like(cond), False)
  np.testing.assert_allclose(out0, normed, rtol=1e-4, atol=1e-4)


def test_batch_norm_running_statistics_follow_torch():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2)) * 2 + 5
  module = layers.BatchStatistics(eps=1e-5, momentum=0.1)
  variables = module.init(jax.random.PRNGKey(0), x, False)
  assert np.all(variables["batch_stats"]["mean"] == 0)  # init does not update
  _, new = module.apply(variables, x, False, mutable=["batch_stats"])
  n = 4 * 3 * 3
  np.testing.assert_allclose(new["batch_stats"]["mean"], 0.1 * x.mean((0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(new["batch_stats"]["var"],
                             0.9 + 0.1 * x.var((0, 1, 2)) * n / (n - 1), rtol=1e-5)
  # Immutable statistics: normalisation still uses the batch, nothing is stored.
  out = module.apply(variables, x, False)
  np.testing.assert_allclose(out.mean((0, 1, 2)), 0, atol=1e-5)


def test_spectral_norm_power_iteration_converges_and_updates_only_when_mutable():
  dense = layers.SNDense(7, sn_eps=1e-6)
  x = jnp.ones((2, 5))
  variables = dense.init(jax.random.PRNGKey(0), x)
  assert set(variables) == {"params", "spectral"}
  kernel = np.asarray(variables["params"]["kernel"]) * np.linspace(0.5, 3, 7)
  variables = {"params": {**variables["params"], "kernel": jnp.asarray(kernel)},
               "spectral": variables["spectral"]}
  u0 = variables["spectral"]["u"]
  # Immutable `spectral` (sampling): the forward works and stores nothing.
  dense.apply(variables, x)
  _, kept = dense.apply(variables, x, mutable=["spectral"])
  assert not np.allclose(kept["spectral"]["u"], u0)  # A training forward advances u.
  for _ in range(50):
    _, updates = dense.apply(variables, x, mutable=["spectral"])
    variables = {**variables, **updates}
  true_sigma = np.linalg.svd(kernel, compute_uv=False)[0]
  np.testing.assert_allclose(variables["spectral"]["sigma"], true_sigma, rtol=1e-4)
  # The layer uses W / sigma: its spectral norm is 1.
  jac = jax.jacobian(lambda v: dense.apply(variables, v[None])[0])(jnp.zeros(5))
  np.testing.assert_allclose(np.linalg.svd(np.asarray(jac), compute_uv=False)[0], 1.0, rtol=1e-3)


def test_attention_starts_as_identity_and_uses_pooled_keys():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
  attn = layers.SelfAttention()
  variables = attn.init(jax.random.PRNGKey(1), x)
  assert variables["params"]["gamma"].shape == () and float(variables["params"]["gamma"]) == 0
  np.testing.assert_array_equal(attn.apply(variables, x), x)
  p = variables["params"]
  assert p["theta"]["kernel"].shape == (1, 1, 16, 2)
  assert p["phi"]["kernel"].shape == (1, 1, 16, 2)
  assert p["g"]["kernel"].shape == (1, 1, 16, 8)
  assert p["o"]["kernel"].shape == (1, 1, 8, 16)
  assert "bias" not in p["theta"]


def test_generator_hierarchical_latents_reach_each_block(tiny):
  pair = build_models(tiny.model, 10)
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 16))
  y = jnp.arange(4, dtype=jnp.int32)
  variables = pair.generator.init(jax.random.PRNGKey(1), z, y)
  images = pair.generator.apply(variables, z, y, train=False)
  assert images.shape == (4, 32, 32, 3) and images.dtype == jnp.float32
  assert float(jnp.abs(images).max()) <= 1.0
  # 3 blocks -> 4 chunks of 4: each conditional BN sees embedding (8) + one chunk (4).
  assert variables["params"]["block0"]["bn1"]["gain"]["kernel"].shape == (12, 16)
  assert variables["params"]["linear"]["kernel"].shape == (4, 16 * 16)
  # The last chunk only conditions the last block: changing it changes the image.
  z2 = z.at[:, 12:].add(1.0)
  assert not np.allclose(pair.generator.apply(variables, z2, y, train=False), images)


def test_bfloat16_compute_keeps_float32_parameters(tiny):
  tiny.model.compute_dtype = "bfloat16"
  pair = build_models(tiny.model, 10)
  z = jnp.ones((2, 16))
  y = jnp.zeros((2,), jnp.int32)
  variables = pair.generator.init(jax.random.PRNGKey(0), z, y)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
  out, new = pair.generator.apply(variables, z, y, mutable=["batch_stats", "spectral"])
  assert out.dtype == jnp.float32
  assert {x.dtype for x in jax.tree.leaves(new)} == {jnp.dtype("float32")}


@pytest.mark.parametrize("architecture,knob,value", [
    # The same remat helper as the deep blocks'.
    pytest.param("biggan", "remat", True, marks=pytest.mark.slow),
    ("biggan_deep", "remat", True),
    ("biggan", "attention_query_chunk", 64),  # G's and D's attention at 16x16: 4 chunks.
    pytest.param("biggan_deep", "attention_query_chunk", 128, marks=pytest.mark.slow)])
def test_memory_knobs_compute_the_same_function_and_gradients(tiny, architecture, knob, value):
  """model.remat and model.attention_query_chunk: same parameter tree, same outputs, state
  updates and gradients. (What they save is an accelerator figure: XLA:CPU's memory analysis
  of this program comes out the same with and without remat, so no memory claim is tested
  here; test_attention_in_query_chunks_never_forms_the_whole_map checks the chunks' shapes.)"""
  tiny.model.architecture = architecture
  if architecture == "biggan_deep":
    tiny.model.depth = 1
  pairs = {}
  for remat in (False, True):  # `remat` here: the knob is on.
    tiny.model[knob] = value if remat else type(value)(0)
    pairs[remat] = build_models(tiny.model, 10)
  batch = 4
  z = jax.random.normal(jax.random.PRNGKey(0), (batch, 16))
  y = jnp.arange(batch, dtype=jnp.int32) % 10
  plain = pairs[False]
  g_vars = plain.generator.init(jax.random.PRNGKey(1), z, y)
  x = plain.generator.apply(g_vars, z, y, train=False)
  d_vars = plain.discriminator.init(jax.random.PRNGKey(2), x, y)
  for remat in (False, True):  # Same tree either way: checkpoints move between the two.
    pair = pairs[remat]
    assert jax.tree.structure(pair.generator.init(jax.random.PRNGKey(1), z, y)) == \
        jax.tree.structure(g_vars)

  def loss(pair):
    def f(g_params, d_params):
      fake, g_new = pair.generator.apply({**g_vars, "params": g_params}, z, y,
                                         mutable=["batch_stats", "spectral"])
      score, d_new = pair.discriminator.apply({**d_vars, "params": d_params}, fake, y,
                                              mutable=["spectral"])
      return jnp.mean(jax.nn.relu(1.0 + score)), (g_new, d_new)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))

  results = {remat: loss(pair)(g_vars["params"], d_vars["params"])
             for remat, pair in pairs.items()}
  for a, b in zip(jax.tree.leaves(results[False]), jax.tree.leaves(results[True])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  text = jax.jit(lambda p: loss(pairs[True])(p, d_vars["params"])).lower(
      g_vars["params"]).as_text()
  assert "optimization_barrier" in text  # The recomputation is really there.
  if knob == "attention_query_chunk":
    assert "stablehlo.while" in text and "stablehlo.while" not in jax.jit(
        lambda p: loss(pairs[False])(p, d_vars["params"])).lower(g_vars["params"]).as_text()


def test_attention_in_query_chunks_never_forms_the_whole_map():
  """layers.attend with query_chunk: equal to the whole-map attention (forward and the
  gradients of theta, phi and g, float32 and bfloat16), and neither its forward nor its
  backward program holds an array of the whole map's shape."""
  n, q, k, c, cv, chunk = 2, 64, 16, 4, 8, 8
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  theta, phi = (jax.random.normal(key, (n, size, c)) for key, size in zip(keys, (q, k)))
  g = jax.random.normal(keys[2], (n, k, cv))
  cotangent = jax.random.normal(keys[3], (n, q, cv))

  def run(query_chunk, dtype):
    def f(theta, phi, g):
      out = layers.attend(theta.astype(dtype), phi.astype(dtype), g.astype(dtype), dtype,
                          query_chunk)
      return jnp.sum(out.astype(jnp.float32) * cotangent)
    fn = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))
    return fn(theta, phi, g), fn.lower(theta, phi, g).as_text()

  for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)):
    (whole, whole_text), (chunked, chunked_text) = run(0, dtype), run(chunk, dtype)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked)):
      np.testing.assert_allclose(np.asarray(b, np.float32), np.asarray(a, np.float32),
                                 rtol=tol, atol=tol)
    assert f"tensor<{n}x{q}x{k}xf32>" in whole_text
    assert f"tensor<{n}x{q}x{k}xf32>" not in chunked_text
    assert f"tensor<{n}x{chunk}x{k}xf32>" in chunked_text
  np.testing.assert_allclose(jax.jit(lambda t: layers.attend(t, phi, g))(theta),
                             jnp.einsum("nqk,nkc->nqc",
                                        jax.nn.softmax(theta @ phi.swapaxes(1, 2)), g),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ConfigError, match="must divide the 64 query positions"):
    layers.attend(theta, phi, g, query_chunk=24)
  # -N (what 'auto' builds on CPU): chunks of N where N divides q, else the whole map.
  (_, auto_text), (_, auto_misfit_text) = run(-chunk, jnp.float32), run(-24, jnp.float32)
  assert f"tensor<{n}x{chunk}x{k}xf32>" in auto_text
  assert f"tensor<{n}x{q}x{k}xf32>" not in auto_text
  assert f"tensor<{n}x{q}x{k}xf32>" in auto_misfit_text


def test_attention_query_chunk_auto_chunks_on_cpu_only_and_rejects_other_negatives(tiny):
  from biggan_jax.config import base_config
  from biggan_jax.models import CPU_ATTENTION_QUERY_CHUNK
  from biggan_jax.models import resolve_attention_query_chunk as resolve
  from biggan_jax.train import BigGANTrainer
  from gan_core import parallel
  assert base_config().model.attention_query_chunk == -1  # 'auto' is the default.
  assert resolve(-1, "cpu") == -CPU_ATTENTION_QUERY_CHUNK == -1024
  assert resolve(-1, "gpu") == resolve(-1, "tpu") == 0
  assert resolve(0, "cpu") == 0 and resolve(64, "gpu") == 64
  tiny.model.attention_query_chunk = -1
  assert build_models(tiny.model, 10, platform="cpu").generator.attention_query_chunk == -1024
  assert build_models(tiny.model, 10, platform="tpu").discriminator.attention_query_chunk == 0
  # The trainer resolves it for the platform of its mesh's devices.
  trainer = BigGANTrainer(tiny, 10, parallel.make_mesh(jax.devices()[:1]))
  assert trainer.models.generator.attention_query_chunk == -1024
  tiny.model.attention_query_chunk = -2
  with pytest.raises(ConfigError, match="attention_query_chunk=-2: -1 \\(auto"):
    build_models(tiny.model, 10)
