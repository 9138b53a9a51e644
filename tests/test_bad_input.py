"""Bad input is a clear error (one `error:` line from the command line) and never costs a
checkpoint: a full disk, an unusable workdir, a missing dataset folder, a corrupt image, a
batch that does not split over the devices. (Unknown config fields: test_cli.py; another architecture's
checkpoint: test_checkpoint.py / test_pggan_train.py; unsafe weight files:
test_torch_pickle.py.)"""
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from biggan_jax.train import train_and_evaluate
from gan_core.checkpointing import CheckpointError, Checkpointer
from gan_core.data import DataError
from conftest import CLI_MODELS, REPO, cli_command, tiny_config

TINY = ["--config=configs/digits32.py", "--config.model.ch=4", "--config.model.dim_z=16",
        "--config.model.shared_dim=8", "--config.batch_size=8", "--config.log_every_steps=2",
        "--config.checkpoint_every_steps=2", "--config.sample_every_steps=0",
        "--config.ema_start=2"]  # As test_checkpoint's runs: one compiled program for both.


def train(workdir, *extra, preexec_fn=None):
  command = [sys.executable, "-m", "biggan_jax.main", f"--workdir={workdir}", *TINY, *extra]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                          preexec_fn=preexec_fn)
  return result.returncode, result.stderr


def error_line(stderr):
  lines = [l for l in stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def snapshot(directory):
  return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")
          if p.is_file()}


def file_size_limit(limit_bytes):
  """A disk that fills up: writes beyond `limit_bytes` per file fail with EFBIG."""
  def apply():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
  return apply


# BigGAN's variant is slow (about a minute); PGGAN's runs by default through the same loop.
@pytest.mark.parametrize("model", [pytest.param("biggan", marks=pytest.mark.slow), "pggan"])
def test_full_disk_is_a_clear_error_and_keeps_earlier_checkpoints(tmp_path, model):
  def run(iterations, **kwargs):
    result = subprocess.run(cli_command(model, tmp_path, iterations, every=2), cwd=REPO,
                            capture_output=True, text=True, timeout=900, **kwargs)
    return result.returncode, result.stderr

  code, err = run(2)
  assert code == 0, err[-3000:]
  step_dir = tmp_path / "checkpoints" / "2"
  before = snapshot(step_dir)
  # The states of the tiny models are written in files of ~100 KB; TensorBoard's are smaller.
  code, err = run(4, preexec_fn=file_size_limit(60_000))
  assert code == 1
  message = error_line(err)
  assert "writing checkpoint 4 to" in message and "File too large" in message
  assert "The disk may be full or read-only" in message
  assert "Earlier checkpoints are untouched (steps [2])" in message
  assert snapshot(step_dir) == before
  # The partial step-4 directory does not count: a rerun resumes from step 2.
  module, args = CLI_MODELS[model]
  result = subprocess.run([sys.executable, "-m", module, f"--workdir={tmp_path}", *args,
                           "--dry_run"], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0 and "checkpoint step: 2" in result.stdout, result.stderr[-2000:]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_workdir_is_a_clear_error_and_keeps_earlier_checkpoints(tmp_path):
  code, err = train(tmp_path, "--config.num_train_steps=2")
  assert code == 0, err[-3000:]
  before = snapshot(tmp_path / "checkpoints")
  for path in [tmp_path, *tmp_path.rglob("*")]:
    if path.is_dir():
      path.chmod(0o555)
  try:
    code, err = train(tmp_path, "--config.num_train_steps=4")
  finally:
    for path in [tmp_path, *tmp_path.rglob("*")]:
      if path.is_dir():
        path.chmod(0o755)
  assert code == 1 and "error: " in err
  assert snapshot(tmp_path / "checkpoints") == before


def test_workdir_that_cannot_hold_checkpoints(tmp_path):
  blocker = tmp_path / "not_a_directory"
  blocker.write_text("a file where the workdir should be")
  with pytest.raises(CheckpointError, match="cannot create or open the checkpoint directory"):
    Checkpointer(str(blocker / "checkpoints"))


def test_missing_dataset_folder_names_it_and_the_expected_layout(tmp_path):
  missing = tmp_path / "no_such_folder"
  config = tiny_config()
  config.dataset = str(missing)
  with pytest.raises(DataError) as error:
    train_and_evaluate(config, str(tmp_path / "run"))
  message = str(error.value)
  assert str(missing) in message and "does not exist" in message
  assert "FOLDER/<class_name>/<image files>" in message


def test_corrupt_image_in_a_folder_dataset_is_named(tmp_path):
  rng = np.random.default_rng(0)
  for label in ("a", "b"):
    (tmp_path / "data" / label).mkdir(parents=True)
    for i in range(8):
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
          tmp_path / "data" / label / f"{i}.png")
  broken = tmp_path / "data" / "b" / "3.png"
  broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
  config = tiny_config()
  config.dataset = str(tmp_path / "data")
  config.model.num_classes = 2
  with pytest.raises(DataError) as error:
    train_and_evaluate(config, str(tmp_path / "run"))  # Every epoch reads every file.
  message = str(error.value)
  assert f"cannot decode image '{broken}'" in message and "Delete or replace the file" in message


def test_batch_that_does_not_split_over_the_devices_states_the_rule(tmp_path):
  code, err = train(tmp_path, "--config.batch_size=6", "--config.num_train_steps=2")
  assert code == 1  # conftest gives every process 8 simulated devices.
  message = error_line(err)
  assert "=6 cannot be split over 8 devices" in message
  assert "positive multiple of the number of devices (8)" in message and "=8" in message
  assert "Traceback" not in err


def test_pggan_config_without_a_value_for_the_resolution_is_one_error_line():
  result = subprocess.run(
      [sys.executable, "-m", "pggan_jax.main", "--config=configs/pggan_cifar10.py",
       "--config.model.resolution=64", "--dry_run"], cwd=REPO, capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert "add --config.batch_size.r64=VALUE" in error_line(result.stderr)
