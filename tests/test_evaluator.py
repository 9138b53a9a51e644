"""In-training evaluation: metrics.jsonl, cached dataset statistics, best-FID checkpoint,
and training that goes on without Inception weights."""
import json
import os

import numpy as np
import pytest

from gan_core import parallel
from gan_core.data import build_pipeline
from gan_core.eval import fid
from gan_core.eval.config import eval_config
from gan_core.eval.evaluator import BEST_DIR, METRICS_FILE, Evaluator


class _Writer:
  def __init__(self):
    self.scalars = []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, dict(scalars)))


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
  writer = _Writer()
  evaluator = Evaluator(_eval_config(fid_weights_path, tmp_path, metrics="fid,is,kid"),
                        str(tmp_path / "work"), mesh, dataset_id="digits",
                        real_batches=_digit_reals(), writer=writer)
  reals = _digit_reals()(32, 8)
  first_two = [parallel.global_array_from_local(next(reals), mesh) for _ in range(2)]
  batches = iter(first_two)
  results = evaluator.evaluate(3, lambda key: next(batches), resolution=32)
  assert abs(results["fid"]) < 1e-3  # the same 16 images: FID 0 up to float rounding
  assert np.isfinite(results["kid_mean"])
  assert results["is_mean"] >= 1.0
  stats_file = tmp_path / "stats" / "digits-32px-16.npz"
  mu, sigma = fid.load_statistics(str(stats_file))
  assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
  [(step, scalars)] = writer.scalars
  assert step == 3 and set(scalars) == {"eval/fid", "eval/is_mean", "eval/is_std",
                                        "eval/kid_mean", "eval/kid_std"}
  with open(tmp_path / "work" / METRICS_FILE) as f:
    record = json.loads(f.read())
  assert record["step"] == 3 and record["fid"] == results["fid"] and record["num_samples"] == 16


def test_missing_weights_turn_evaluation_off_once(tmp_path, capsys):
  evaluator = Evaluator(_eval_config("", tmp_path), str(tmp_path / "work"),
                        parallel.make_mesh(), dataset_id="digits", real_batches=_digit_reals(),
                        writer=_Writer())
  for step in (1, 2):
    assert evaluator.evaluate(step, lambda key: None, resolution=32) is None
  assert not evaluator.active
  assert capsys.readouterr().out.count("evaluation is off") == 1
  assert not os.path.exists(tmp_path / "work" / METRICS_FILE)


@pytest.fixture
def fast_fid(monkeypatch):
  """The exact 2048-d FID costs ~20 s of eigvals on 2 cores; the training-loop tests check
  the plumbing (logging, best checkpoint), so they use the same formula on 64 dims."""
  exact = fid.frechet_distance
  monkeypatch.setattr("gan_core.eval.evaluator.fid_lib.frechet_distance",
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


def test_pggan_training_evaluates_at_the_current_resolution(fid_weights_path, tmp_path,
                                                           fast_fid):
  from test_pggan_train import tiny_pggan_config
  config = tiny_pggan_config()
  config.eval_every_kimg = config.total_kimg / 2
  config.eval = _eval_config(fid_weights_path, tmp_path)
  from pggan_jax.train import train_and_evaluate
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    records = [json.loads(line) for line in f]
  assert len(records) == 2 and all(np.isfinite(r["fid"]) for r in records)
  assert records[-1]["resolution"] == config.model.resolution
  assert "kimg" in records[0] and "alpha" in records[0]
  assert os.path.isdir(os.path.join(workdir, BEST_DIR))
