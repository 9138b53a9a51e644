"""Pieces of the one training loop (gan_core/training.py) that need no training run: the
cadence vocabulary, the console line and the best-FID memory of a workdir."""
import json

import ml_collections
import pytest

from gan_core.errors import ConfigError
from gan_core.training import METRICS_FILE, Cadence, best_logged, console_line


def _config(**fields):
  return ml_collections.ConfigDict(fields)


def test_cadences_count_steps_examples_or_kimg():
  steps = Cadence(_config(log_every_steps=10), "log")
  assert steps.crossed((9, 10), (0, 0)) and not steps.crossed((10, 11), (0, 0))
  kimg = Cadence(_config(log_every_steps=0, log_every_kimg=0.5), "log")
  assert (kimg.unit, kimg.interval) == ("examples", 500)
  assert kimg.crossed((0, 1), (480, 512)) and not kimg.crossed((0, 1), (512, 544))
  assert not Cadence(_config(eval_every_steps=0), "eval").crossed((0, 10**6), (0, 10**9))
  with pytest.raises(ConfigError, match="set only one of"):
    Cadence(_config(log_every_steps=1, log_every_examples=8), "log")


def test_console_line_is_short_and_has_a_bar_only_on_terminals():
  scalars = {"kimg": 12.34, "progress": 0.5, "d_loss": 1.25, "g_loss": -0.5, "d_margin": 2.0,
             "sec_per_iteration": 0.125, "images_per_sec": 512.0, "eta_hours": 1.5,
             "host_peak_gb": 2.0, "layer_grad_norm/G/block0": 3.0}
  line = console_line(7, scalars)
  assert line == ("step 7 | kimg 12.3 | d_loss 1.25 | g_loss -0.5 | d_margin 2 | 0.125 s/it | "
                  "512 img/s | ETA 1.50 h | host 2.0 GB")
  assert console_line(7, scalars, bar=True).startswith("[##########..........]  50% | step 7")


def test_best_fid_of_a_workdir_survives_cut_lines(tmp_path):
  assert best_logged(str(tmp_path)) == float("inf")
  lines = [json.dumps({"step": 2, "fid": 30.5}), json.dumps({"step": 4, "fid": 12.25}),
           json.dumps({"step": 6, "fid": "nan"}), '{"step": 8, "fi']
  (tmp_path / METRICS_FILE).write_text("\n".join(lines))
  assert best_logged(str(tmp_path)) == 12.25
