"""DiffAugment and ADA (gan_core/augment.py): each op against a hand computation, the
anti-aliased resampling, p's adaptation, and both GANs' iterations and resume with it."""
import dataclasses
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from biggan_jax.train import BigGANTrainer, train_and_evaluate
from gan_core import augment, parallel
from gan_core.checkpointing import Checkpointer
from gan_core.errors import ConfigError
from conftest import tiny_config

KEY = jax.random.PRNGKey(3)


def images(n=6, size=16, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)), jnp.float32)


# ------------------------------------------------------------------ DiffAugment, by hand
def test_translation_moves_content_by_the_drawn_offset_with_zero_fill():
  x = images()
  rows, cols = augment.translation_offsets(KEY, 6, 16, 16, 0.125)
  assert set(np.asarray(rows)) | set(np.asarray(cols)) <= set(range(-2, 3))
  out = np.asarray(augment.translate(x, rows, cols))
  xs = np.asarray(x)
  for b in range(6):
    r, c = int(rows[b]), int(cols[b])
    expected = np.zeros_like(xs[b])
    for i in range(16):
      for j in range(16):
        if 0 <= i + r < 16 and 0 <= j + c < 16:
          expected[i, j] = xs[b, i + r, j + c]
    np.testing.assert_array_equal(out[b], expected)


def test_cutout_zeroes_exactly_the_drawn_square():
  x = images(n=32)
  top, left, sh, sw = augment.cutout_boxes(KEY, 32, 16, 16, 0.5)
  assert (sh, sw) == (8, 8)
  out = np.asarray(augment.cut(x, top, left, sh, sw))
  for b in range(32):
    mask = np.ones((16, 16), bool)
    t, l = int(top[b]), int(left[b])
    mask[max(t, 0):max(t + 8, 0), max(l, 0):max(l + 8, 0)] = False
    np.testing.assert_array_equal(out[b][~mask], 0.0)
    np.testing.assert_array_equal(out[b][mask], np.asarray(x)[b][mask])
  # Centres uniform over [0, 16] (the paper's draw): boxes may hang over any edge.
  centres = np.asarray(top) + 4
  assert centres.min() >= 0 and centres.max() <= 16


def test_colour_ops_follow_their_definitions():
  x = images()
  xs = np.asarray(x)
  u = np.asarray(jax.random.uniform(KEY, (6, 1, 1, 1)))
  np.testing.assert_allclose(augment.brightness(x, KEY), xs + u - 0.5, rtol=1e-6, atol=1e-6)
  out = np.asarray(augment.saturation(x, KEY))
  mean = xs.mean(3, keepdims=True)
  np.testing.assert_allclose(out, (xs - mean) * 2 * u + mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.mean(3), xs.mean(3), atol=1e-6)  # Per-pixel mean kept.
  out = np.asarray(augment.contrast(x, KEY))
  mean = xs.mean((1, 2, 3), keepdims=True)
  np.testing.assert_allclose(out, (xs - mean) * (u + 0.5) + mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.mean((1, 2, 3)), xs.mean((1, 2, 3)), atol=1e-6)


def test_diffaugment_policy_and_determinism():
  x = images()
  a = augment.diff_augment(x, KEY, "color,translation,cutout")
  b = augment.diff_augment(x, KEY, "color,translation,cutout")
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, augment.diff_augment(x, jax.random.PRNGKey(4),
                                                 "color,translation,cutout"))
  # Cutout alone: every image loses a square and keeps the rest.
  only_cut = np.asarray(augment.diff_augment(x, KEY, "cutout"))
  assert ((only_cut == 0).reshape(6, -1).sum(1) >= 3 * 16).all()  # >= a quarter box.


# ------------------------------------------------------------------ ADA
def test_sym6_is_orthonormal_and_resampling_round_trips():
  h = augment.SYM6
  for shift in range(1, 6):
    assert abs(np.dot(h[:-2 * shift], h[2 * shift:])) < 1e-10
  assert abs(np.dot(h, h) - 1) < 1e-10 and abs(h.sum() - math.sqrt(2)) < 1e-10
  x = images(2, 32)
  np.testing.assert_allclose(augment.downsample2x(augment.upsample2x(x))[:, 6:-6, 6:-6],
                             x[:, 6:-6, 6:-6], atol=2e-6)
  ramp = jnp.broadcast_to(jnp.arange(32.0)[None, :, None, None], (1, 32, 32, 1))
  up = np.asarray(augment.upsample2x(ramp))[0, 12:40, 5, 0]
  np.testing.assert_allclose(up, np.arange(12, 40) / 2 + augment.UP_PHASE, atol=1e-4)
  # A transform that moves nothing returns the image, borders included.
  np.testing.assert_allclose(augment.resample(x, jnp.tile(jnp.eye(3), (2, 1, 1))), x, atol=2e-6)


def test_resampling_integer_shifts_flips_and_quarter_turns():
  x = images(2, 32)
  # Inverse translation by +3 columns: output (i, j) shows input (i, j + 3).
  g_inv = augment._translate2d(jnp.asarray([3.0, 3.0]), jnp.asarray([0.0, 0.0]))
  np.testing.assert_allclose(augment.resample(x, g_inv)[:, :, :-3], x[:, :, 3:], atol=2e-6)
  # On a smooth image a mirror and a quarter turn are what numpy says, up to the
  # (asymmetric) anti-aliasing filter's phase.
  smooth = jax.image.resize(images(2, 8), (2, 32, 32, 3), "linear")
  flip = augment.resample(smooth, augment._scale2d(jnp.asarray([-1.0, -1.0]), jnp.ones(2)))
  np.testing.assert_allclose(flip[:, 4:-4, 4:-4], smooth[:, 4:-4, ::-1][:, :, 4:-4], atol=0.05)
  turn = augment.resample(smooth, augment._rotate2d(jnp.full((2,), -math.pi / 2)))
  np.testing.assert_allclose(turn[:, 4:-4, 4:-4],
                             jnp.rot90(smooth, -1, axes=(1, 2))[:, 4:-4, 4:-4], atol=0.05)


def test_colour_matrices_keep_gray_gray_and_are_affine():
  luma = jnp.ones(3) / math.sqrt(3)
  rot = np.asarray(augment._rotate_about(luma, jnp.asarray([0.7])))[0]
  np.testing.assert_allclose(rot @ rot.T, np.eye(4), atol=1e-6)
  np.testing.assert_allclose(rot[:3, :3] @ np.ones(3), np.ones(3), atol=1e-6)  # Hue keeps gray.
  c = np.asarray(augment.color_matrices(KEY, 64, jnp.float32(1.0)))
  np.testing.assert_allclose(c[:, 3], np.tile([0, 0, 0, 1.0], (64, 1)), atol=1e-6)
  # Gray pixels stay gray under every colour op but the luma flip's sign.
  gray = c[:, :3, :3] @ np.ones(3)
  np.testing.assert_allclose(gray, gray[:, :1] * np.ones(3), atol=1e-4)


def test_ada_is_identity_at_p_zero_and_changes_images_at_p_one():
  x = images(8, 16)
  np.testing.assert_array_equal(augment.ada_augment(x, KEY, 0.0), x)
  y = augment.ada_augment(x, KEY, 1.0)
  assert np.all(np.abs(np.asarray(y - x)).reshape(8, -1).max(1) > 1e-2)
  # With small p most images draw nothing and keep their pixels exactly.
  y = np.asarray(augment.ada_augment(images(256, 8), KEY, 0.01))
  unchanged = np.all(y == np.asarray(images(256, 8)), axis=(1, 2, 3)).mean()
  assert 0.7 < unchanged < 0.99  # About (1 - 0.01)^13 of them.


def augmenter(kind, p):
  """An Augmenter of `kind` at a fixed-start p, and its initial state."""
  config = tiny_config()
  config.augment.kind, config.augment.p = kind, p
  return augment.Augmenter(config), augment.init_state(config)


@pytest.mark.parametrize("kind", ["diffaugment", "ada"])
def test_gradients_flow_through_the_augmentation(kind):
  aug, state = augmenter(kind, p=0.5)
  x = images(4, 16)
  grad = jax.grad(lambda x: jnp.sum(jnp.square(aug.apply(x, KEY, state))))(x)
  assert np.all(np.isfinite(grad)) and np.abs(np.asarray(grad)).sum() > 0


@pytest.mark.parametrize("kind", ["diffaugment", "ada"])
def test_same_key_same_augmentation_on_one_and_eight_devices(kind):
  aug, state = augmenter(kind, p=0.8)
  x = images(16, 16)
  outs = []
  for devices in (jax.devices()[:1], jax.devices()):
    sharding = NamedSharding(parallel.make_mesh(devices), P("data"))
    fn = jax.jit(lambda x, k: aug.apply(x, k, state), out_shardings=sharding)
    outs.append(np.asarray(fn(jax.device_put(x, sharding), KEY)))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_p_rises_when_d_separates_reals_and_falls_when_it_does_not():
  config = tiny_config()
  config.augment.kind = "ada"
  config.augment.ada_interval = 2
  config.augment.ada_kimg = 0.1  # 100 images from 0 to 1.
  aug = augment.Augmenter(config)
  state = augment.init_state(config)
  confident = jnp.ones(8)  # sign(D(real)) = +1: r_t = 1 > 0.6.
  state = aug.adapt(aug.observe(state, confident), jnp.int32(0), 10)
  assert float(state["p"]) == 0.0  # Not an update iteration yet.
  state = aug.adapt(aug.observe(state, confident), jnp.int32(1), 10)
  assert float(state["p"]) == pytest.approx(0.2) and float(state["rt"]) == 1.0
  assert float(state["count"]) == 0.0
  unsure = jnp.asarray([1.0, -1.0, -1.0, 1.0])  # r_t = 0 < 0.6.
  for step in (2, 3):
    state = aug.adapt(aug.observe(state, unsure), jnp.int32(step), 10)
  assert float(state["p"]) == pytest.approx(0.0) and float(state["rt"]) == 0.0
  for step in (4, 5):  # Clipped at 0.
    state = aug.adapt(aug.observe(state, unsure), jnp.int32(step), 10)
  assert float(state["p"]) == 0.0
  fixed = tiny_config()
  fixed.augment.kind, fixed.augment.adaptive, fixed.augment.p = "ada", False, 0.3
  fixed_aug = augment.Augmenter(fixed)
  assert float(fixed_aug.p(fixed_aug.adapt(augment.init_state(fixed), jnp.int32(3), 10))) == \
      pytest.approx(0.3)


def test_bad_augment_settings_are_config_errors():
  for kind, policy, p in (("cutmix", "color", 0.0), ("diffaugment", "color,rotate", 0.0),
                          ("ada", "", 1.5)):
    config = tiny_config()
    config.augment.kind, config.augment.policy, config.augment.p = kind, policy, p
    with pytest.raises(ConfigError):
      augment.Augmenter(config)


# ------------------------------------------------------------------ in the GANs
def test_biggan_iteration_identity_at_p_zero_and_g_learns_through_diffaugment():
  from test_train import make_batch
  states = {}
  for kind in ("none", "ada", "diffaugment"):
    config = tiny_config()
    config.num_d_steps = 1  # A smaller program to compile three times.
    config.model.g_attention = config.model.d_attention = ()
    config.augment.kind, config.augment.adaptive = kind, False  # ADA at a fixed p = 0.
    trainer = BigGANTrainer(config, 10, parallel.make_mesh())
    state, metrics = trainer.train_iteration(trainer.init_state(0), make_batch(trainer))
    assert np.isfinite(float(metrics["g_grad_norm"])) and float(metrics["g_grad_norm"]) > 0
    states[kind] = jax.tree.map(np.asarray, state)
  for a, b in zip(jax.tree.leaves(states["none"]), jax.tree.leaves(states["ada"])):
    np.testing.assert_array_equal(a, b)
  # DiffAugment changed what D saw, hence G's update.
  assert not np.array_equal(states["none"].g_params["linear"]["kernel"],
                            states["diffaugment"].g_params["linear"]["kernel"])


# Slow (about 100 s on a slow day of the 2-core CI machine). By default, resume exactness is
# test_checkpoint.py's, and ADA's p in the train state is test_checkpoint_without_augment_state_
# resumes_with_it_zeroed's and test_ada_p_is_restored_from_a_checkpoint's.
@pytest.mark.slow
def test_ada_run_killed_and_resumed_is_bit_identical_p_included(tmp_path):
  def config(steps):
    c = tiny_config()
    c.num_train_steps = steps
    c.augment.kind = "ada"
    c.augment.ada_interval = 1
    c.augment.ada_kimg = 0.1  # p moves by 16 / 100 per iteration.
    return c
  straight = train_and_evaluate(config(4), str(tmp_path / "straight"))
  train_and_evaluate(config(2), str(tmp_path / "resumed"))
  resumed = train_and_evaluate(config(4), str(tmp_path / "resumed"))
  assert 0.0 < float(straight.augment["p"]) <= 0.64
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _save_and_restore(directory, state, trainer):
  """`state` saved as step 1, then restored as `trainer`'s state from a fresh Checkpointer
  (as resuming opens the directory anew)."""
  checkpoints = Checkpointer(str(directory))
  checkpoints.save(1, state, {"step": 1})
  checkpoints.close()
  checkpoints = Checkpointer(str(directory))
  try:
    return checkpoints.restore_state(1, trainer.abstract_state())
  finally:
    checkpoints.close()


def test_checkpoint_without_augment_state_resumes_with_it_zeroed(tmp_path):
  config = tiny_config()
  trainer = BigGANTrainer(config, 10, parallel.make_mesh())
  state = trainer.init_state(0)
  fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
            if f.name != "augment"}
  old_type = flax.struct.dataclass(type("OldTrainState", (), {
      "__annotations__": {name: object for name in fields}}))
  restored = _save_and_restore(tmp_path, old_type(**fields), trainer)
  assert float(restored.augment["p"]) == 0.0
  np.testing.assert_array_equal(restored.g_params["linear"]["kernel"],
                                state.g_params["linear"]["kernel"])


def test_ada_p_is_restored_from_a_checkpoint(tmp_path):
  """ADA's state (p, the r_t accumulator) is saved and restored with the rest of the state."""
  config = tiny_config()
  config.augment.kind = "ada"
  trainer = BigGANTrainer(config, 10, parallel.make_mesh())
  state = trainer.init_state(0)
  moved = jax.tree.map(lambda x: x + 0.3125 if jnp.issubdtype(x.dtype, jnp.floating) else x + 3,
                       state.augment)
  restored = _save_and_restore(tmp_path, state.replace(augment=moved), trainer)
  assert float(restored.augment["p"]) == float(moved["p"]) != 0.0
  for a, b in zip(jax.tree.leaves(restored.augment), jax.tree.leaves(moved)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("kind", ["diffaugment", "ada"])
def test_pggan_iteration_with_augmentation(kind):
  from pggan_jax.train import PGGANTrainer
  from conftest import load_config
  config = load_config("pggan_digits32")
  config.model.resolution = 8
  config.initial_resolution = 4
  config.batch_size.r4 = config.batch_size.r8 = 8
  config.augment.kind = kind
  config.augment.p = 0.5
  config.augment.ada_interval = 1
  config.augment.ada_kimg = 0.1
  trainer = PGGANTrainer(config, 0, parallel.make_mesh())
  state = trainer.init_state(0)
  batch = {"images": parallel.global_array_from_local(
               np.random.default_rng(0).integers(0, 256, (1, 8, 8, 8, 3), dtype=np.uint8),
               trainer.mesh, 1),
           "labels": parallel.global_array_from_local(np.zeros((1, 8), np.int32), trainer.mesh, 1)}
  new, metrics = trainer.train_iteration(state, batch, jnp.float32(0.5), jnp.float32(1e-3),
                                         res=8, fading=True)
  assert np.isfinite(float(metrics["g_loss"])) and float(metrics["g_grad_norm"]) > 0
  if kind == "ada":
    assert float(metrics["augment/p"]) == float(new.augment["p"])
    assert float(new.augment["p"]) in (pytest.approx(0.58), pytest.approx(0.42))


def test_small_data_presets():
  from conftest import load_config
  for preset, kind in ((None, "none"), ("diffaugment", "diffaugment"), ("ada", "ada")):
    config = load_config("digits32_small", preset)
    assert config.augment.kind == kind and config.dataset_fraction == 0.1
    augment.check_config(config.augment)
  with pytest.raises(ValueError, match="none, diffaugment or ada"):
    load_config("digits32_small", "mixup")
