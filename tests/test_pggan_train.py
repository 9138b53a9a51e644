"""PGGAN end to end on 8 simulated devices: growth 4 -> 8 -> 16 with fade-ins, exact
resume from inside a fade-in, checkpoint refusal, the command lines."""
import hashlib
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from conftest import REPO
from gan_core.checkpointing import Checkpointer, IncompatibleCheckpointError
from pggan_jax.config import base_config, per_resolution
from pggan_jax.train import train_and_evaluate


def tiny_pggan_config() -> ml_collections.ConfigDict:
  """16x16, 16 channels; the schedule is evaluated every 2 iterations of 8 images:
  4x4 for 32 images, fade to 8x8 (alpha 1/3, 2/3), 8x8 stable, fade to 16x16, 16x16."""
  c = base_config(16)
  c.dataset = "digits"
  c.random_flip = False
  c.model.fmap_base = 64
  c.model.fmap_max = 16
  c.model.latent_size = 16
  c.batch_size = per_resolution(8, 16)
  c.learning_rate = per_resolution(0.001, 16, r16=0.002)
  c.stable_kimg = 0.016
  c.transition_kimg = 0.048
  c.total_kimg = 0.144
  c.minibatch_repeats = 2
  c.checkpoint_every_kimg = 0.064
  c.log_every_kimg = 0.032
  c.sample_every_kimg = 0.0
  c.num_grid_samples = 4
  return c


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
  """An uninterrupted run and one stopped inside the 8x8 fade-in (mid-group) and resumed."""
  straight = tmp_path_factory.mktemp("straight")
  state_straight = train_and_evaluate(tiny_pggan_config(), str(straight))
  resumed = tmp_path_factory.mktemp("resumed")
  train_and_evaluate(tiny_pggan_config(), str(resumed), max_iterations=7)
  state_resumed = train_and_evaluate(tiny_pggan_config(), str(resumed))
  return straight, state_straight, resumed, state_resumed


def test_growth_visits_every_phase_and_ends_at_full_resolution(grown):
  straight, state, _, _ = grown
  assert int(state.step) == 18 and int(state.images_seen) == 144
  checkpoints = Checkpointer(str(straight / "checkpoints"))
  meta = checkpoints.restore_meta(checkpoints.latest_step())
  checkpoints.close()
  assert (meta["resolution"], meta["alpha"], meta["images_seen"]) == (16, 1.0, 144)
  samples = sorted(os.listdir(straight / "samples"))
  assert any(s.endswith("_4x4.png") for s in samples)
  assert any(s.endswith("_8x8.png") for s in samples)
  assert any(s.endswith("_16x16.png") for s in samples)
  # G-EMA and G moved away from their initial values, and all are finite.
  assert all(np.all(np.isfinite(x)) for x in leaves(state))


def test_resume_inside_a_fade_in_is_bit_identical(grown):
  _, state_straight, resumed, state_resumed = grown
  checkpoints = Checkpointer(str(resumed / "checkpoints"))
  assert 7 in checkpoints.all_steps() or min(checkpoints.all_steps()) > 7
  checkpoints.close()
  a, b = leaves(state_straight), leaves(state_resumed)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_stop_point_was_inside_a_fade_in(tmp_path):
  from pggan_jax import schedule
  c = tiny_pggan_config()
  # Iteration 7 starts at 56 images; its group began at 48 images: 8x8, alpha 2/3.
  phase = schedule.phase_at(48, c)
  assert (phase.resolution, phase.fading) == (8, True)
  assert abs(phase.alpha - 2 / 3) < 1e-9


def test_incompatible_checkpoint_is_refused_untouched(grown):
  straight, _, _, _ = grown
  directory = straight / "checkpoints"
  before = {p: p.stat().st_mtime_ns for p in directory.rglob("*")}
  config = tiny_pggan_config()
  config.model.fmap_max = 32
  config.total_kimg = 1.0
  with pytest.raises(IncompatibleCheckpointError, match="fmap_max"):
    train_and_evaluate(config, str(straight))
  assert {p: p.stat().st_mtime_ns for p in directory.rglob("*")} == before


def test_conditional_config_on_unlabelled_request_is_rejected():
  from pggan_jax.train import resolve_num_classes
  c = tiny_pggan_config()
  c.model.num_classes = 10
  assert resolve_num_classes(c, 10) == 10
  with pytest.raises(ValueError, match="num_classes=0"):
    resolve_num_classes(c, 0)
  with pytest.raises(ValueError, match="has 7 classes"):
    resolve_num_classes(c, 7)


def run(*args, timeout=600):
  result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
  return result.returncode, result.stdout, result.stderr


def test_dry_run_prints_the_papers_counts(tmp_path):
  code, out, err = run("pggan_jax.main", "--config=configs/pggan_celebahq1024.py", "--dry_run",
                       f"--workdir={tmp_path}", "--config.batch_size.r1024=16")
  assert code == 0, err[-2000:]
  lines = out.splitlines()
  assert "G parameters: 23079115" in lines
  assert "D parameters: 23087249" in lines
  assert "checkpoint step: none" in lines
  assert "  1024x1024 from 9000 kimg (fade-in to 9600): batch 16, learning rate 0.003" in lines


def test_sample_cli_is_reproducible(grown, tmp_path):
  straight = grown[0]
  digests = []
  for name in ("a.npz", "b.npz"):
    code, stdout, err = run("pggan_jax.sample", f"--workdir={straight}",
                            f"--out={tmp_path / name}", "--num_samples=5", "--seed=3",
                            "--batch_size=4", "--grid")
    assert code == 0, err[-2000:]
    digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
  assert digests[0] == digests[1]
  data = np.load(tmp_path / "a.npz")
  assert data["images"].shape == (5, 16, 16, 3) and data["images"].dtype == np.uint8
  assert "labels" not in data.files  # Unconditional.
  assert (tmp_path / "a.png").exists()
  assert "16x16" in stdout
  code, _, err = run("pggan_jax.sample", f"--workdir={straight}", f"--out={tmp_path / 'i.png'}",
                     "--num_samples=2", "--interpolate=3", "--labels=1,2")
  assert code != 0 and "unconditional" in err
  code, _, err = run("pggan_jax.sample", f"--workdir={tmp_path / 'nothing'}",
                     f"--out={tmp_path / 'x.npz'}")
  assert code != 0 and "train first" in err


def test_evaluate_cli_tracks_pggans_metrics_and_sampling_takes_latents(grown, tmp_path):
  """`pggan_jax.evaluate` computes SWD and MS-SSIM of G-EMA at the checkpoint's resolution
  (no Inception needed); `--latents` renders a sampling .npz's z again."""
  import json
  straight = grown[0]
  code, stdout, err = run("pggan_jax.evaluate", f"--workdir={straight}", "--num_samples=16",
                          "--batch_size=8", "--metrics=swd,ms_ssim")
  assert code == 0, err[-2000:]
  values = dict(line.split(": ") for line in stdout.splitlines())
  assert set(values) == {"swd_16", "swd_avg", "ms_ssim"}
  [record] = [json.loads(l) for l in open(os.path.join(straight, "evaluations.jsonl"))]
  assert record["resolution"] == 16 and record["swd_avg"] == pytest.approx(
      float(values["swd_avg"]))
  code, _, err = run("pggan_jax.sample", f"--workdir={straight}", f"--out={tmp_path / 'a.npz'}",
                     "--num_samples=3", "--seed=5")
  assert code == 0, err[-2000:]
  first = np.load(tmp_path / "a.npz")
  np.savez(tmp_path / "z.npz", z=first["z"])
  code, _, err = run("pggan_jax.sample", f"--workdir={straight}", f"--out={tmp_path / 'b.npz'}",
                     f"--latents={tmp_path / 'z.npz'}")
  assert code == 0, err[-2000:]
  np.testing.assert_array_equal(np.load(tmp_path / "b.npz")["images"], first["images"])
  code, _, err = run("biggan_jax.sample", f"--workdir={straight}", f"--out={tmp_path / 'c.npz'}")
  assert code == 1 and "holds a 'pggan' checkpoint" in err and "Traceback" not in err


def test_non_finite_discriminator_update_is_skipped_and_counted():
  import jax.numpy as jnp
  from gan_core import parallel
  from pggan_jax.train import PGGANTrainer
  config = tiny_pggan_config()
  config.wgan_epsilon = float("nan")  # D's loss (only) becomes NaN.
  mesh = parallel.make_mesh()
  trainer = PGGANTrainer(config, 0, mesh)
  state = trainer.init_state(0)
  d_before, g_before = leaves(state.d_params), leaves(state.g_params)
  rng = np.random.default_rng(0)
  batch = {"images": parallel.global_array_from_local(
               rng.integers(0, 256, (1, 8, 4, 4, 3), dtype=np.uint8), mesh, 1),
           "labels": parallel.global_array_from_local(np.zeros((1, 8), np.int32), mesh, 1)}
  state, metrics = trainer.train_iteration(state, batch, jnp.float32(1.0), jnp.float32(1e-3),
                                           res=4, fading=False)
  assert int(state.skipped_updates) == 1 and float(metrics["d_skipped"]) == 1.0
  assert not np.isfinite(float(metrics["d_loss"]))
  for a, b in zip(d_before, leaves(state.d_params)):
    np.testing.assert_array_equal(a, b)
  assert int(state.d_opt_state.count) == 0 and int(state.g_opt_state.count) == 1
  assert any(not np.array_equal(a, b) for a, b in zip(g_before, leaves(state.g_params)))


def test_cli_refuses_another_models_checkpoint_with_one_clear_message(grown):
  straight = grown[0]
  code, _, err = run("pggan_jax.main", "--config=configs/pggan_digits32.py",
                     f"--workdir={straight}")
  assert code == 1
  assert "error: the checkpoint at" in err and "model.resolution" in err
  assert "Traceback" not in err


def test_damaged_newest_checkpoint_is_moved_aside_and_resumed_from_the_one_before(grown,
                                                                                 tmp_path):
  straight, state_straight, _, _ = grown
  workdir = tmp_path / "run"
  shutil.copytree(straight, workdir)
  checkpoints = Checkpointer(str(workdir / "checkpoints"))
  steps = checkpoints.all_steps()
  checkpoints.close()
  newest = workdir / "checkpoints" / str(max(steps))
  metadata = newest / "meta" / "metadata"
  with open(metadata, "r+b") as f:
    f.truncate(metadata.stat().st_size // 2)
  state = train_and_evaluate(tiny_pggan_config(), str(workdir))
  # Resumed from the checkpoint before and trained the last iterations again: same result.
  for x, y in zip(leaves(state_straight), leaves(state)):
    np.testing.assert_array_equal(x, y)
  aside = list((workdir / "checkpoints_damaged").iterdir())
  assert len(aside) == 1 and aside[0].name.startswith(f"{max(steps)}-")
