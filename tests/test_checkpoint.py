"""Orbax checkpoints: exact resume (also after SIGKILL), refusal of incompatible ones."""
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from biggan_jax.train import BigGANTrainer, train_and_evaluate
from gan_core import parallel
from gan_core.checkpointing import Checkpointer, IncompatibleCheckpointError
from conftest import REPO, cli_command, restore_latest, tiny_config


def restore_final(workdir, config):
  checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"))
  step = checkpoints.latest_step()
  trainer = BigGANTrainer(config, 10, parallel.make_mesh())
  state = checkpoints.restore_state(step, trainer.abstract_state())
  meta = checkpoints.restore_meta(step)
  checkpoints.close()
  return step, jax.tree.map(np.asarray, state), meta


def assert_states_identical(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
  config = tiny_config()
  straight = train_and_evaluate(config, str(tmp_path / "straight"))
  first = tiny_config()
  first.num_train_steps = 2
  train_and_evaluate(first, str(tmp_path / "resumed"))
  resumed = train_and_evaluate(config, str(tmp_path / "resumed"))
  assert int(resumed.step) == 4
  assert_states_identical(jax.tree.map(np.asarray, straight), jax.tree.map(np.asarray, resumed))
  step, from_disk, meta = restore_final(str(tmp_path / "resumed"), config)
  assert step == 4 and meta["data_position"] == 4 * 2 * 8
  assert meta["config"]["model"]["ch"] == 4 and "generator" in meta["parameter_shapes"]
  assert_states_identical(from_disk, jax.tree.map(np.asarray, straight))


def test_incompatible_checkpoint_is_refused_and_left_untouched(tmp_path):
  config = tiny_config()
  config.num_train_steps = 2
  train_and_evaluate(config, str(tmp_path))
  ckpt_dir = tmp_path / "checkpoints"
  before = {p: p.stat().st_mtime_ns for p in ckpt_dir.rglob("*")}
  wider = tiny_config()
  wider.model.ch = 8
  wider.num_train_steps = 4
  with pytest.raises(IncompatibleCheckpointError) as error:
    train_and_evaluate(wider, str(tmp_path))
  message = str(error.value)
  assert "model.ch: checkpoint 4, current 8" in message
  assert "parameter discriminator/block0/conv1/kernel: checkpoint shape [3, 3, 3, 16]" in message
  assert "more" in message  # every mismatch is counted, the first ones shown
  assert "not been modified" in message
  assert {p: p.stat().st_mtime_ns for p in ckpt_dir.rglob("*")} == before


def run_main(model, workdir, iterations, every=1, extra=(), stdout=subprocess.DEVNULL):
  return subprocess.Popen(cli_command(model, workdir, iterations, every, extra), cwd=REPO,
                          stdout=stdout, stderr=subprocess.PIPE, text=True)


# BigGAN's variant is slow (about a minute); by default BigGAN's exact resume is checked
# in process (test_interrupted_and_resumed_run_is_bit_identical) and the SIGKILL path by PGGAN.
@pytest.mark.parametrize("model", [pytest.param("biggan", marks=pytest.mark.slow), "pggan"])
def test_sigkill_then_resume_is_bit_identical(tmp_path, model):
  reference = run_main(model, tmp_path / "reference", 12)
  victim = run_main(model, tmp_path / "victim", 12)
  ckpt_dir = tmp_path / "victim" / "checkpoints"
  deadline = time.time() + 600
  while time.time() < deadline and victim.poll() is None:
    if ckpt_dir.is_dir() and any(p.name.isdigit() and int(p.name) >= 2 for p in ckpt_dir.iterdir()):
      break
    time.sleep(0.05)
  assert victim.poll() is None, "the run finished before it could be killed"
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  killed_at = Checkpointer(str(ckpt_dir)).latest_step()
  assert killed_at is not None and killed_at < 12
  assert (tmp_path / "victim" / "run.lock").exists()  # Left behind by the killed run ...
  resumed = run_main(model, tmp_path / "victim", 12)  # ... and taken over: its pid is gone.
  _, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err[-3000:]
  assert "Resumed from" in err
  _, err = reference.communicate(timeout=600)
  assert reference.returncode == 0, err[-3000:]
  ref_step, ref_state, _ = restore_latest(tmp_path / "reference")
  step, state, _ = restore_latest(tmp_path / "victim")
  assert ref_step == step == 12
  assert_states_identical(ref_state, state)


# BigGAN's variant is slow (about a minute); PGGAN's runs the same shared loop by default.
@pytest.mark.parametrize("model", [pytest.param("biggan", marks=pytest.mark.slow), "pggan"])
def test_sigterm_saves_and_exits_cleanly(tmp_path, model):
  import threading
  process = run_main(model, tmp_path, 100000, every=100000, extra=[
      "--config.log_every_steps=1" if model == "biggan" else "--config.log_every_kimg=0.008"],
      stdout=subprocess.PIPE)
  lines, training = [], threading.Event()

  def read_stdout():
    for line in process.stdout:
      lines.append(line)
      if line.startswith("step ") and " img/s " in line:  # iterations are running
        training.set()
  reader = threading.Thread(target=read_stdout, daemon=True)
  reader.start()
  assert training.wait(600), "".join(lines[-50:])
  started = time.time()
  process.send_signal(signal.SIGTERM)
  process.wait(timeout=120)
  reader.join(timeout=10)
  err = process.stderr.read()
  assert process.returncode == 0, err[-3000:]
  assert time.time() - started < 60
  assert "SIGTERM received" in err
  step = Checkpointer(str(tmp_path / "checkpoints")).latest_step()
  assert step is not None and 0 < step < 100000
  assert not (tmp_path / "run.lock").exists()  # Released on a clean exit.
  # Rerunning the same command continues from the saved step.
  process = run_main(model, tmp_path, step + 1)
  _, err = process.communicate(timeout=600)
  assert process.returncode == 0 and "Resumed from" in err and f"at step {step}" in err


def test_config_fields_added_later_resume_older_checkpoints():
  """A checkpoint written before model.output_bn_eps / sn_eval / truncation_bn_stats existed
  resumes with their defaults (the behaviour it was trained with), and only with those."""
  from biggan_jax.config import base_config
  from biggan_jax.train import BigGANTask
  from gan_core.checkpointing import check_compatible
  means = BigGANTask.absent_config_means
  config = base_config()
  assert {key: config[key] if "." not in key else config.model[key.split(".")[1]]
          for key in means} == means
  model_means = {k.split(".")[1]: v for k, v in means.items() if k.startswith("model.")}
  saved = {"config": {"model": {"ch": 4}}}
  current = {"config": {"model": {"ch": 4, **model_means}}}
  check_compatible(saved, current, "d", 1, absent_means=means)
  with pytest.raises(IncompatibleCheckpointError, match="output_bn_eps: checkpoint '<absent>'"):
    check_compatible(saved, current, "d", 1)
  current["config"]["model"]["output_bn_eps"] = 1e-4
  with pytest.raises(IncompatibleCheckpointError,
                     match="model.output_bn_eps: checkpoint 1e-05, current 0.0001"):
    check_compatible(saved, current, "d", 1, absent_means=means)
