"""Command lines: dry run, config errors, sampling."""
import hashlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from biggan_jax.train import train_and_evaluate
from conftest import REPO, tiny_config


def run(*args, timeout=600):
  result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
  return result.returncode, result.stdout, result.stderr


def test_dry_run_prints_counts_without_data(tmp_path):
  code, out, err = run("biggan_jax.main", "--config=configs/imagenet256.py", "--dry_run",
                       f"--workdir={tmp_path}")
  assert code == 0, err[-2000:]
  assert "G parameters: 82097604" in out.splitlines()
  assert "D parameters: 99225890" in out.splitlines()
  assert "checkpoint step: none" in out
  assert "dataset: imagenet2012" in out  # the resolved config is printed


def test_unknown_config_field_is_an_error_naming_it():
  code, out, err = run("biggan_jax.main", "--config=configs/imagenet128.py",
                       "--config.model.chanels=3", "--dry_run")
  assert code == 2
  assert "chanels" in err and "config" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("trained")
  config = tiny_config()
  config.num_train_steps = 2
  train_and_evaluate(config, str(workdir))
  return workdir


def test_sample_cli_is_reproducible_and_writes_labels(trained_workdir, tmp_path):
  outputs = []
  for name in ("a", "b"):
    out = tmp_path / f"{name}.npz"
    code, stdout, err = run("biggan_jax.sample", f"--workdir={trained_workdir}", f"--out={out}",
                            "--num_samples=5", "--seed=7", "--labels=3,3,7", "--truncation=1.0",
                            "--grid")
    assert code == 0, err[-2000:]
    outputs.append(out)
  digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
  assert digest(outputs[0]) == digest(outputs[1])
  assert digest(outputs[0].with_suffix(".png")) == digest(outputs[1].with_suffix(".png"))
  data = np.load(outputs[0])
  assert data["images"].dtype == np.uint8 and data["images"].shape == (5, 32, 32, 3)
  assert data["labels"].dtype == np.int32 and list(data["labels"]) == [3, 3, 7, 3, 3]
  code, _, err = run("biggan_jax.sample", f"--workdir={trained_workdir}",
                     f"--out={tmp_path / 'c.npz'}", "--num_samples=5", "--seed=8")
  assert code == 0 and digest(tmp_path / "c.npz") != digest(outputs[0])


def test_sample_cli_sheets_interpolations_and_errors(trained_workdir, tmp_path):
  code, _, err = run("biggan_jax.sample", f"--workdir={trained_workdir}",
                     f"--out={tmp_path / 'sheet.npz'}", "--class_sheet", "--num_samples=2")
  assert code == 0, err[-2000:]
  sheet = np.load(tmp_path / "sheet.npz")
  assert list(sheet["labels"]) == [c for c in range(10) for _ in range(2)]
  code, _, err = run("biggan_jax.sample", f"--workdir={trained_workdir}",
                     f"--out={tmp_path / 'interp.png'}", "--interpolate=4", "--num_samples=2",
                     "--standing_stats=2")
  assert code == 0, err[-2000:]
  assert (tmp_path / "interp.png").stat().st_size > 0
  code, _, err = run("biggan_jax.sample", f"--workdir={trained_workdir}",
                     f"--out={tmp_path / 'x.npz'}", "--labels=12")
  assert code != 0 and "outside [0, 10)" in err
  code, _, err = run("biggan_jax.sample", f"--workdir={tmp_path / 'nothing'}",
                     f"--out={tmp_path / 'x.npz'}")
  assert code != 0 and "no checkpoints" in err


def test_sample_cli_renders_given_latents(trained_workdir, tmp_path):
  """A sampling .npz holds z and labels; rendering them with --latents gives the same images.
  Bad latents files are one clear error."""
  code, _, err = run("biggan_jax.sample", f"--workdir={trained_workdir}",
                     f"--out={tmp_path / 'first.npz'}", "--num_samples=5", "--seed=4",
                     "--truncation=0.5")
  assert code == 0, err[-2000:]
  first = np.load(tmp_path / "first.npz")
  assert first["z"].shape == (5, 16) and np.abs(first["z"]).max() <= 0.5
  np.savez(tmp_path / "latents.npz", z=first["z"], y=first["labels"])
  code, stdout, err = run("biggan_jax.sample", f"--workdir={trained_workdir}",
                          f"--out={tmp_path / 'again.npz'}", f"--latents={tmp_path / 'latents.npz'}",
                          "--batch_size=2")
  assert code == 0, err[-2000:]
  assert "wrote 5 samples" in stdout
  again = np.load(tmp_path / "again.npz")
  np.testing.assert_array_equal(again["images"], first["images"])
  np.testing.assert_array_equal(again["labels"], first["labels"])
  np.savez(tmp_path / "narrow.npz", z=np.zeros((2, 3), np.float32), y=np.zeros(2, np.int32))
  np.savez(tmp_path / "no_y.npz", z=np.zeros((2, 16), np.float32))
  for name, expected in (("narrow.npz", "needs (N, 16)"), ("no_y.npz", "add 'y'")):
    code, _, err = run("biggan_jax.sample", f"--workdir={trained_workdir}",
                       f"--out={tmp_path / 'x.npz'}", f"--latents={tmp_path / name}")
    assert code == 1 and expected in err and "Traceback" not in err, err[-2000:]
  # Truncation draws z; given z it applies only where G's statistics depend on it (TF-Hub).
  code, _, err = run("biggan_jax.sample", f"--workdir={trained_workdir}",
                     f"--out={tmp_path / 'x.npz'}", f"--latents={tmp_path / 'latents.npz'}",
                     "--truncation=0.5")
  assert code != 0 and "does not apply" in err, err[-2000:]


def test_sampling_restores_g_ema_alone_and_checks_the_model(trained_workdir):
  from biggan_jax.train import BigGANTask
  from gan_core import sampling
  from pggan_jax.train import PGGANTask
  generator = sampling.load(BigGANTask, str(trained_workdir))
  state = generator.state
  import jax
  assert all(leaf is Ellipsis for leaf in jax.tree.leaves(state.d_params))
  assert all(leaf is Ellipsis for leaf in jax.tree.leaves(state.g_opt_state))
  assert all(hasattr(leaf, "shape") for leaf in jax.tree.leaves(state.ema_params))
  assert all(hasattr(leaf, "shape") for leaf in jax.tree.leaves(state.ema_state))
  from gan_core.checkpointing import CheckpointError
  with pytest.raises(CheckpointError, match="holds a 'biggan' checkpoint"):
    sampling.load(PGGANTask, str(trained_workdir))


def test_sampling_a_checkpoint_from_before_later_config_fields(trained_workdir, tmp_path):
  """A checkpoint whose saved config predates fields added since (augment, diversity_reg)
  samples with their defaults, the behaviour it was trained with; one trained with
  diversity_reg samples too."""
  import json
  import shutil
  from biggan_jax.train import BigGANTask
  from gan_core import sampling
  old = tmp_path / "old"
  shutil.copytree(trained_workdir, old)
  metas = list(old.glob("checkpoints/*/meta/metadata"))
  assert metas
  for path in metas:
    meta = json.loads(path.read_text())
    for key in ("augment", "diversity_reg", "diversity_reg_max"):
      del meta["config"][key]
    path.write_text(json.dumps(meta))
  generator = sampling.load(BigGANTask, str(old))
  assert generator.task.config.diversity_reg == 0.0
  assert generator.task.config.augment.kind == "none"
  reference = sampling.load(BigGANTask, str(trained_workdir))
  for a, b in zip(jax.tree.leaves(generator.state.ema_params),
                  jax.tree.leaves(reference.state.ema_params)):
    np.testing.assert_array_equal(a, b)
  # A run trained with diversity_reg (pairs of samples per device) samples one at a time.
  for path in metas:
    meta = json.loads(path.read_text())
    meta["config"]["diversity_reg"] = 1.0
    path.write_text(json.dumps(meta))
  assert sampling.load(BigGANTask, str(old)).task.config.diversity_reg == 0.0


def test_evaluate_cli_writes_a_json_line(trained_workdir, fid_weights_path, tmp_path):
  import json
  args = (f"--workdir={trained_workdir}", "--num_samples=16", "--batch_size=8",
          f"--stats_dir={tmp_path / 'stats'}", "--metrics=fid,is,kid")
  code, stdout, err = run("biggan_jax.evaluate", *args, f"--inception_weights={fid_weights_path}")
  assert code == 0, err[-2000:]
  values = dict(line.split(": ") for line in stdout.splitlines())
  assert set(values) == {"fid", "is_mean", "is_std", "kid_mean", "kid_std"}
  [record] = [json.loads(l) for l in (trained_workdir / "evaluations.jsonl").read_text()
              .splitlines()]
  assert record["step"] == 2 and record["num_samples"] == 16
  assert record["fid"] == pytest.approx(float(values["fid"]), rel=1e-8)
  assert (tmp_path / "stats" / "digits-32px-16.npz").exists()
  code, _, err = run("biggan_jax.evaluate", *args, "--inception_weights=/nonexistent.pth")
  assert code == 1 and "Traceback" not in err and "/nonexistent.pth" in err, err[-2000:]


def test_a_run_leaves_its_config_samples_and_log(trained_workdir):
  import json
  config = json.loads((trained_workdir / "config.json").read_text())
  assert config["num_train_steps"] == 2 and config["model"]["ch"] == tiny_config().model.ch
  grids = sorted(p.name for p in (trained_workdir / "samples").iterdir())
  assert grids and grids[-1] == "00000002_kimg000000_32x32.png"
  records = [json.loads(l) for l in (trained_workdir / "train_log.jsonl").read_text().splitlines()]
  assert records and records[-1]["step"] == 2 and records[-1]["progress"] == 1.0
  assert {"kimg", "sec_per_iteration", "images_per_sec", "eta_hours", "host_peak_gb",
          "d_loss", "g_loss", "d_margin"} <= set(records[-1])
  assert not (trained_workdir / "run.lock").exists()
