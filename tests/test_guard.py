"""Divergence guard: what counts as a problem, rollback to the last good checkpoint,
giving up after guard.max_rollbacks, per-layer diagnostics."""
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from biggan_jax import train as biggan_train
from gan_core import monitoring
from gan_core.checkpointing import Checkpointer
from gan_core.guard import DivergenceError, find_problem, guard_config
from conftest import tiny_config


def test_find_problem_names_non_finite_values_and_exceeded_limits():
  config = guard_config()
  fine = {"d_loss": 1.0, "g_loss": 0.5, "d_margin": 3.0, "sigma_max/G": 2.0, "sigma_max/D": 9.0}
  assert find_problem(fine, config) is None  # All limits are off by default.
  assert find_problem(dict(fine, g_loss=np.nan, d_loss=np.inf), config) == \
      "non-finite d_loss, g_loss"
  config.max_d_margin = 2.5
  assert find_problem(fine, config) == "d_margin = 3 exceeds guard.max_d_margin = 2.5"
  config.max_d_margin = 0.0
  config.max_d_sigma = 8.0
  assert "sigma_max/D = 9 exceeds guard.max_d_sigma = 8" == find_problem(fine, config)
  config.max_g_sigma = 1.5  # Checked in a fixed order: G's limit before D's.
  assert find_problem(fine, config).startswith("sigma_max/G = 2 exceeds")


def test_singular_values_and_layer_norms_are_flattened_per_layer():
  spectral = {"block0": {"conv1": {"u": np.ones(3), "sigma": np.float32(2.0)}},
              "linear": {"sigma": np.float32(5.0), "u": np.ones(2)}}
  assert monitoring.singular_values(spectral, "G") == {
      "sigma/G/block0/conv1": 2.0, "sigma/G/linear": 5.0, "sigma_max/G": 5.0}
  assert monitoring.flatten_scalars({"a": {"kernel": np.float32(3)}}, "n/") == {"n/a/kernel": 3.0}


def poison_step(monkeypatch, at_step: int, every_time: bool):
  """Makes the iteration that completes step `at_step` report a NaN D loss: only on the
  original random stream (a rollback re-seeds it), or on every stream."""
  original = biggan_train.BigGANTrainer._train_iteration

  def poisoned(self, state, batch):
    new_state, metrics = original(self, state, batch)
    hit = new_state.step == at_step
    if not every_time:
      # The train key of seed 0 (see BigGANTrainer._init_state) before any re-seeding.
      original_stream = jnp.all(state.rng == jax.random.split(jax.random.PRNGKey(0))[1])
      hit = hit & original_stream
    metrics["d_loss"] = jnp.where(hit, jnp.nan, metrics["d_loss"])
    return new_state, metrics
  monkeypatch.setattr(biggan_train.BigGANTrainer, "_train_iteration", poisoned)


def test_non_finite_step_rolls_back_and_training_goes_on(tmp_path, monkeypatch, caplog):
  caplog.set_level(logging.INFO)  # The console metric lines are INFO.
  poison_step(monkeypatch, at_step=3, every_time=False)
  config = tiny_config()
  config.log_every_steps = 1
  state = biggan_train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 4
  assert "DIVERGENCE at step 3: non-finite d_loss" in caplog.text
  assert "rolling back to checkpoint step 2" in caplog.text
  checkpoints = Checkpointer(str(tmp_path / "checkpoints"))
  assert checkpoints.all_steps() == [2, 4]
  meta = checkpoints.restore_meta(4)
  assert meta["rollbacks"] == 1
  checkpoints.close()
  # train_log.jsonl (like TensorBoard) gets the per-layer diagnostics at every log step.
  with open(tmp_path / "train_log.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [1, 2, 2, 3, 4]  # 3 rolled back to 2, then 3 again.
  assert records[2] == {"step": 2, "guard/rollbacks": 1}
  for name in ("layer_grad_norm/G/block0/conv1/kernel", "layer_grad_norm/D/block0/conv1/kernel",
               "sigma/G/block0/conv1", "sigma/D/block0/conv1", "sigma_max/G", "d_margin",
               "g_param_norm", "images_per_sec", "eta_hours", "host_peak_gb"):
    assert name in records[-1], name


def test_rollbacks_are_limited_and_the_good_checkpoint_is_kept(tmp_path, monkeypatch, caplog):
  poison_step(monkeypatch, at_step=3, every_time=True)
  config = tiny_config()
  config.log_every_steps = 1
  config.guard.max_rollbacks = 2
  with pytest.raises(DivergenceError) as error:
    biggan_train.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  assert "diverged at step 3 (non-finite d_loss) after 2 rollback(s)" in message
  assert "guard.max_rollbacks=2" in message and "step 2" in message
  assert caplog.text.count("DIVERGENCE at step 3") == 2
  checkpoints = Checkpointer(str(tmp_path / "checkpoints"))
  assert checkpoints.all_steps() == [2]
  checkpoints.close()


def test_pggan_rolls_back_with_its_schedule_position(tmp_path, monkeypatch, caplog):
  from pggan_jax import train as pggan_train
  from test_pggan_train import tiny_pggan_config
  original = pggan_train.PGGANTrainer._train_iteration

  def poisoned(self, state, batch, alpha, learning_rate, *, res, fading):
    new_state, metrics = original(self, state, batch, alpha, learning_rate, res=res,
                                  fading=fading)
    original_stream = jnp.all(state.rng == jax.random.split(jax.random.PRNGKey(0))[1])
    hit = (new_state.step == 3) & original_stream
    metrics["g_param_norm"] = jnp.where(hit, jnp.inf, metrics["g_param_norm"])
    return new_state, metrics
  monkeypatch.setattr(pggan_train.PGGANTrainer, "_train_iteration", poisoned)
  config = tiny_pggan_config()
  config.total_kimg = 0.032  # 4 iterations of 8 images, all at 4x4.
  config.checkpoint_every_kimg = 0.016
  config.log_every_kimg = 0.008
  state = pggan_train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 4 and int(state.images_seen) == 32
  assert "DIVERGENCE at step 3: non-finite g_param_norm" in caplog.text
  assert "rolling back to checkpoint step 2" in caplog.text
  checkpoints = Checkpointer(str(tmp_path / "checkpoints"))
  meta = checkpoints.restore_meta(4)
  checkpoints.close()
  assert meta["rollbacks"] == 1 and meta["images_seen"] == 32
