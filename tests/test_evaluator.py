"""Evaluation: the evaluator's measurements (FID/IS/KID, SWD, MS-SSIM), cached dataset
statistics, and in training metrics.jsonl, the best-FID checkpoint and training that goes
on without Inception weights."""
import json
import os

import numpy as np
import pytest

from gan_core import parallel
from gan_core.data import build_pipeline
from gan_core.eval import fid
from gan_core.eval.config import eval_config
from gan_core.eval.evaluator import Evaluator
from gan_core.training import BEST_DIR, METRICS_FILE


def _eval_config(weights_path, tmp_path, **overrides):
  e = eval_config()
  e.num_samples = 16
  e.batch_size = 8
  e.inception_weights = weights_path
  e.stats_dir = str(tmp_path / "stats")
  e.update(overrides)
  return e


def _digit_reals():
  pipeline = build_pipeline("digits", 32, 0, False)
  return lambda resolution, batch: (b["images"] for b in pipeline.iterate(0, (batch,)))


def test_reals_against_their_own_statistics_give_zero_fid(fid_weights_path, tmp_path):
  mesh = parallel.make_mesh()
  evaluator = Evaluator(_eval_config(fid_weights_path, tmp_path, metrics="fid,is,kid,swd"),
                        mesh, dataset_id="digits", real_batches=_digit_reals())
  reals = _digit_reals()(32, 8)
  first_two = [parallel.global_array_from_local(next(reals), mesh) for _ in range(2)]
  batches = iter(first_two)
  results = evaluator.measure(lambda key: next(batches), resolution=32)
  assert abs(results["fid"]) < 1e-3  # the same 16 images: FID 0 up to float rounding
  assert results["swd_avg"] == 0.0  # the same images and patches: exactly 0
  assert np.isfinite(results["kid_mean"])
  assert results["is_mean"] >= 1.0
  stats_file = tmp_path / "stats" / "digits-32px-16.npz"
  mu, sigma = fid.load_statistics(str(stats_file))
  assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
  assert list(results) == ["fid", "is_mean", "is_std", "kid_mean", "kid_std", "swd_32",
                           "swd_16", "swd_avg"]


def test_measurements_equal_the_api_on_the_same_images(tmp_path):
  """SWD and MS-SSIM of generated batches through the evaluator (no Inception needed) equal
  `gan_core.eval.compute` on the same arrays; below 16x16 they are left out."""
  from gan_core.eval import compute
  mesh = parallel.make_mesh()
  evaluator = Evaluator(_eval_config("", tmp_path, metrics="swd,ms_ssim"), mesh,
                        dataset_id="digits", real_batches=_digit_reals())
  rng = np.random.default_rng(0)
  fakes = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
  batches = iter([parallel.global_array_from_local(fakes[:8], mesh),
                  parallel.global_array_from_local(fakes[8:], mesh)])
  results = evaluator.measure(lambda key: next(batches), resolution=32)
  reals = np.concatenate([next(_digit_reals()(32, 16))])
  expected = compute("swd,ms_ssim", fake=fakes, real=reals)
  assert results == pytest.approx(expected, rel=1e-6) and results["swd_avg"] > 0
  tiny = iter([parallel.global_array_from_local(fakes[:8, :8, :8], mesh)] * 2)
  assert evaluator.measure(lambda key: next(tiny), resolution=8) == {}


def test_missing_weights_turn_evaluation_off_once(tmp_path, capsys):
  evaluator = Evaluator(_eval_config("", tmp_path), parallel.make_mesh(), dataset_id="digits",
                        real_batches=_digit_reals())
  for _ in (1, 2):
    assert evaluator.measure(lambda key: None, resolution=32) is None
  assert not evaluator.active
  assert capsys.readouterr().out.count("evaluation is off") == 1


@pytest.fixture
def fast_fid(monkeypatch):
  """The exact 2048-d FID costs ~20 s of eigvals on 2 cores; the training-loop tests check
  the plumbing (logging, best checkpoint), so they use the same formula on 64 dims."""
  exact = fid.frechet_distance
  monkeypatch.setattr("gan_core.eval.fid.frechet_distance",
                      lambda m1, s1, m2, s2: exact(m1[:64], s1[:64, :64], m2[:64], s2[:64, :64]))


def test_biggan_training_logs_metrics_and_keeps_the_best_checkpoint(tiny, fid_weights_path,
                                                                   tmp_path, fast_fid):
  from biggan_jax.train import train_and_evaluate
  from gan_core.checkpointing import Checkpointer
  tiny.eval_every_steps = 2
  tiny.eval = _eval_config(fid_weights_path, tmp_path)
  workdir = str(tmp_path / "run")
  train_and_evaluate(tiny, workdir)
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [2, 4]
  assert all(np.isfinite(r["fid"]) and r["is_mean"] >= 1 for r in records)
  best = min(records, key=lambda r: r["fid"])
  kept = Checkpointer(os.path.join(workdir, BEST_DIR))
  assert kept.all_steps() == [best["step"]]
  assert kept.restore_meta(best["step"])["fid"] == best["fid"]
  kept.close()


@pytest.mark.slow  # About 100 s; BigGAN's in-training evaluation runs by default.
def test_pggan_training_evaluates_at_the_current_resolution(fid_weights_path, tmp_path,
                                                           fast_fid):
  from test_pggan_train import tiny_pggan_config
  config = tiny_pggan_config()
  config.eval_every_kimg = config.total_kimg / 2
  config.eval = _eval_config(fid_weights_path, tmp_path, metrics="fid,swd,ms_ssim")
  from pggan_jax.train import train_and_evaluate
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    records = [json.loads(line) for line in f]
  assert len(records) == 2 and all(np.isfinite(r["fid"]) for r in records)
  assert records[-1]["resolution"] == config.model.resolution == 16
  # PGGAN's own metrics, tracked in training as in the paper (defined from 16x16 on).
  assert {"swd_16", "swd_avg", "ms_ssim"} <= set(records[-1])
  assert records[-1]["swd_avg"] > 0 and 0 <= records[-1]["ms_ssim"] <= 1
  assert "swd_avg" not in records[0] or records[0]["resolution"] >= 16
  assert "kimg" in records[0] and "alpha" in records[0]
  assert os.path.isdir(os.path.join(workdir, BEST_DIR))
