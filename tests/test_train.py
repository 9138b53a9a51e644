"""The jitted iteration: cross-replica BN, 1-vs-8 devices, regularisers, EMA, losses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from biggan_jax import layers, losses
from biggan_jax.train import BigGANTrainer, ortho_reg_grads, sample_latents
from gan_core import parallel


def make_batch(trainer, seed=0):
  rng = np.random.default_rng(seed)
  shape = trainer.batch_leading_shape
  res = trainer.models.resolution
  images = rng.integers(0, 256, shape + (res, res, 3), dtype=np.uint8)
  labels = rng.integers(0, trainer.num_classes, shape).astype(np.int32)
  return {"images": parallel.global_array_from_local(images, trainer.mesh, 2),
          "labels": parallel.global_array_from_local(labels, trainer.mesh, 2)}


def test_batch_norm_statistics_on_sharded_batch_are_global():
  assert jax.device_count() == 8
  mesh = parallel.make_mesh()
  # Each device's shard has a different distribution: per-device stats would differ.
  x = np.concatenate([np.random.default_rng(i).normal(i, 1 + i, (2, 4, 4, 3))
                      for i in range(8)]).astype(np.float32)
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  assert len(xs.sharding.device_set) == 8
  module = layers.BatchStatistics(momentum=1.0)
  variables = module.init(jax.random.PRNGKey(0), x[:2], False)

  @jax.jit
  def run(v, batch):
    return module.apply(v, batch, False, mutable=["batch_stats"])

  out, stats = run(variables, xs)
  n = x.shape[0] * 16
  np.testing.assert_allclose(stats["batch_stats"]["mean"], x.mean((0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(stats["batch_stats"]["var"], x.var((0, 1, 2)) * n / (n - 1),
                             rtol=1e-5)
  np.testing.assert_allclose(out, (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + 1e-5),
                             rtol=1e-4, atol=1e-4)


def test_one_iteration_same_on_one_and_eight_devices(tiny):
  tiny.num_accumulations = 2
  tiny.batch_size = 16
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    trainer = BigGANTrainer(tiny, 10, parallel.make_mesh(devices))
    state = trainer.init_state(0)
    state, metrics = trainer.train_iteration(state, make_batch(trainer))
    assert len(state.g_params["linear"]["kernel"].sharding.device_set) == len(devices)
    results.append(jax.tree.map(np.asarray, (state, metrics)))
  (s1, m1), (s8, m8) = results
  assert int(s1.step) == int(s8.step) == 1
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)
  assert jax.tree.structure(m1) == jax.tree.structure(m8)  # Incl. per-layer gradient norms.
  for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m8)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_iteration_updates_everything_and_is_deterministic(tiny):
  trainer = BigGANTrainer(tiny, 10, parallel.make_mesh())
  before = jax.tree.map(np.asarray, trainer.init_state(0))
  batch = make_batch(trainer)
  runs = []
  for _ in range(2):
    state, metrics = trainer.train_iteration(trainer.init_state(0), batch)
    runs.append(jax.tree.map(np.asarray, state))
  for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1])):
    np.testing.assert_array_equal(a, b)
  after = runs[0]
  changed = lambda a, b: not np.array_equal(a, b)
  assert changed(before.g_params["linear"]["kernel"], after.g_params["linear"]["kernel"])
  assert changed(before.d_params["linear"]["kernel"], after.d_params["linear"]["kernel"])
  # SN vectors of G and D and G's running BN statistics advanced; EMA copied G (step 0 < start).
  assert changed(before.g_state["spectral"]["linear"]["u"], after.g_state["spectral"]["linear"]["u"])
  assert changed(before.d_state["spectral"]["linear"]["u"], after.d_state["spectral"]["linear"]["u"])
  assert changed(before.g_state["batch_stats"]["output_bn"]["stats"]["mean"],
                 after.g_state["batch_stats"]["output_bn"]["stats"]["mean"])
  for a, b in zip(jax.tree.leaves(after.ema_params), jax.tree.leaves(after.g_params)):
    np.testing.assert_array_equal(a, b)
  assert set(metrics) >= {"d_loss", "d_loss_real", "d_loss_fake", "d_real", "d_fake", "g_loss"}
  assert {x.dtype for x in jax.tree.leaves(after.g_params)} == {np.dtype("float32")}


def test_ema_averages_after_start(tiny):
  tiny.ema_start = 0
  tiny.ema_decay = 0.75
  trainer = BigGANTrainer(tiny, 10, parallel.make_mesh())
  state0 = jax.tree.map(np.asarray, trainer.init_state(0))
  state1, _ = trainer.train_iteration(trainer.init_state(0), make_batch(trainer))
  g, ema = np.asarray(state1.g_params["linear"]["kernel"]), np.asarray(
      state1.ema_params["linear"]["kernel"])
  np.testing.assert_allclose(ema, 0.75 * state0.ema_params["linear"]["kernel"] + 0.25 * g,
                             rtol=1e-6)


def test_ema_starts_decaying_at_biggan_pytorchs_iteration(tiny):
  """BigGAN-PyTorch's train.py increments `itr` (from 0) before each update and `utils.ema`
  decays when itr >= ema_start: with ema_start 2 the first update copies G, the second is the
  first to average."""
  tiny.ema_start = 2
  tiny.ema_decay = 0.75
  trainer = BigGANTrainer(tiny, 10, parallel.make_mesh())
  kernel = lambda tree: np.asarray(tree["linear"]["kernel"])
  state, _ = trainer.train_iteration(trainer.init_state(0), make_batch(trainer))
  np.testing.assert_array_equal(kernel(state.ema_params), kernel(state.g_params))
  ema_before = kernel(state.ema_params)
  state, _ = trainer.train_iteration(state, make_batch(trainer, seed=1))
  g = kernel(state.g_params)
  assert not np.array_equal(g, ema_before)
  np.testing.assert_allclose(kernel(state.ema_params), 0.75 * ema_before + 0.25 * g, rtol=1e-6)


def test_biggan_pytorch_presets_reproduce_its_launch_scripts():
  import importlib.util
  import os
  from conftest import REPO
  for name, architecture in (("imagenet128", "biggan"), ("imagenet128_deep", "biggan_deep")):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config, default = module.get_config("biggan_pytorch"), module.get_config()
    assert config.model.architecture == architecture
    assert (config.num_d_steps, config.ortho_reg, config.batch_size, config.num_accumulations,
            config.ema_start, config.ema_decay) == (1, 0.0, 2048, 8, 20_000, 0.9999)
    assert (default.num_d_steps, default.ortho_reg) == (2, 1e-4)  # The paper's recipe.
    assert config.model.to_dict() == default.model.to_dict()


def test_bfloat16_iteration_runs_with_float32_state(tiny):
  tiny.model.compute_dtype = "bfloat16"
  trainer = BigGANTrainer(tiny, 10, parallel.make_mesh())
  state, metrics = trainer.train_iteration(trainer.init_state(0), make_batch(trainer))
  assert {x.dtype for x in jax.tree.leaves(state)} <= {np.dtype("float32"), np.dtype("int32"),
                                                       np.dtype("uint32")}
  assert all(np.isfinite(float(v)) for v in jax.tree.leaves(metrics))


def test_ortho_reg_gradient_matches_autodiff_of_the_penalty():
  params = {"shared": {"embedding": jnp.ones((5, 4))},
            "conv": {"kernel": jax.random.normal(jax.random.PRNGKey(0), (3, 3, 2, 4)),
                     "bias": jnp.ones(4)},
            "dense": {"kernel": jax.random.normal(jax.random.PRNGKey(1), (6, 3))},
            # More outputs than inputs, as G's first linear layer: the W (W^T W) form.
            "tall": {"kernel": jax.random.normal(jax.random.PRNGKey(2), (5, 48))}}

  def penalty(w):  # BigGAN: ||W W^T (1 - I)||_F^2 with W (outputs x rest), times beta/2.
    mat = w.reshape(-1, w.shape[-1]).T
    gram = mat @ mat.T * (1 - jnp.eye(mat.shape[0]))
    return 0.5 * 1e-4 * jnp.sum(gram ** 2)

  grads = ortho_reg_grads(params, 1e-4)
  for name in ("conv", "dense", "tall"):
    w = np.asarray(params[name]["kernel"], np.float64)
    mat = w.reshape(-1, w.shape[-1]).T  # The same product in float64, formed directly.
    exact = (2e-4 * (mat @ mat.T * (1 - np.eye(mat.shape[0]))) @ mat).T.reshape(w.shape)
    scale = np.abs(exact).max()
    for got in (grads[name]["kernel"], jax.grad(penalty)(params[name]["kernel"])):
      np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-6 * scale)
  assert not np.any(grads["shared"]["embedding"])  # the shared embedding is exempt
  assert not np.any(grads["conv"]["bias"])  # 1-D weights are exempt


def test_hinge_losses():
  real = jnp.array([2.0, 0.5, -1.0])
  fake = jnp.array([-2.0, 0.0, 1.0])
  loss_real, loss_fake = losses.hinge_d_loss(real, fake)
  assert float(loss_real) == pytest.approx((0 + 0.5 + 2.0) / 3)
  assert float(loss_fake) == pytest.approx((0 + 1.0 + 2.0) / 3)
  assert float(losses.hinge_g_loss(fake)) == pytest.approx(1.0 / 3)
  with pytest.raises(ValueError, match="config.loss"):
    losses.get_losses("wasserstein")


def test_truncation_bounds_latents_and_labels_are_uniform_classes():
  z, y = sample_latents(jax.random.PRNGKey(0), 4000, 8, 10, truncation=0.5)
  assert float(jnp.abs(z).max()) <= 0.5
  assert 0.2 < float(jnp.abs(z).mean()) < 0.3  # not clipped: no mass piled at the bound
  assert set(np.unique(y)) == set(range(10))
  z_full, _ = sample_latents(jax.random.PRNGKey(0), 4000, 8, 10)
  assert float(jnp.abs(z_full).max()) > 3


def test_standing_stats_average_batch_statistics(tiny):
  trainer = BigGANTrainer(tiny, 10, parallel.make_mesh(jax.devices()[:1]))
  state = trainer.init_state(0)
  stats = trainer.standing_stats(state.ema_params, state.ema_state, jax.random.PRNGKey(3),
                                 num_batches=3, batch_size=8)
  old = state.ema_state["batch_stats"]["output_bn"]["stats"]["var"]
  new = stats["batch_stats"]["output_bn"]["stats"]["var"]
  assert not np.allclose(old, new)
  images = trainer.generate(state.ema_params, stats, jnp.zeros((2, 16)),
                            jnp.zeros((2,), jnp.int32))
  assert images.dtype == jnp.uint8 and images.shape == (2, 32, 32, 3)


def test_batch_not_divisible_by_devices_is_a_clear_error(tiny):
  tiny.batch_size = 12
  with pytest.raises(ValueError, match="multiple of the number of devices"):
    BigGANTrainer(tiny, 10, parallel.make_mesh())


def test_class_count_mismatch_between_config_and_dataset_is_explained(tiny):
  from biggan_jax.train import resolve_num_classes
  assert resolve_num_classes(tiny, 10) == 10
  with pytest.raises(ValueError, match="has 7 classes.*num_classes=7"):
    resolve_num_classes(tiny, 7)
  with pytest.raises(ValueError, match="no labels"):
    resolve_num_classes(tiny, 0)
  tiny.model.num_classes = 0
  assert resolve_num_classes(tiny, 7) == 7


def test_pair_diversity_is_dsgans_ratio_of_mean_absolute_differences():
  images = jnp.array([[[0.0, 0.0]], [[1.0, -1.0]], [[0.5, 0.5]], [[0.5, 0.5]]])  # (4, 1, 2)
  z = jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 2.0, 0.0], [2.0, 0.0, 2.0]])
  ratio = losses.pair_diversity(images, z)
  # Pair 0: mean|x| = 1, mean|dz| = 1; pair 1: identical images, mean|dz| = 2.
  np.testing.assert_allclose(ratio, [1.0, 0.0], rtol=1e-6)


@pytest.mark.slow  # Two more compilations; the pairs' sharding is checked in CI by the spread test.
def test_diversity_reg_pairs_classes_and_is_the_same_on_one_and_eight_devices(tiny):
  tiny.diversity_reg, tiny.diversity_reg_max = 1.0, 0.5
  tiny.batch_size, tiny.num_d_steps = 16, 1
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    trainer = BigGANTrainer(tiny, 10, parallel.make_mesh(devices))
    state, metrics = trainer.train_iteration(trainer.init_state(0), make_batch(trainer))
    results.append(jax.tree.map(np.asarray, (state, metrics)))
  (s1, m1), (s8, m8) = results
  assert 0 < float(m1["g_diversity"]) < np.inf
  for a, b in zip(jax.tree.leaves((s1, m1)), jax.tree.leaves((s8, m8))):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)


def test_diversity_reg_makes_g_spread_its_samples_of_one_class(tiny):
  """A few G updates dominated by the regulariser raise the spread of same-class pairs;
  without it the same updates do not."""
  tiny.num_d_steps, tiny.g_lr, tiny.ortho_reg = 1, 3e-3, 0.0
  tiny.diversity_reg_max = 100.0
  mesh = parallel.make_mesh(jax.devices()[:1])
  z = jax.random.normal(jax.random.PRNGKey(7), (64, tiny.model.dim_z))
  y = jnp.repeat(jnp.arange(32) % 10, 2)
  spreads = {}
  for reg in (0.0, 100.0):
    tiny.diversity_reg = reg
    trainer = BigGANTrainer(tiny, 10, mesh)
    state = trainer.init_state(0)

    def spread(state):
      images, _ = jax.jit(trainer._g_forward)(state.g_params, state.g_state, z, y)
      return float(jnp.mean(losses.pair_diversity(images, z)))

    before = spread(state)
    for i in range(4):
      state, _ = trainer.train_iteration(state, make_batch(trainer, seed=i))
    spreads[reg] = spread(state) / before
  assert spreads[100.0] > 1.2 * spreads[0.0], spreads  # Measured: 1.31 against 1.04.


def test_diversity_reg_needs_an_even_batch_and_a_valid_strength(tiny):
  tiny.diversity_reg = 1.0
  tiny.batch_size = 9
  with pytest.raises(ValueError, match=r"batch_size / num_accumulations \(9\) must be even"):
    BigGANTrainer(tiny, 10, parallel.make_mesh(jax.devices()[:1]))
  tiny.batch_size, tiny.diversity_reg = 16, -1.0
  with pytest.raises(ValueError, match="diversity_reg=-1.0 must be >= 0"):
    BigGANTrainer(tiny, 10, parallel.make_mesh())
