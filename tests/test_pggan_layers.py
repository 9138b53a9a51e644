"""PGGAN mechanisms against hand-computed values: pixel norm, minibatch stddev,
equalized learning rate, fade-in blending, schedule, WGAN-GP, Adam, parameter counts."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from gan_core.errors import ConfigError
from gan_core.images import box_downsample_uint8
from pggan_jax import losses, schedule
from pggan_jax.config import base_config, per_resolution
from pggan_jax.layers import (EqualizedConv, EqualizedDense, downscale2d, minibatch_stddev,
                              pixel_norm, upscale2d)
from pggan_jax.models import Discriminator, Generator
from pggan_jax.train import fade_reals, tf_adam


def test_pixel_norm_normalises_each_pixel_over_channels():
  x = jnp.asarray([[[[3.0, 4.0], [0.0, 0.0]]]])  # One image, 1x2 pixels, 2 channels.
  y = np.asarray(pixel_norm(x))
  np.testing.assert_allclose(y[0, 0, 0], [3 / math.sqrt(12.5 + 1e-8), 4 / math.sqrt(12.5 + 1e-8)],
                             rtol=1e-6)
  np.testing.assert_array_equal(y[0, 0, 1], [0.0, 0.0])


def _mbstd_by_hand(x, group):
  n = x.shape[0]
  g = min(group, n)
  m = n // g
  out = np.empty(n)
  for n_i in range(n):
    members = x[[j for j in range(n) if j % m == n_i % m]]  # Strided groups: n mod (N/G).
    assert len(members) == g
    std = np.sqrt(members.var(axis=0) + 1e-8)
    out[n_i] = std.mean()
  return out


@pytest.mark.parametrize("n,group", [(8, 4), (2, 4), (4, 4), (6, 2)])
def test_minibatch_stddev_groups_are_strided(n, group):
  x = np.random.default_rng(n).normal(size=(n, 3, 3, 5)).astype(np.float32)
  y = np.asarray(minibatch_stddev(jnp.asarray(x), group))
  assert y.shape == (n, 3, 3, 6)
  np.testing.assert_array_equal(y[..., :5], x)
  expected = _mbstd_by_hand(x.astype(np.float64), group)
  for i in range(n):
    np.testing.assert_allclose(y[i, :, :, 5], expected[i], rtol=1e-5)


def test_minibatch_stddev_rejects_indivisible_batch():
  with pytest.raises(ValueError, match="not divisible"):
    minibatch_stddev(jnp.zeros((6, 2, 2, 1)), 4)


def test_equalized_dense_and_conv_scale_weights_at_run_time():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 20))
  layer = EqualizedDense(7, gain=0.5)
  params = layer.init(jax.random.PRNGKey(1), x)["params"]
  w = np.asarray(params["kernel"])
  assert np.all(np.asarray(params["bias"]) == 0)
  params = {"kernel": params["kernel"], "bias": jnp.arange(7.0)}
  y = layer.apply({"params": params}, x)
  np.testing.assert_allclose(y, np.asarray(x) @ (w * 0.5 / math.sqrt(20)) + np.arange(7.0),
                             rtol=1e-5, atol=1e-6)
  # Stored weights are N(0, 1), whatever the fan-in.
  big = EqualizedDense(512).init(jax.random.PRNGKey(2), jnp.zeros((1, 4096)))["params"]["kernel"]
  assert abs(float(jnp.std(big)) - 1.0) < 0.01

  img = jax.random.normal(jax.random.PRNGKey(3), (2, 5, 5, 4))
  conv = EqualizedConv(6, 3)
  cparams = conv.init(jax.random.PRNGKey(4), img)["params"]
  k = np.asarray(cparams["kernel"]) * math.sqrt(2) / math.sqrt(9 * 4)
  padded = np.pad(np.asarray(img), ((0, 0), (1, 1), (1, 1), (0, 0)))
  expected = np.zeros((2, 5, 5, 6))
  for i in range(5):
    for j in range(5):
      expected[:, i, j] = np.einsum("nhwc,hwco->no", padded[:, i:i + 3, j:j + 3], k)
  np.testing.assert_allclose(conv.apply({"params": cparams}, img), expected, rtol=1e-4,
                             atol=1e-5)


def test_box_downsampling_and_fade_of_reals():
  images = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
  np.testing.assert_array_equal(box_downsample_uint8(images, 2)[0, :, :, 0],
                                np.rint([[2.5, 4.5], [10.5, 12.5]]))
  np.testing.assert_array_equal(box_downsample_uint8(images, 4)[0, 0, 0, 0], np.rint(7.5))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 3)), jnp.float32)
  coarse = upscale2d(downscale2d(x))
  np.testing.assert_allclose(coarse[0, :2, :2, 0], np.full((2, 2), np.mean(x[0, :2, :2, 0])),
                             rtol=1e-6)
  np.testing.assert_array_equal(fade_reals(x, jnp.float32(1.0)), x)
  np.testing.assert_allclose(fade_reals(x, jnp.float32(0.0)), coarse, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(fade_reals(x, jnp.float32(0.25)), 0.25 * x + 0.75 * coarse,
                             rtol=1e-5, atol=1e-6)


def _small_models():
  kw = dict(resolution=16, fmap_base=64, fmap_max=16)
  return Generator(latent_size=8, **kw), Discriminator(**kw)


def test_generator_fade_in_blends_upsampled_previous_output():
  g, _ = _small_models()
  z = jax.random.normal(jax.random.PRNGKey(0), (4, 8))
  params = g.init(jax.random.PRNGKey(1), z)
  assert {f"to_rgb_{r}" for r in (4, 8, 16)} <= set(params["params"])
  at8 = g.apply(params, z, res=8)
  at16 = g.apply(params, z, res=16)
  assert at8.shape == (4, 8, 8, 3) and at16.shape == (4, 16, 16, 3)
  fade = lambda a: g.apply(params, z, res=16, alpha=jnp.float32(a), fading=True)
  np.testing.assert_allclose(fade(0.0), upscale2d(at8), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(fade(1.0), at16)
  np.testing.assert_allclose(fade(0.3), 0.3 * at16 + 0.7 * upscale2d(at8), rtol=1e-5, atol=1e-6)


def test_discriminator_fade_in_blends_downsampled_input():
  _, d = _small_models()
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 3))
  params = d.init(jax.random.PRNGKey(1), x)
  assert {f"from_rgb_{r}" for r in (4, 8, 16)} <= set(params["params"])
  at16, _ = d.apply(params, x, res=16)
  at8, _ = d.apply(params, downscale2d(x), res=8)
  fade = lambda a: d.apply(params, x, res=16, alpha=jnp.float32(a), fading=True)[0]
  np.testing.assert_allclose(fade(0.0), at8, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(fade(1.0), at16)


def test_celebahq1024_parameter_counts_match_the_paper():
  from pggan_jax.train import PGGANTrainer
  from gan_core import parallel
  config = load_config("pggan_celebahq1024")
  trainer = PGGANTrainer(config, 0, parallel.make_mesh())
  shapes = trainer.state_shapes
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert count(shapes.g_params) == 23_079_115
  assert count(shapes.d_params) == 23_087_249
  heads_g = sum(count(v) for k, v in shapes.g_params.items()
                if k.startswith("to_rgb_") and k != "to_rgb_1024")
  heads_d = sum(count(v) for k, v in shapes.d_params.items()
                if k.startswith("from_rgb_") and k != "from_rgb_1024")
  assert count(shapes.g_params) - heads_g == 23_071_507
  assert count(shapes.d_params) - heads_d == 23_077_137
  # Widths: 512 up to 32x32, then halving to 16 at 1024x1024.
  assert shapes.g_params["b64"]["conv1"]["kernel"].shape == (3, 3, 256, 256)
  assert shapes.g_params["b1024"]["conv1"]["kernel"].shape == (3, 3, 16, 16)
  assert shapes.d_params["b4"]["conv"]["kernel"].shape == (3, 3, 513, 512)  # + stddev map.
  assert shapes.d_params["b4"]["dense0"]["kernel"].shape == (8192, 512)


def test_schedule_follows_images_seen():
  config = load_config("pggan_celebahq1024")  # 600 + 600 kimg phases, 8-GPU batches.
  at = lambda kimg: schedule.phase_at(int(kimg * 1000), config)
  p = at(0)
  assert (p.resolution, p.alpha, p.lod, p.batch_size) == (4, 1.0, 8.0, 512)
  assert at(600).resolution == 4  # The fade-in starts after 600 kimg.
  p = at(900)
  assert (p.resolution, p.alpha, p.lod, p.batch_size, p.fading) == (8, 0.5, 7.5, 256, True)
  p = at(1200)
  assert (p.resolution, p.alpha, p.fading) == (8, 1.0, False)
  p = at(1800 + 150)
  assert (p.resolution, p.alpha, p.batch_size) == (16, 0.25, 128)
  p = at(9000 + 300)
  assert (p.resolution, p.alpha, p.learning_rate, p.batch_size) == (1024, 0.5, 0.003, 32)
  p = at(11999)
  assert (p.resolution, p.alpha, p.lod) == (1024, 1.0, 0.0)
  # Adam resets when a fade-in starts and when it ends, not within either.
  assert schedule.needs_optimizer_reset(at(599), at(601))
  assert not schedule.needs_optimizer_reset(at(700), at(800))
  assert schedule.needs_optimizer_reset(at(1199), at(1201))
  assert not schedule.needs_optimizer_reset(at(1300), at(1700))
  assert not schedule.needs_optimizer_reset(None, at(0))


def test_schedule_validation_errors():
  c = base_config(32)
  c.initial_resolution = 6
  with pytest.raises(ValueError, match="initial_resolution"):
    schedule.validate(c)
  c = base_config(32)
  c.batch_size = per_resolution(16, 16)  # No r32 entry.
  with pytest.raises(ConfigError, match="r32"):
    schedule.validate(c)
  with pytest.raises(ValueError, match="unknown preset"):
    load_config("pggan_celebahq1024", "16gpu")


def test_wgan_gp_loss_against_hand_computation():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)
  reals = jnp.asarray(rng.normal(size=(5, 4, 4, 3)), jnp.float32)
  fakes = jnp.asarray(rng.normal(size=(5, 4, 4, 3)), jnp.float32)
  d_apply = lambda x: (jnp.sum(x * w, axis=(1, 2, 3)), None)  # grad_x D = w everywhere.
  loss, metrics = losses.d_wgan_gp(d_apply, reals, fakes, None, jax.random.PRNGKey(0),
                                   wgan_lambda=10.0, wgan_target=750.0, wgan_epsilon=0.001)
  real_s = np.sum(np.asarray(reals) * w, axis=(1, 2, 3))
  fake_s = np.sum(np.asarray(fakes) * w, axis=(1, 2, 3))
  norm = np.sqrt(np.sum(w.astype(np.float64) ** 2))
  expected = np.mean(fake_s - real_s + 10.0 / 750.0 ** 2 * (norm - 750.0) ** 2
                     + 0.001 * real_s ** 2)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["gradient_norm"], norm, rtol=1e-5)

  # A quadratic D: the gradient at the mixed point depends on the mixing factor.
  d_quad = lambda x: (jnp.sum(x ** 2, axis=(1, 2, 3)), None)
  penalty, norms = losses.gradient_penalty(d_quad, reals, fakes, jax.random.PRNGKey(3), 1.0)
  u = np.asarray(jax.random.uniform(jax.random.PRNGKey(3), (5, 1, 1, 1)))
  mixed = np.asarray(reals) + (np.asarray(fakes) - np.asarray(reals)) * u
  expected_norms = np.sqrt(np.sum((2 * mixed) ** 2, axis=(1, 2, 3)))
  np.testing.assert_allclose(norms, expected_norms, rtol=1e-5)
  np.testing.assert_allclose(penalty, (expected_norms - 1.0) ** 2, rtol=1e-4)


def test_acgan_label_terms():
  logits = jnp.asarray([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
  labels = jnp.asarray([0, 2])
  scores = jnp.asarray([0.5, -0.25])
  ce = -np.log(np.exp(2.0) / (np.exp(2.0) + 1 + np.exp(-1.0))), -np.log(1 / 3)
  loss, metrics = losses.g_wgan(lambda x: (scores, logits), jnp.zeros((2, 4, 4, 3)), labels,
                                cond_weight=0.5)
  np.testing.assert_allclose(loss, np.mean(-np.asarray(scores) + 0.5 * np.asarray(ce)),
                             rtol=1e-6)


def test_tf_adam_matches_tf1_formula_and_skips_non_finite_updates():
  from gan_core import parallel
  from pggan_jax.train import PGGANTrainer
  tx = tf_adam(0.0, 0.99, 1e-8)
  p = jnp.asarray([1.0, -2.0])
  state = tx.init(p)
  m = v = np.zeros(2)
  for t, g in enumerate([np.array([0.5, -1.0]), np.array([0.1, 2.0]), np.array([-0.3, 0.0])], 1):
    upd, state = tx.update(jnp.asarray(g, jnp.float32), state)
    m = 0.0 * m + g
    v = 0.99 * v + 0.01 * g * g
    expected = math.sqrt(1 - 0.99 ** t) / (1 - 0.0 ** t) * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(upd, expected, rtol=1e-5)
  config = base_config(8)
  config.batch_size = per_resolution(8, 8)
  trainer = PGGANTrainer(config, 0, parallel.make_mesh())
  params = {"w": jnp.ones(3)}
  opt = trainer.tx.init(params)
  new_params, new_opt, ok = trainer._adam_step(params, opt, {"w": jnp.asarray([1.0, np.nan, 0])},
                                               0.1)
  assert not bool(ok)
  np.testing.assert_array_equal(new_params["w"], params["w"])
  assert int(new_opt.count) == 0
  new_params, new_opt, ok = trainer._adam_step(params, opt, {"w": jnp.ones(3)}, 0.1)
  assert bool(ok) and int(new_opt.count) == 1
  np.testing.assert_allclose(new_params["w"], 0.9, rtol=1e-5)
