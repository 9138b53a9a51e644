"""The embedded default trains to recognisable, class-correct digits (slow: ~10 minutes).

Run with `python -m pytest -m slow tests/test_digits_default.py`.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO


@pytest.mark.slow
def test_digits32_default_trains_to_recognisable_digits(tmp_path):
  # As the README runs it: one process, the machine's real devices (no simulated ones).
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  started = time.time()
  train = subprocess.run([sys.executable, "-m", "biggan_jax.main", "--config=configs/digits32.py",
                          f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                         env=env)
  minutes = (time.time() - started) / 60
  assert train.returncode == 0, train.stderr[-3000:]
  out = tmp_path / "samples.npz"
  sample = subprocess.run([sys.executable, "-m", "biggan_jax.sample", f"--workdir={tmp_path}",
                           f"--out={out}", "--num_samples=898", "--seed=1"], cwd=REPO,
                          capture_output=True, text=True)
  assert sample.returncode == 0, sample.stderr[-3000:]
  from gan_core.eval.digits import digit_report, format_report
  data = np.load(out)
  report = digit_report(data["images"], data["labels"])
  print(f"digits32: {minutes:.1f} min\n{format_report(report)}")
  samples = report["samples"]
  # Measured 2026-12-03 (2-core CPU), 4000 iterations: this test (training seed 0, sampling
  # seed 1) drew precision 0.707, recall 0.656, diversity 0.91, accuracy 0.97, all classes
  # in 8.2 min (real digits: 0.898 / 0.911 / 1.0 / 0.965); training seeds 0 / 1 / 2 with
  # sampling seeds 1 / 2 / 3 drew precision 0.705 to 0.781, recall 0.635 to 0.697. Issue
  # 14's goal is precision >= 0.7 and recall >= 0.6; the same command has drawn precision
  # 0.05 apart on two VMs (RESULTS.md), so the floors sit that far below the lowest seed.
  # They still catch the recipes before: recall 0.47 to 0.52 (diversity_reg 2, cap 0.3),
  # 0.27 (no diversity term), 0.016 (equal learning rates, 64-d z).
  assert samples["digit_accuracy"] >= 0.95
  assert samples["precision"] >= 0.65
  assert samples["recall"] >= 0.58
  assert samples["diversity"] >= 0.8
  assert samples["classes_present"] == 10
  assert minutes < 12
