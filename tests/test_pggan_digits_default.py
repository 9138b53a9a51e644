"""The embedded PGGAN default grows 4x4 -> 32x32 on digits into recognisable digits of
varied classes in under 15 minutes on a 2-core CPU (slow).

Run with `python -m pytest -m slow tests/test_pggan_digits_default.py`.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO


@pytest.mark.slow
def test_pggan_digits32_default_grows_into_recognisable_digits(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # As the README runs it.
  started = time.time()
  train = subprocess.run([sys.executable, "-m", "pggan_jax.main",
                          "--config=configs/pggan_digits32.py", f"--workdir={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, env=env)
  minutes = (time.time() - started) / 60
  assert train.returncode == 0, train.stderr[-3000:]
  out = tmp_path / "samples.npz"
  sample = subprocess.run([sys.executable, "-m", "pggan_jax.sample", f"--workdir={tmp_path}",
                           f"--out={out}", "--num_samples=898", "--seed=1"], cwd=REPO,
                          capture_output=True, text=True, env=env)
  assert sample.returncode == 0, sample.stderr[-3000:]
  from gan_core.eval.digits import digit_report, format_report
  images = np.load(out)["images"]
  assert images.shape == (898, 32, 32, 3)
  report = digit_report(images)
  print(f"pggan_digits32: {minutes:.1f} min\n{format_report(report)}")
  samples = report["samples"]
  # Measured 2026-12-03 (batch 16, 140 kimg): precision 0.742 / recall 0.717 on this measure
  # in 13.6 minutes alone (real digits: 0.90 / 0.91); training seeds 1, 2 and 3 drew 0.694 /
  # 0.733, 0.735 / 0.759 and 0.766 / 0.732. Batch 32 at 120 kimg drew 0.66, learning rates 1e-3 / 3e-3 there
  # 0.39 / 0.54 (issue 14): the floor sits below the seeds' spread and above those.
  assert samples["precision"] > 0.62
  assert samples["recall"] > 0.6  # Varied digits, no collapse.
  assert samples["classes_present"] >= 9
  assert minutes < 20
