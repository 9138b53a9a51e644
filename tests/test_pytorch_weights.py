"""BigGAN-PyTorch checkpoints in and out (biggan_jax/pytorch_weights.py, pytorch_checkpoint.py).

Without PyTorch: the layout against BigGAN-PyTorch's measured state-dict listings, import
-> export round trips, import -> train -> export -> import, refusals. With the local CPU
torch and `../shared/reference/biggan_pytorch/src` (skipped otherwise): the reference
models themselves, with perturbed weights, saved by its own `utils.save_weights`, imported
and compared (G-EMA eval images, D logits, one Adam step), and our export loaded back with
`load_state_dict(strict=True)`.
"""
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from biggan_jax import pytorch_checkpoint as pc
from biggan_jax import pytorch_weights as pw
from biggan_jax.config import base_config
from biggan_jax.train import BigGANTask, BigGANTrainer
from gan_core import checkpointing, parallel, training
from gan_core.eval import torch_pickle
from conftest import REPO, load_config, tiny_config

LAYOUTS = pathlib.Path(__file__).parent / "data" / "biggan_pytorch_layout"
REFERENCE_SRC = REPO.parent / "shared" / "reference" / "biggan_pytorch" / "src"


def _templates(config):
  trainer = BigGANTrainer(config, config.model.num_classes, parallel.make_mesh())
  s = trainer.state_shapes
  return trainer, {"params": s.g_params, **s.g_state}, {"params": s.d_params, **s.d_state}


@pytest.mark.parametrize("name,config_name", [("biggan128_ch96", "imagenet128"),
                                              ("biggan_deep128_ch128", "imagenet128_deep")])
def test_layout_is_biggan_pytorchs_state_dict_in_order(name, config_name):
  """Every entry of the reference G and D state dicts, in order, with its shape."""
  config = load_config(config_name)
  _, g_template, d_template = _templates(config)
  for which, layout, template in (("G", pw.generator_layout(config.model), g_template),
                                  ("D", pw.discriminator_layout(config.model), d_template)):
    ours = [f"{e.torch_name} "
            f"{pw.torch_shape(e.kind, tuple(pw._get(template, (e.collection,) + e.path).shape))}"
            " float32" for e in layout]
    reference = (LAYOUTS / f"{name}_{which}.txt").read_text().split("\n")
    assert ours == [line for line in reference if line.strip()]


# ------------------------------------------------------------------ synthetic torch files
def _random_run(config, folder, itr=7, seed=0, ema=True):
  """BigGAN-PyTorch-format files with random values for `config`, written without torch."""
  rng = np.random.default_rng(seed)
  _, g_template, d_template = _templates(config)
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)

  def module(layout, template):
    return {e.torch_name: rng.normal(size=pw.torch_shape(e.kind, tuple(
        pw._get(template, (e.collection,) + e.path).shape))).astype(np.float32) for e in layout}

  def adam(layout, tensors, step, lr):
    params = [e for e in layout if e.is_parameter]
    return {"state": {i: {"step": np.asarray(float(step), np.float32),
                          "exp_avg": rng.normal(size=tensors[e.torch_name].shape).astype(np.float32),
                          "exp_avg_sq": rng.uniform(size=tensors[e.torch_name].shape
                                                    ).astype(np.float32)}
                      for i, e in enumerate(params)},
            "param_groups": [{"lr": lr, "betas": (config.adam_b1, config.adam_b2),
                              "eps": config.adam_eps, "weight_decay": 0, "amsgrad": False,
                              "params": list(range(len(params)))}]}

  g_layout, d_layout = pw.generator_layout(config.model), pw.discriminator_layout(config.model)
  g, d = module(g_layout, g_template), module(d_layout, d_template)
  torch_pickle.save_state_dict(folder / "G.pth", g)
  torch_pickle.save_state_dict(folder / "D.pth", d)
  if ema:
    torch_pickle.save_state_dict(folder / "G_ema.pth", module(g_layout, g_template))
  torch_pickle.save(folder / "G_optim.pth", adam(g_layout, g, itr, config.g_lr))
  torch_pickle.save(folder / "D_optim.pth", adam(d_layout, d, itr * config.num_d_steps, config.d_lr))
  torch_pickle.save(folder / "state_dict.pth", {
      "itr": itr, "epoch": 1, "save_num": 0, "save_best_num": 0, "best_IS": 0.0,
      "best_FID": 999999, "config": pc.reference_config(config)})
  return folder


def _restore(workdir, config, step=None):
  task = BigGANTask(config)
  task.build(config.model.num_classes, parallel.make_mesh())
  checkpoints = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir))
  try:
    step = checkpoints.latest_step() if step is None else step
    return jax.device_get(checkpoints.restore_state(step, task.abstract_state())), step
  finally:
    checkpoints.close()


def _assert_same_files(a, b):
  for name in pc.FILES:
    x, y = torch_pickle.load(pathlib.Path(a) / f"{name}.pth"), \
        torch_pickle.load(pathlib.Path(b) / f"{name}.pth")
    if name == "state_dict":
      assert x["itr"] == y["itr"]
      continue
    if name.endswith("optim"):
      assert sorted(x["state"]) == sorted(y["state"])
      for k in x["state"]:
        for field in ("exp_avg", "exp_avg_sq"):
          np.testing.assert_array_equal(x["state"][k][field], y["state"][k][field])
        assert float(x["state"][k]["step"]) == float(y["state"][k]["step"])
      continue
    assert list(x) == list(y), name
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name} {key}")


def test_import_then_export_gives_back_the_same_files(tmp_path):
  config = tiny_config()
  source = _random_run(config, tmp_path / "torch")
  result = pc.import_biggan_pytorch(str(source), config, str(tmp_path / "run"))
  assert result.step == 7 and not result.recipe_differences
  state, step = _restore(tmp_path / "run", config)
  assert step == 7 and int(state.step) == 7
  assert int(state.g_opt_state[0].count) == 7
  assert int(state.d_opt_state[0].count) == 7 * config.num_d_steps
  g = torch_pickle.load_state_dict(source / "G.pth")
  np.testing.assert_array_equal(state.g_params["linear"]["kernel"], g["linear.weight"].T)
  np.testing.assert_array_equal(state.g_state["spectral"]["linear"]["u"], g["linear.u0"][0])
  np.testing.assert_array_equal(state.g_params["block0"]["conv1"]["kernel"],
                                g["blocks.0.0.conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(state.g_state["batch_stats"]["block1"]["bn2"]["stats"]["var"],
                                g["blocks.1.0.bn2.stored_var"])
  pc.export_biggan_pytorch(str(tmp_path / "run"), str(tmp_path / "back"))
  _assert_same_files(source, tmp_path / "back")
  provenance = (tmp_path / "run" / pc.PROVENANCE_FILE).read_text()
  assert '"itr": 7' in provenance and "sha256" in provenance


def test_import_train_export_import_gives_the_same_state(tmp_path):
  """An imported run continues training with the loop; its export imports to the same state."""
  config = tiny_config()
  config.num_train_steps = 9  # Two iterations after the imported itr 7.
  config.checkpoint_every_steps = 100
  config.eval_every_steps = 0
  pc.import_biggan_pytorch(str(_random_run(config, tmp_path / "torch")), config,
                           str(tmp_path / "run"))
  imported, _ = _restore(tmp_path / "run", config, 7)
  training.train(BigGANTask(config), config, str(tmp_path / "run"))
  trained, step = _restore(tmp_path / "run", config)
  assert step == 9 and int(trained.g_opt_state[0].count) == 9
  # Every kernel moved (biases of convolutions followed by a BN get no gradient).
  moved = jax.tree_util.tree_map_with_path(
      lambda path, a, b: not np.array_equal(a, b) or path[-1].key != "kernel",
      imported.g_params, trained.g_params)
  assert all(jax.tree.leaves(moved))
  pc.export_biggan_pytorch(str(tmp_path / "run"), str(tmp_path / "exported"))
  pc.import_biggan_pytorch(str(tmp_path / "exported"), config, str(tmp_path / "again"))
  again, step = _restore(tmp_path / "again", config)
  assert step == 9
  jax.tree.map(np.testing.assert_array_equal, again, trained)


def test_wrong_width_or_resolution_is_refused_naming_tensors(tmp_path):
  config = tiny_config()
  source = _random_run(config, tmp_path / "torch")
  wide = tiny_config()
  wide.model.ch = 8
  with pytest.raises(pw.WeightImportError) as error:
    pc.import_biggan_pytorch(str(source), wide, str(tmp_path / "wide"))
  message = str(error.value)
  assert "G_ch: theirs 4, ours 8" in message  # Their state_dict's config says so first.
  os.remove(source / "state_dict.pth")
  (source / "G_ema.pth").rename(source / "G_ema_keep.pth")
  with pytest.raises(pw.WeightImportError, match="missing .*state_dict.pth"):
    pc.import_biggan_pytorch(str(source), wide, str(tmp_path / "wide"))
  (source / "G_ema_keep.pth").rename(source / "G_ema.pth")
  with pytest.raises(pw.WeightImportError) as error:
    pc.import_biggan_pytorch(str(source), wide, str(tmp_path / "wide"), ema_only=True)
  message = str(error.value)
  assert "linear.weight: file (256, 4), config expects (512, 4)" in message
  assert "--config.model" in message
  low = tiny_config()
  low.model.resolution, low.model.dim_z = 64, 20
  low.model.g_attention = low.model.d_attention = ()
  with pytest.raises(pw.WeightImportError) as error:
    pc.import_biggan_pytorch(str(source), low, str(tmp_path / "low"), ema_only=True)
  message = str(error.value)
  assert "linear.weight: file (256, 4), config expects (1024, 4)" in message
  # Missing: the fourth G block (28 entries); unexpected: the attention of the file (13).
  assert "28 missing, 13 unexpected" in message
  for name in ("wide", "low"):
    assert not (tmp_path / name / "checkpoints").exists()


class _Boom:
  def __reduce__(self):
    return (os.system, ("touch pwned",))


def test_a_malicious_pickle_is_refused_and_not_run(tmp_path):
  config = tiny_config()
  source = _random_run(config, tmp_path / "torch")
  with zipfile.ZipFile(source / "G.pth", "w") as archive:
    archive.writestr("G/data.pkl", pickle.dumps({"linear.weight": _Boom()}, protocol=2))
  with pytest.raises(pw.WeightImportError, match="refused"):
    pc.import_biggan_pytorch(str(source), config, str(tmp_path / "run"))
  assert not (REPO / "pwned").exists() and not pathlib.Path("pwned").exists()
  assert not (tmp_path / "run" / "checkpoints").exists()


def test_ema_only_import_then_sample_given_latents_cli(tmp_path):
  """A lone G_ema.pth through the command lines: import, then render given latents."""
  config = tiny_config()
  source = _random_run(config, tmp_path / "torch")
  for name in ("G", "D", "G_optim", "D_optim", "state_dict"):
    os.remove(source / f"{name}.pth")
  overrides = ["--config.model.ch=4", "--config.model.dim_z=16", "--config.model.shared_dim=8",
               "--config.model.g_attention=(16,)", "--config.model.d_attention=(16,)",
               "--config.batch_size=8"]
  run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=REPO,
                                     capture_output=True, text=True, timeout=600)
  result = run("biggan_jax.import_weights", "--from=biggan_pytorch",
               f"--weights_dir={source}", "--config=configs/digits32.py", *overrides,
               f"--workdir={tmp_path / 'run'}", "--ema_only")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "as step 0" in result.stdout
  z = np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32)
  np.savez(tmp_path / "latents.npz", z=z, y=np.array([0, 4, 9], np.int32))
  result = run("biggan_jax.sample", f"--workdir={tmp_path / 'run'}",
               f"--latents={tmp_path / 'latents.npz'}", f"--out={tmp_path / 's.npz'}")
  assert result.returncode == 0, result.stderr[-3000:]
  images = np.load(tmp_path / "s.npz")["images"]
  # The same images as the G_ema weights give through our model directly.
  trainer, g_template, _ = _templates(config)
  ema = pw.variables_from_torch(pw.generator_layout(config.model),
                                torch_pickle.load_state_dict(source / "G_ema.pth"), g_template,
                                "G_ema.pth")
  params = ema.pop("params")
  expected = trainer.generate(params, ema, jnp.asarray(z), jnp.array([0, 4, 9]))
  np.testing.assert_array_equal(images, np.asarray(expected))
  result = run("biggan_jax.import_weights", f"--weights_dir={source}",
               "--config=configs/digits32.py", *overrides, f"--workdir={tmp_path / 'run'}",
               "--ema_only")
  assert result.returncode == 1 and "already holds checkpoints" in result.stderr


def test_numpy_scalars_in_a_state_dict_are_read(tmp_path):
  """BigGAN-PyTorch stores best_IS / best_FID as NumPy floats; they read as numbers."""
  path = tmp_path / "state_dict.pth"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("state_dict/data.pkl", pickle.dumps(
        {"itr": 3, "best_IS": np.float64(2.5), "best_FID": np.float32(30.0)}, protocol=2))
  assert torch_pickle.load(path) == {"itr": 3, "best_IS": 2.5, "best_FID": 30.0}


# ------------------------------------------------------------------ the reference itself
def _reference_modules():
  torch = pytest.importorskip("torch")
  if not REFERENCE_SRC.is_dir():
    pytest.skip(f"BigGAN-PyTorch's code is not at {REFERENCE_SRC}")
  import types

  class Stub(types.ModuleType):
    def __getattr__(self, name):
      return Stub(name)

  # utils.py imports these for data loading and run naming only (they are not in src/).
  stubs = ("torchvision", "torchvision.transforms", "torchvision.datasets", "h5py",
           "animal_hash", "datasets")
  saved = {name: sys.modules.get(name) for name in stubs + ("utils", "layers")}
  sys.modules.update({name: Stub(name) for name in stubs})
  sys.path.insert(0, str(REFERENCE_SRC))
  try:
    import BigGAN
    import BigGANdeep
    import utils
  finally:
    sys.path.remove(str(REFERENCE_SRC))
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module
  return torch, BigGAN, BigGANdeep, utils


def _reference_config(deep: bool):
  c = base_config()
  c.dataset = "digits"
  c.batch_size = 8
  m = c.model
  m.architecture = "biggan_deep" if deep else "biggan"
  m.resolution = 128
  m.ch = 8  # D's attention at 64x64 sees ch channels and projects them to ch // 8.
  m.dim_z = 8 if deep else 24
  m.shared_dim = 8
  m.num_classes = 5
  m.g_attention = m.d_attention = (64,)
  m.bn_eps = 1e-5 if deep else 1e-4  # 1e-4: its output BN still uses 1e-5.
  return c


def _perturb(torch, module, generator):
  """Weights far from orthogonal (so one power iteration is not exact), non-zero gammas,
  random SN vectors and BN statistics."""
  with torch.no_grad():
    for name, tensor in module.state_dict().items():
      if name.endswith((".u0",)):
        tensor.copy_(torch.randn(tensor.shape, generator=generator))
      elif name.endswith(".sv0"):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
      elif name.endswith("stored_mean"):
        tensor.copy_(0.2 * torch.randn(tensor.shape, generator=generator))
      elif name.endswith("stored_var"):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
      elif name.endswith("gamma"):
        tensor.fill_(0.7)
      else:
        tensor.add_(0.3 * torch.randn(tensor.shape, generator=generator))


def _adam_steps(torch, module, generator, steps):
  for _ in range(steps):
    module.optim.zero_grad()
    for p in module.parameters():
      p.grad = torch.randn(p.shape, generator=generator)
    module.optim.step()


def test_spectral_norm_step_is_biggan_pytorchs_power_iteration():
  """One training-mode SN step against BigGAN-PyTorch's own `power_iteration`: the new u, the
  singular value (stored and returned) and its gradient with respect to W, at float32
  rounding, for matrices far from orthogonal (one iteration does not converge)."""
  torch, BigGAN, _, _ = _reference_modules()
  import flax.linen as nn
  from biggan_jax import layers

  class SN(nn.Module):
    @nn.compact
    def __call__(self, w):
      return layers.spectral_normalize(self, w, 1e-6)

  rng = np.random.default_rng(0)
  for outputs, inputs in ((24, 72), (96, 20), (64, 576)):
    # Far from orthogonal, so that one power iteration is not already exact.
    w = (rng.normal(size=(outputs, inputs)) * np.linspace(0.5, 3, inputs)).astype(np.float32)
    u0 = rng.normal(size=outputs).astype(np.float32)
    weight = torch.tensor(w, requires_grad=True)
    u_theirs = [torch.tensor(u0[None])]
    svs, _, _ = BigGAN.layers.power_iteration(weight, u_theirs, update=True, eps=1e-6)
    svs[0].backward()
    variables = {"spectral": {"u": jnp.asarray(u0), "sigma": jnp.ones(())}}
    sigma, updated = SN().apply(variables, jnp.asarray(w), mutable=["spectral"])
    grad = jax.grad(lambda m: SN().apply(variables, m, mutable=["spectral"])[0])(jnp.asarray(w))
    np.testing.assert_allclose(updated["spectral"]["u"], u_theirs[0][0].numpy(), rtol=2e-6,
                               atol=2e-7)
    np.testing.assert_allclose(sigma, svs[0].item(), rtol=1e-6)
    np.testing.assert_allclose(updated["spectral"]["sigma"], svs[0].item(), rtol=1e-6)
    np.testing.assert_allclose(grad, weight.grad.numpy(), rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("deep", [False, True], ids=["biggan", "biggan_deep"])
def test_biggan_pytorch_checkpoint_imports_exactly(deep, tmp_path):
  torch, BigGAN, BigGANdeep, utils = _reference_modules()
  torch.manual_seed(0)
  generator = torch.Generator().manual_seed(0)
  config = _reference_config(deep)
  m = config.model
  family = BigGANdeep if deep else BigGAN
  kw = dict(resolution=m.resolution, n_classes=m.num_classes, dim_z=m.dim_z,
            shared_dim=m.shared_dim, hier=True, G_shared=True, G_attn="64", D_attn="64",
            BN_eps=m.bn_eps, SN_eps=m.sn_eps, G_lr=config.g_lr, D_lr=config.d_lr,
            G_B1=config.adam_b1, G_B2=config.adam_b2, D_B1=config.adam_b1,
            D_B2=config.adam_b2, adam_eps=config.adam_eps)
  if deep:
    kw.update(G_depth=2, D_depth=2)
  G = family.Generator(G_ch=m.ch, **kw)
  G_ema = family.Generator(G_ch=m.ch, skip_init=True, no_optim=True, **kw)
  D = family.Discriminator(D_ch=m.ch, **kw)
  for module in (G, G_ema, D):
    _perturb(torch, module, generator)
  _adam_steps(torch, G, generator, 3)
  _adam_steps(torch, D, generator, 3)
  theirs = dict(pc.reference_config(config), model="BigGANdeep" if deep else "BigGAN",
                num_D_steps=1)
  config.num_d_steps = 1
  state_dict = {"itr": 3, "epoch": 0, "save_num": 0, "save_best_num": 0, "best_IS": 0,
                "best_FID": 999999, "config": theirs}
  utils.save_weights(G, D, state_dict, str(tmp_path), "run", None, G_ema)
  pc.import_biggan_pytorch(str(tmp_path / "run"), config, str(tmp_path / "ours"))
  state, _ = _restore(tmp_path / "ours", config)
  trainer = BigGANTrainer(config, m.num_classes, parallel.make_mesh())

  # G-EMA in eval mode, and D.
  z = torch.randn(6, m.dim_z, generator=generator)
  y = torch.tensor([0, 1, 2, 3, 4, 2])
  G_ema.eval()
  D.eval()
  with torch.no_grad():
    reference_images = G_ema(z, G_ema.shared(y)).numpy().transpose(0, 2, 3, 1)
    x = torch.tanh(torch.randn(6, 3, m.resolution, m.resolution, generator=generator))
    reference_logits = D(x, y).numpy()[:, 0]
  images = trainer.models.generator.apply({"params": state.ema_params, **state.ema_state},
                                          jnp.asarray(z.numpy()), jnp.asarray(y.numpy()),
                                          train=False)
  logits = trainer.models.discriminator.apply({"params": state.d_params, **state.d_state},
                                              jnp.asarray(x.numpy().transpose(0, 2, 3, 1)),
                                              jnp.asarray(y.numpy()))
  rel = lambda a, b: np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)
  assert rel(images, reference_images) < 1e-5
  assert rel(logits, reference_logits) < 1e-5

  # One more Adam step on both sides, from the imported moments, with the same gradients.
  g_layout = pw.generator_layout(m)
  grads = [torch.randn(p.shape, generator=generator) for p in G.parameters()]
  ours = {}
  for entry, grad in zip(pw.parameter_entries(g_layout), grads):
    pw._set(ours, entry.path, jnp.asarray(pw.to_ours(entry.kind, grad.numpy())))
  updates, _ = trainer.g_tx.update(ours, state.g_opt_state, state.g_params)
  stepped = jax.tree.map(lambda p, u: p + u, state.g_params, updates)
  for p, grad in zip(G.parameters(), grads):
    p.grad = grad
  G.optim.step()
  expected = pw.variables_to_torch(g_layout, {"params": stepped, **state.g_state})
  for name, tensor in G.state_dict().items():
    if name in expected and not name.endswith(("u0", "sv0", "stored_mean", "stored_var")):
      np.testing.assert_allclose(expected[name], tensor.numpy(), rtol=1e-5, atol=1e-7,
                                 err_msg=name)

  # Export: their modules load our files strictly, and the tensors come back unchanged.
  pc.export_biggan_pytorch(str(tmp_path / "ours"), str(tmp_path / "exported"))
  saved = {name: torch.load(tmp_path / "run" / f"{name}.pth", weights_only=True)
           for name in ("G", "D", "G_ema", "G_optim", "D_optim")}
  fresh_G = family.Generator(G_ch=m.ch, **kw)
  fresh_D = family.Discriminator(D_ch=m.ch, **kw)
  fresh_ema = family.Generator(G_ch=m.ch, skip_init=True, no_optim=True, **kw)
  utils.load_weights(fresh_G, fresh_D, {"itr": 0}, str(tmp_path), "exported", None, fresh_ema,
                     strict=True)
  for name, module in (("G", fresh_G), ("D", fresh_D), ("G_ema", fresh_ema)):
    loaded = module.state_dict()
    assert list(loaded) == list(saved[name])
    for key, tensor in saved[name].items():
      assert torch.equal(loaded[key], tensor), f"{name} {key}"
  for name, module in (("G_optim", fresh_G), ("D_optim", fresh_D)):
    loaded = module.optim.state_dict()["state"]
    for index, per in saved[name]["state"].items():
      assert float(loaded[index]["step"]) == float(per["step"])
      assert torch.equal(loaded[index]["exp_avg"], per["exp_avg"])
      assert torch.equal(loaded[index]["exp_avg_sq"], per["exp_avg_sq"])


@pytest.mark.parametrize("config_name", ["imagenet128", "imagenet256", "imagenet512",
                                         "imagenet128_deep", "imagenet256_deep"])
def test_every_resolution_preset_has_the_reference_layout(config_name):
  """Names and shapes of the reference modules' state dicts, at each preset's settings
  (width 8). BigGAN-PyTorch has no 512 D, nor a 512 BigGAN-deep."""
  torch, BigGAN, BigGANdeep, _ = _reference_modules()
  config = load_config(config_name)
  m = config.model
  m.ch = 8
  deep = m.architecture == "biggan_deep"
  family = BigGANdeep if deep else BigGAN
  _, g_template, d_template = _templates(config)
  attn = lambda resolutions: "_".join(str(r) for r in resolutions) or "0"
  kw = dict(resolution=m.resolution, n_classes=m.num_classes, dim_z=m.dim_z,
            shared_dim=m.shared_dim, hier=True, G_attn=attn(m.g_attention),
            D_attn=attn(m.d_attention), skip_init=True, no_optim=True)
  if deep:
    kw.update(G_depth=m.depth, D_depth=m.depth)
  modules = [("G", family.Generator(G_ch=m.ch, **kw), pw.generator_layout(m), g_template)]
  if m.resolution in (32, 64, 128, 256):
    modules.append(("D", family.Discriminator(D_ch=m.ch, **kw), pw.discriminator_layout(m),
                    d_template))
  for which, module, layout, template in modules:
    reference = [(name, tuple(t.shape)) for name, t in module.state_dict().items()]
    ours = [(e.torch_name, pw.torch_shape(e.kind, tuple(
        pw._get(template, (e.collection,) + e.path).shape))) for e in layout]
    assert ours == reference, which
