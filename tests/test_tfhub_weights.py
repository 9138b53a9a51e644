"""TF-Hub BigGAN-deep generators in pytorch-pretrained-biggan's layout (tfhub_weights.py).

Without PyTorch: the per-truncation statistics against a hand computation, an import of a
state dict written from the package's module structure (every tensor placed, the command
lines for import and sampling with given latents and truncation), and the refusals (another
resolution or width, a malicious pickle, training, export, standing statistics, a truncation
outside (0, 1]). With the local CPU torch and the PyPI package `pytorch-pretrained-biggan`
(tests/install_reference_tools.sh; skipped otherwise): its own `BigGAN` module with random
weights, saved, imported and compared image for image at truncations between the stored
ones.
"""
import json
import math
import os
import pathlib
import pickle
import subprocess
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from biggan_jax import pytorch_weights as pw
from biggan_jax import tfhub_weights as tw
from biggan_jax.layers import truncation_statistics
from biggan_jax.train import BigGANTrainer
from gan_core import parallel
from gan_core.eval import torch_pickle
from conftest import REPO, load_config

CH, Z, CLASSES = 8, 20, 10
OVERRIDES = [f"--config.model.ch={CH}", f"--config.model.dim_z={Z}",
             f"--config.model.shared_dim={Z}", f"--config.model.num_classes={CLASSES}",
             "--config.batch_size=8", "--config.num_accumulations=1"]


def small_config(resolution=128):
  c = load_config(f"imagenet{resolution}_deep", "tfhub")
  c.model.ch, c.model.dim_z, c.model.shared_dim, c.model.num_classes = CH, Z, Z, CLASSES
  c.batch_size, c.num_accumulations = 8, 1
  return c


def their_config(resolution=128, ch=CH):
  """config.json as pytorch-pretrained-biggan writes it (BigGANConfig.to_json_string)."""
  layers = {128: [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8),
                  (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2),
                  (True, 2, 1)]}[resolution]
  return {"output_dim": resolution, "z_dim": Z, "class_embed_dim": Z, "channel_width": ch,
          "num_classes": CLASSES, "layers": [list(layer) for layer in layers],
          "attention_layer_position": 8, "eps": 1e-4, "n_stats": 51}


def their_tensors(theirs, seed=0):
  """A random state dict of the package's `BigGAN(config)`, entry for entry as its modules
  (model.py) register them; spectral_norm layers hold weight_orig, weight_u, weight_v."""
  rng = np.random.default_rng(seed)
  ch, z, n = theirs["channel_width"], theirs["z_dim"], theirs["n_stats"]
  cond = 2 * z
  t = {}
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)

  def sn(name, out, inp, k=None, bias=True):
    shape = (out, inp) if k is None else (out, inp, k, k)
    if bias:
      t[f"{name}.bias"] = normal(out)
    t[f"{name}.weight_orig"] = normal(*shape) * 0.3
    t[f"{name}.weight_u"] = normal(out)
    t[f"{name}.weight_v"] = normal(int(np.prod(shape[1:])))

  def stats(name, c):
    t[f"{name}.running_means"] = normal(n, c) * 0.2
    t[f"{name}.running_vars"] = rng.uniform(0.5, 2.0, size=(n, c)).astype(np.float32)

  t["embeddings.weight"] = normal(z, theirs["num_classes"])
  sn("generator.gen_z", 4 * 4 * 16 * ch, cond)
  index = 0
  for i, (_, a, b) in enumerate(theirs["layers"]):
    if i == theirs["attention_layer_position"]:
      c = a * ch
      prefix = f"generator.layers.{index}"
      t[f"{prefix}.gamma"] = np.array([0.7], np.float32)
      sn(f"{prefix}.snconv1x1_theta", c // 8, c, 1, bias=False)
      sn(f"{prefix}.snconv1x1_phi", c // 8, c, 1, bias=False)
      sn(f"{prefix}.snconv1x1_g", c // 2, c, 1, bias=False)
      sn(f"{prefix}.snconv1x1_o_conv", c, c // 2, 1, bias=False)
      index += 1
    prefix, c_in, c_out = f"generator.layers.{index}", a * ch, b * ch
    mid = c_in // 4
    for k, (width, conv_out, conv_in, size) in enumerate(
        [(c_in, mid, c_in, 1), (mid, mid, mid, 3), (mid, mid, mid, 3), (mid, c_out, mid, 1)]):
      stats(f"{prefix}.bn_{k}", width)
      sn(f"{prefix}.bn_{k}.scale", width, cond, bias=False)
      sn(f"{prefix}.bn_{k}.offset", width, cond, bias=False)
      sn(f"{prefix}.conv_{k}", conv_out, conv_in, size)
    index += 1
  stats("generator.bn", ch)
  t["generator.bn.weight"] = 1 + normal(ch) * 0.2
  t["generator.bn.bias"] = normal(ch) * 0.2
  sn("generator.conv_to_rgb", ch, ch, 3)
  return t


def write_module(folder, theirs, tensors, download_names=False):
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  prefix = f"biggan-deep-{theirs['output_dim']}-" if download_names else ""
  torch_pickle.save_state_dict(folder / f"{prefix}pytorch_model.bin", tensors)
  (folder / f"{prefix}config.json").write_text(json.dumps(theirs, indent=2))
  return folder


def _imported(config, source):
  trainer = BigGANTrainer(config, CLASSES, parallel.make_mesh())
  shapes = trainer.state_shapes
  variables = tw.variables_from_tfhub(
      torch_pickle.load_state_dict(next(source.glob("*pytorch_model.bin"))), config.model,
      {"params": shapes.g_params, **shapes.g_state}, "pytorch_model.bin")
  params = variables.pop("params")
  return trainer, params, variables


def run(*args):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=900)


# ------------------------------------------------------------------ without torch
def test_truncation_statistics_as_the_module_picks_them():
  means = jnp.asarray(np.arange(51 * 2, dtype=np.float32).reshape(51, 2))
  variances = means + 100
  for t, expected in ((1.0, means[50]), (0.5, means[25]), (0.02, means[1])):
    np.testing.assert_array_equal(truncation_statistics(means, variances, t)[0], expected)
  # Between stored values: coef, i = modf(t * 50), row i weighted by coef (sic).
  coef, i = math.modf(0.373 / (1 / 50))
  assert int(i) == 18 and abs(coef - 0.65) < 1e-9
  mean, var = truncation_statistics(means, variances, 0.373)
  np.testing.assert_allclose(mean, means[18] * coef + means[19] * (1 - coef), rtol=1e-6)
  np.testing.assert_allclose(var, variances[18] * coef + variances[19] * (1 - coef), rtol=1e-6)
  assert not np.allclose(mean, means[18] * (1 - coef) + means[19] * coef)
  for bad in (0.0, 1.5, None):
    with pytest.raises(ValueError):
      truncation_statistics(means, variances, bad)


def test_import_places_every_tensor(tmp_path):
  """Each mapping rule on real values: the embedding, gen_z's reordered inputs and outputs,
  torch's eval sigma, the kept RGB filters, the stored statistics, gamma."""
  config = small_config()
  theirs = their_config()
  tensors = their_tensors(theirs)
  source = write_module(tmp_path / "module", theirs, tensors)
  _, params, state = _imported(config, source)
  np.testing.assert_array_equal(params["shared"]["embedding"], tensors["embeddings.weight"].T)
  w, u, v = (tensors[f"generator.gen_z.{k}"] for k in ("weight_orig", "weight_u", "weight_v"))
  sigma = float(np.float64(u) @ (np.float64(w) @ np.float64(v)))
  np.testing.assert_allclose(state["spectral"]["linear"]["sigma"], sigma, rtol=1e-6)
  # Our input j: the embedding (their inputs Z..2Z) then z (their 0..Z); our output
  # c*16 + cell is their cell*C + c.
  c0 = 16 * CH
  kernel = np.asarray(params["linear"]["kernel"])
  assert kernel[0, 5 * 16 + 3] == w[3 * c0 + 5, Z]
  assert kernel[Z + 2, 7 * 16 + 15] == w[15 * c0 + 7, 2]
  rgb = tensors["generator.conv_to_rgb.weight_orig"]
  np.testing.assert_array_equal(params["output_conv"]["kernel"],
                                rgb[:3].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["output_conv"]["bias"],
                                tensors["generator.conv_to_rgb.bias"][:3])
  ru, rv = tensors["generator.conv_to_rgb.weight_u"], tensors["generator.conv_to_rgb.weight_v"]
  np.testing.assert_allclose(state["spectral"]["output_conv"]["sigma"],
                             float(np.float64(ru) @ (np.float64(rgb.reshape(CH, -1)) @ rv)),
                             rtol=1e-6)
  np.testing.assert_array_equal(state["batch_stats"]["block4_1"]["bn3"]["stats"]["var"],
                                tensors["generator.layers.10.bn_2.running_vars"])
  np.testing.assert_array_equal(state["batch_stats"]["block3_1"]["bn1"]["stats"]["mean"],
                                tensors["generator.layers.7.bn_0.running_means"])
  assert float(params["attention3"]["gamma"]) == pytest.approx(0.7)


@pytest.mark.slow  # About 2 minutes of subprocesses; the mapping and parity tests run by default.
def test_import_and_sample_command_lines(tmp_path):
  """Download-named files through the CLIs; sampling given latents at a truncation between
  stored values gives our model's images; the sampler's own latents follow the module."""
  theirs = their_config()
  source = write_module(tmp_path / "module", theirs, their_tensors(theirs), download_names=True)
  workdir = tmp_path / "run"
  result = run("biggan_jax.import_weights", "--from=tfhub_biggan_deep",
               f"--weights_dir={source}", "--config=configs/imagenet128_deep.py:tfhub",
               *OVERRIDES, f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "as step 0" in result.stdout
  provenance = json.loads((workdir / "imported.json").read_text())
  assert provenance["format"] == "tfhub_biggan_deep"
  assert set(provenance["sha256"]) == {"biggan-deep-128-pytorch_model.bin",
                                       "biggan-deep-128-config.json"}
  z = (0.373 * np.clip(np.random.default_rng(1).normal(size=(3, Z)), -2, 2)).astype(np.float32)
  np.savez(tmp_path / "latents.npz", z=z, y=np.array([0, 4, 9], np.int32))
  result = run("biggan_jax.sample", f"--workdir={workdir}", "--truncation=0.373",
               f"--latents={tmp_path / 'latents.npz'}", f"--out={tmp_path / 's.npz'}")
  assert result.returncode == 0, result.stderr[-3000:]
  images = np.load(tmp_path / "s.npz")["images"]
  trainer, params, state = _imported(small_config(), source)
  expected = trainer.generate(params, state, jnp.asarray(z), jnp.array([0, 4, 9]),
                              truncation=0.373)
  np.testing.assert_array_equal(images, np.asarray(expected))
  other = trainer.generate(params, state, jnp.asarray(z), jnp.array([0, 4, 9]), truncation=0.4)
  assert not np.array_equal(images, np.asarray(other))  # The statistics follow truncation.
  # Without --latents: z = T * TruncNormal(-2, 2).
  result = run("biggan_jax.sample", f"--workdir={workdir}", "--truncation=0.25",
               "--num_samples=4", f"--out={tmp_path / 'r.npz'}")
  assert result.returncode == 0, result.stderr[-3000:]
  drawn = np.load(tmp_path / "r.npz")["z"]
  assert np.abs(drawn).max() <= 0.5 + 1e-6 and np.abs(drawn).max() > 0.3


def test_truncation_outside_zero_one_is_refused():
  from biggan_jax.train import check_tfhub_truncation
  from gan_core.errors import ConfigError
  assert check_tfhub_truncation(None) == 1.0 and check_tfhub_truncation(0.4) == 0.4
  for bad in (1.5, -0.3):
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
      check_tfhub_truncation(bad)


@pytest.mark.slow  # ~100 s: an import, then three refusals.
def test_training_export_and_standing_stats_are_refused(tmp_path):
  """An imported TF-Hub module does not train and has no BigGAN-PyTorch form."""
  from biggan_jax.pytorch_checkpoint import export_biggan_pytorch
  from biggan_jax.train import train_and_evaluate
  from gan_core.checkpointing import CheckpointError
  from gan_core.errors import ConfigError
  config = small_config()
  theirs = their_config()
  source = write_module(tmp_path / "module", theirs, their_tensors(theirs))
  tw.import_tfhub_biggan_deep(str(source), config, str(tmp_path / "run"))
  trainer, params, state = _imported(config, source)
  with pytest.raises(ConfigError, match="per truncation"):
    trainer.standing_stats(params, state, jax.random.PRNGKey(0), 1, 8)
  config.dataset = "digits"
  with pytest.raises(ConfigError, match="does not train"):
    train_and_evaluate(config, str(tmp_path / "run"))
  with pytest.raises(CheckpointError, match="TF-Hub"):
    export_biggan_pytorch(str(tmp_path / "run"), str(tmp_path / "x"))
  assert not (tmp_path / "x").exists()


def test_another_resolution_or_width_is_refused(tmp_path):
  config = small_config()
  theirs = their_config()
  # config.json for another module than the config.
  other = dict(theirs, output_dim=256, channel_width=16)
  source = write_module(tmp_path / "a", other, their_tensors(theirs))
  with pytest.raises(pw.WeightImportError, match=r"output_dim: theirs 256, ours 128"):
    tw.import_tfhub_biggan_deep(str(source), config, str(tmp_path / "run"))
  # Tensors of another width than their config.json says.
  source = write_module(tmp_path / "b", theirs, their_tensors(their_config(ch=16)))
  with pytest.raises(pw.WeightImportError) as error:
    tw.import_tfhub_biggan_deep(str(source), config, str(tmp_path / "run"))
  first = str(error.value).split("\n")[1].strip()
  assert first.startswith("generator.gen_z.weight_orig: file (4096, 40), config expects "
                          "(2048, 40)"), str(error.value)
  # A model setting the import cannot honour.
  wrong = small_config()
  wrong.model.sn_eval = "power_iteration"
  with pytest.raises(pw.WeightImportError, match="sn_eval"):
    tw.import_tfhub_biggan_deep(str(tmp_path / "a"), wrong, str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()


class _Boom:
  def __reduce__(self):
    return (os.system, ("touch pwned",))


def test_a_malicious_pickle_is_refused_and_not_run(tmp_path):
  theirs = their_config()
  source = write_module(tmp_path / "module", theirs, {})
  with zipfile.ZipFile(source / "pytorch_model.bin", "w") as archive:
    archive.writestr("archive/data.pkl", pickle.dumps({"embeddings.weight": _Boom()},
                                                      protocol=2))
  with pytest.raises(pw.WeightImportError, match="refused"):
    tw.import_tfhub_biggan_deep(str(source), small_config(), str(tmp_path / "run"))
  assert not (REPO / "pwned").exists() and not pathlib.Path("pwned").exists()
  assert not (tmp_path / "run" / "checkpoints").exists()


# ------------------------------------------------------------------ the package itself
def _package():
  torch = pytest.importorskip("torch")
  if "boto3" not in sys.modules:  # Imported at the top of its file_utils, used to download.
    try:
      import boto3  # noqa: F401
    except ImportError:
      sys.modules["boto3"] = types.ModuleType("boto3")
      botocore = types.ModuleType("botocore")
      botocore.exceptions = types.ModuleType("botocore.exceptions")
      botocore.exceptions.ClientError = type("ClientError", (Exception,), {})
      sys.modules["botocore"] = botocore
      sys.modules["botocore.exceptions"] = botocore.exceptions
  package = pytest.importorskip("pytorch_pretrained_biggan")
  return torch, package


def test_tfhub_generator_matches_pytorch_pretrained_biggan(tmp_path):
  torch, package = _package()
  from pytorch_pretrained_biggan.utils import truncated_noise_sample
  theirs = their_config()
  torch.manual_seed(0)
  module = package.BigGAN(package.BigGANConfig.from_dict(theirs))
  # Random everything: weights far from orthogonal, non-trivial statistics per truncation,
  # gamma and output BN affine. u and v are one power iteration from a random start, made
  # for the weight before a perturbation: what eval divides by is not the weight's top
  # singular value, nor what a fresh power iteration would give.
  with torch.no_grad():
    tensors = module.state_dict()
    for name, value in tensors.items():
      if name.endswith("running_vars"):
        value.copy_(torch.rand_like(value) * 1.5 + 0.5)
      elif name.endswith("running_means"):
        value.copy_(torch.randn_like(value) * 0.3)
      elif name.endswith("gamma"):
        value.fill_(0.7)
      elif not name.endswith(("weight_u", "weight_v")):
        value.copy_(torch.randn_like(value) * (0.3 if name.endswith("weight_orig") else 0.5))
    for name, value in tensors.items():
      if name.endswith("weight_orig"):
        prefix = name[:-len("weight_orig")]
        matrix = value.reshape(value.shape[0], -1)
        v = torch.nn.functional.normalize(matrix.t() @ torch.randn(matrix.shape[0]), dim=0)
        tensors[prefix + "weight_v"].copy_(v)
        tensors[prefix + "weight_u"].copy_(torch.nn.functional.normalize(matrix @ v, dim=0))
        value.add_(torch.randn_like(value) * 0.03)
  module.eval()
  source = tmp_path / "module"
  source.mkdir()
  torch.save(module.state_dict(), source / "pytorch_model.bin")
  (source / "config.json").write_text(module.config.to_json_string())
  config = small_config()
  # The package's own files pass the importer's checks (the whole import, checkpoint
  # included, is tested above on files written without torch) ...
  _, config_file = tw.find_files(str(source))
  assert tw.config_differences(tw.read_config(config_file), config) == []
  # ... and its torch.save pickle is read into our generator.
  trainer, params, state = _imported(config, source)
  labels = [0, 3, 9, 5]
  for truncation in (1.0, 0.5, 0.373, 0.061):
    z = truncated_noise_sample(batch_size=len(labels), dim_z=Z, truncation=truncation, seed=1)
    one_hot = torch.nn.functional.one_hot(torch.tensor(labels), CLASSES).float()
    with torch.no_grad():
      expected = module(torch.from_numpy(z), one_hot, truncation)
    expected = expected.numpy().transpose(0, 2, 3, 1)
    ours = trainer.models.generator.apply({"params": params, **state}, jnp.asarray(z),
                                          jnp.asarray(labels), train=False,
                                          truncation=truncation)
    error = np.linalg.norm(np.asarray(ours) - expected) / np.linalg.norm(expected)
    print(f"truncation {truncation}: relative L2 {error:.2e}")
    assert error < 1e-5, (truncation, error)


# The layers of the package's BigGAN256 / BigGAN512 configs (convert_tf_to_pytorch.py), which
# its released config.json files state: up-sampling, in and out multipliers per GenBlock.
_PACKAGE_LAYERS = {
    256: [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8),
          (True, 8, 8), (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2),
          (False, 2, 2), (True, 2, 1)],
    512: [(False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8),
          (True, 8, 8), (False, 8, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2),
          (False, 2, 2), (True, 2, 1), (False, 1, 1), (True, 1, 1)],
}


@pytest.mark.parametrize("resolution", [128, 256, 512])
def test_tfhub_presets_state_the_modules_configs(resolution):
  """Each `:tfhub` preset is the module's config (ch 128, z 128, 1000 classes, eps 1e-4,
  51 statistics, attention before GenBlock 8)."""
  layers = _PACKAGE_LAYERS.get(resolution, [tuple(x) for x in their_config()["layers"]])
  theirs = {"output_dim": resolution, "z_dim": 128, "class_embed_dim": 128,
            "channel_width": 128, "num_classes": 1000, "layers": layers,
            "attention_layer_position": 8, "eps": 1e-4, "n_stats": 51}
  config = load_config(f"imagenet{resolution}_deep", "tfhub")
  assert tw.config_differences(theirs, config) == []
  assert tw.config_differences(dict(theirs, n_stats=11), config) == [
      "n_stats: theirs 11, ours 51"]
