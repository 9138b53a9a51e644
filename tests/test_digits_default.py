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
  # Measured 2026-12-02 (2-core CPU): accuracy 0.979, precision 0.719, recall 0.516,
  # diversity 0.843, all classes (real digits: 0.965 / 0.898 / 0.911 / 1.0). Without the
  # diversity term (diversity_reg 0) G drew 0.773 / 0.273 / 0.715; with equal learning rates
  # and a 64-d z, near-copies (recall 0.016): the recall and diversity floors catch a return
  # to either. Issue 14's goal of recall >= 0.6 at precision >= 0.7 is not reached yet.
  # A second run of the same command on another VM drew 0.967 / 0.625 / 0.472 / 0.854
  # (RESULTS.md): the floors sit below that spread.
  assert samples["digit_accuracy"] >= 0.95
  assert samples["precision"] >= 0.55
  assert samples["recall"] >= 0.4
  assert samples["diversity"] >= 0.75
  assert samples["classes_present"] == 10
  assert minutes < 12
