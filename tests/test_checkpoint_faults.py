"""Faults a user meets: a damaged newest checkpoint (moved aside, older one resumed, same
result), no readable checkpoint (one clear error, nothing moved), and two runs on one
workdir (the second refuses at once and writes nothing)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from biggan_jax.train import train_and_evaluate
from gan_core import workdir_lock
from gan_core.checkpointing import CheckpointError, Checkpointer
from conftest import REPO, tiny_config
from test_checkpoint import assert_states_identical


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """A tiny BigGAN run to step 4 (checkpoints 2 and 4) and its final state."""
  workdir = tmp_path_factory.mktemp("straight")
  state = train_and_evaluate(tiny_config(), str(workdir))
  return workdir, jax.tree.map(np.asarray, state)


def truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage", ["meta", "arrays"])
def test_damaged_newest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_one_before(
    straight, tmp_path, damage, capfd):
  source, final_state = straight
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  step4 = workdir / "checkpoints" / "4"
  if damage == "meta":
    damaged = [step4 / "meta" / "metadata"]
  else:  # Every array data file: which of them a restore reads is Orbax's business.
    damaged = [p for p in (step4 / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  for path in damaged:
    truncate(path)
  resumed = train_and_evaluate(tiny_config(), str(workdir))
  # It resumed from step 2 and trained steps 3-4 again: the same final state, bit for bit.
  assert_states_identical(jax.tree.map(np.asarray, resumed), final_state)
  aside = list((workdir / "checkpoints_damaged").iterdir())
  assert len(aside) == 1 and aside[0].name.startswith("4-")
  for path in damaged:  # Kept as it was.
    assert (aside[0] / path.relative_to(step4)).stat().st_size == os.path.getsize(
        source / "checkpoints" / "4" / path.relative_to(step4)) // 2
  checkpoints = Checkpointer(str(workdir / "checkpoints"))
  assert checkpoints.all_steps() == [2, 4]
  checkpoints.close()
  err = capfd.readouterr().err
  assert "CHECKPOINT DAMAGED: step 4" in err and "resuming from the newest readable" in err


def test_no_readable_checkpoint_is_one_clear_error_and_nothing_moves(straight, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(straight[0], workdir)
  for step in (2, 4):
    truncate(workdir / "checkpoints" / str(step) / "meta" / "metadata")
  before = {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").rglob("*")}
  with pytest.raises(CheckpointError, match=r"no checkpoint .* can be read: step 4 \(meta: "
                     r"JSONDecodeError.*step 2 \(meta.*Nothing was moved"):
    train_and_evaluate(tiny_config(), str(workdir))
  assert {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").rglob("*")} == before
  assert not (workdir / "checkpoints_damaged").exists()
  assert not (workdir / "run.lock").exists()  # Released on the error.


# --- one run per workdir -------------------------------------------------------------------

def test_a_second_run_on_a_locked_workdir_refuses_and_writes_nothing(tmp_path):
  workdir = tmp_path / "shared"
  lock = workdir_lock.WorkdirLock(str(workdir)).acquire()  # A live run: this process.
  try:
    before = {p.name: p.read_bytes() for p in workdir.iterdir()}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "biggan_jax.main", f"--workdir={workdir}",
         "--config=configs/digits32.py"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert str(workdir) in errors[0] and f"pid {os.getpid()}" in errors[0]
    assert f"host {socket.gethostname()}" in errors[0]
    assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before  # Only run.lock.
    assert time.perf_counter() - started < 120  # Refused at start, before any training.
  finally:
    lock.release()
  assert not (workdir / "run.lock").exists()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / "run.lock").write_text(json.dumps(
      {"host": socket.gethostname(), "pid": dead.pid, "started": "earlier"}))
  lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
  lock.release()


def test_lock_of_another_host_is_live_until_its_heartbeat_stops(tmp_path):
  path = tmp_path / "run.lock"
  path.write_text(json.dumps({"host": "another-host", "pid": 1, "started": "earlier"}))
  with pytest.raises(workdir_lock.WorkdirLockedError, match="host another-host, pid 1"):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  old = time.time() - workdir_lock.STALE_S - 10
  os.utime(path, (old, old))
  lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert json.loads(path.read_text())["host"] == socket.gethostname()
  lock.release()
  # An unreadable lock file (its writer killed mid-write) is stale too.
  path.write_text('{"host": "another-ho')
  workdir_lock.WorkdirLock(str(tmp_path)).acquire().release()


def test_heartbeat_refreshes_the_lock(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.05)
  lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  old = time.time() - 1000
  os.utime(tmp_path / "run.lock", (old, old))
  time.sleep(0.5)
  assert time.time() - os.path.getmtime(tmp_path / "run.lock") < 5
  lock.release()


def test_retention_keeps_the_newest_and_a_permanent_series(tmp_path):
  import jax.numpy as jnp
  checkpoints = Checkpointer(str(tmp_path), max_to_keep=2, keep_every_steps=4)
  for step in range(1, 11):
    checkpoints.save(step, {"x": jnp.arange(3) + step}, {"step": step})
    checkpoints.wait()
  assert checkpoints.all_steps() == [1, 5, 9, 10]
  checkpoints.close()
  plain = Checkpointer(str(tmp_path / "plain"), max_to_keep=2)
  for step in range(1, 6):
    plain.save(step, {"x": jnp.arange(3)}, {"step": step})
  plain.close()
  assert Checkpointer(str(tmp_path / "plain")).all_steps() == [4, 5]
