"""Import the TF-Hub BigGAN-deep generators (biggan-deep-128/256/512) as checkpoints of ours.

The files are those of the PyPI package `pytorch-pretrained-biggan`, its PyTorch port of the
TF-Hub modules: `pytorch_model.bin` (the state dict of its `BigGAN` module) and
`config.json` (also accepted under their download names, `biggan-deep-128-pytorch_model.bin`
and `biggan-deep-128-config.json`). They are read with the restricted reader of
`gan_core.eval.torch_pickle` (tensors and plain data only; nothing in them is executed).

Their generator is BigGAN-deep with the evaluation details of the TF-Hub graph, which the
config variant `configs/imagenet*_deep.py:tfhub` (biggan_jax.config.tfhub_deep_model)
reproduces: BN eps 1e-4 everywhere, BN statistics stored for 51 truncation values,
torch `spectral_norm` (eval divides by u . W v of the stored u, v). The rest is a
relabelling, exact in float32 (theirs -> ours):

  embeddings.weight (z, classes), a bias-free linear map of a one-hot class vector
                            -> shared/embedding (classes, z): the same map, transposed
  generator.gen_z           -> linear. Their condition is concat(z, class embedding), ours
                               concat(class embedding, z): the input rows are reordered. They
                               view its output as a (4, 4, C) map, we as (C, 4, 4): the
                               outputs (and bias, u) are reordered.
  generator.layers.{i}      GenBlock i -> block{i // 2}_{i % 2}: conv_0..3 -> conv1..4,
                               bn_0..3 -> bn1..4 (scale -> gain, offset -> bias, their
                               conditions reordered like gen_z's; running_means/running_vars
                               (51, C) -> batch_stats stats/mean, var)
  generator.layers.{p}      SelfAttn (inserted before GenBlock p) -> attention{p // 2 - 1}:
                               snconv1x1_theta/phi/g/o_conv -> theta/phi/g/o, gamma (1,) -> ()
  generator.bn              -> output_bn (weight -> scale, bias, per-truncation statistics)
  generator.conv_to_rgb     -> output_conv: the module computes C channels and keeps the
                               first 3; we keep those 3 filters (and their biases), with the
                               sigma of all C.
  every SN layer            weight_orig -> kernel (conv OIHW -> HWIO, linear transposed),
                            sigma = weight_u . (weight_orig weight_v) -> spectral sigma,
                            weight_u -> spectral u.
"""
from __future__ import annotations

import glob
import json
import math
import os
from typing import Any, Mapping

import ml_collections
import numpy as np

from biggan_jax import pytorch_checkpoint as ptc
from biggan_jax import pytorch_weights as pw
from biggan_jax.models import BOTTOM_WIDTH, G_ARCH
from biggan_jax.train import BigGANTask
from gan_core import parallel

WEIGHTS_NAME, CONFIG_NAME = "pytorch_model.bin", "config.json"
_CONFIG_KEYS = ("output_dim", "z_dim", "class_embed_dim", "channel_width", "num_classes",
                "layers", "attention_layer_position", "eps", "n_stats")


# ----------------------------------------------------------------- their config vs ours
def expected_layers(model_config: Any) -> list[tuple[bool, int, int]]:
  """Their `config.layers` for our model: (upsamples, in, out channel multipliers) per
  GenBlock."""
  m = model_config
  in_mults, out_mults = G_ARCH[m.resolution]
  layers = []
  for in_mult, out_mult in zip(in_mults, out_mults):
    for sub in range(m.depth):
      last = sub == m.depth - 1
      layers.append((last, in_mult, out_mult if last else in_mult))
  return layers


def attention_position(model_config: Any) -> int | None:
  """Their `attention_layer_position`: the GenBlock index the attention precedes."""
  m = model_config
  resolutions = sorted(set(m.g_attention))
  if len(resolutions) != 1:
    return None
  stages = int(round(math.log2(resolutions[0] / BOTTOM_WIDTH)))
  return stages * m.depth


def reference_config(model_config: Any) -> dict[str, Any]:
  """Our config as their `config.json` would state it."""
  m = model_config
  return {"output_dim": m.resolution, "z_dim": m.dim_z, "channel_width": m.ch,
          "num_classes": m.num_classes, "layers": expected_layers(m),
          "attention_layer_position": attention_position(m), "eps": m.bn_eps,
          "n_stats": m.get("truncation_bn_stats", 0)}


def config_differences(theirs: Mapping[str, Any], config: ml_collections.ConfigDict
                       ) -> list[str]:
  """What in their config.json (or in the parts of ours it implies) does not match."""
  m = config.model
  out = []
  if m.architecture != "biggan_deep":
    out.append(f"model.architecture: theirs BigGAN-deep, ours {m.architecture!r}")
    return out
  ours = reference_config(m)
  for key, value in ours.items():
    have = theirs.get(key)
    if key == "layers":
      try:
        have = [(bool(a), int(b), int(c)) for a, b, c in have]
      except (TypeError, ValueError):
        pass
    same = (math.isclose(float(have), float(value), rel_tol=1e-9)
            if key == "eps" and isinstance(have, (int, float)) else have == value)
    if not same:
      out.append(f"{key}: theirs {have!r}, ours {value!r}")
  # Their embedding's width is z_dim (class_embed_dim is unused by the module); every
  # BN of theirs, the output BN included, uses `eps`.
  if m.shared_dim != m.dim_z:
    out.append(f"model.shared_dim={m.shared_dim}: their class embedding has z_dim "
               f"({theirs.get('z_dim')}) entries")
  if not math.isclose(float(m.output_bn_eps), float(m.bn_eps), rel_tol=1e-9):
    out.append(f"model.output_bn_eps={m.output_bn_eps}: theirs is eps ({theirs.get('eps')})")
  if m.sn_eval != "stored":
    out.append(f"model.sn_eval={m.sn_eval!r}: their spectral norm is torch's ('stored')")
  return out


# ----------------------------------------------------------------- tensors
class _Converter:
  """Fills our generator variables from their state dict, collecting every problem."""

  def __init__(self, tensors: Mapping[str, np.ndarray], template: Mapping[str, Any]):
    self.tensors, self.template = tensors, template
    self.used: set[str] = set()
    self.problems: list[str] = []
    self.missing = 0
    self.out: dict[tuple[str, ...], np.ndarray] = {}

  def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    if name not in self.tensors:
      self.problems.append(f"missing {name} {pw._describe(shape)}")
      self.missing += 1
      return None
    self.used.add(name)
    value = np.asarray(self.tensors[name])
    if tuple(value.shape) != tuple(shape):
      self.problems.append(f"{name}: file {pw._describe(value.shape)}, config expects "
                           f"{pw._describe(shape)}")
      return None
    if not np.issubdtype(value.dtype, np.floating):
      self.problems.append(f"{name}: dtype {value.dtype}, expected a float tensor")
      return None
    return value

  def leaf(self, path: tuple[str, ...]) -> Any:
    return pw._get(self.template, path)

  def put(self, path: tuple[str, ...], value: np.ndarray) -> None:
    leaf = self.leaf(path)
    value = np.array(value, dtype=leaf.dtype, order="C")
    if value.shape != tuple(leaf.shape) or path in self.out:
      raise AssertionError(f"{'/'.join(path)}: {value.shape} for {leaf.shape}")
    self.out[path] = value

  def sn(self, name: str, path: tuple[str, ...], bias: bool, in_order: np.ndarray | None = None,
         out_order: np.ndarray | None = None, their_outputs: int | None = None) -> None:
    """An SN linear (our kernel 2-D) or conv (4-D) layer."""
    kernel = self.leaf(("params",) + path + ("kernel",))
    if len(kernel.shape) == 2:
      fan_in, outputs = kernel.shape
      rest: tuple[int, ...] = (fan_in,)
    else:
      k, _, fan_in, outputs = kernel.shape
      rest = (fan_in, k, k)
    theirs = their_outputs or outputs
    w = self.take(f"{name}.weight_orig", (theirs,) + rest)
    b = self.take(f"{name}.bias", (theirs,)) if bias else None
    u = self.take(f"{name}.weight_u", (theirs,))
    v = self.take(f"{name}.weight_v", (int(np.prod(rest)),))
    if w is None or u is None or v is None or (bias and b is None):
      return
    # What torch.nn.utils.spectral_norm divides by in eval mode (computed in double).
    sigma = float(np.dot(u.astype(np.float64), w.reshape(theirs, -1).astype(np.float64)
                         @ v.astype(np.float64)))
    w, u = w[:outputs], u[:outputs]
    b = b[:outputs] if bias else None
    if out_order is not None:
      w, u = w[out_order], u[out_order]
      b = b[out_order] if bias else None
    if in_order is not None:
      w = w[:, in_order]
    self.put(("params",) + path + ("kernel",),
             w.T if w.ndim == 2 else w.transpose(2, 3, 1, 0))
    if bias:
      self.put(("params",) + path + ("bias",), b)
    self.put(("spectral",) + path + ("u",), u)
    self.put(("spectral",) + path + ("sigma",), np.asarray(sigma))

  def stats(self, name: str, path: tuple[str, ...]) -> None:
    shape = tuple(self.leaf(("batch_stats",) + path + ("stats", "mean")).shape)
    for theirs, ours in (("running_means", "mean"), ("running_vars", "var")):
      value = self.take(f"{name}.{theirs}", shape)
      if value is not None:
        self.put(("batch_stats",) + path + ("stats", ours), value)

  def copy(self, name: str, path: tuple[str, ...], their_shape: tuple[int, ...] | None = None,
           to_ours=lambda x: x) -> None:
    leaf = self.leaf(path)
    value = self.take(name, tuple(leaf.shape) if their_shape is None else their_shape)
    if value is not None:
      self.put(path, np.reshape(to_ours(value), leaf.shape))


def variables_from_tfhub(tensors: Mapping[str, np.ndarray], model_config: Any,
                         template: Mapping[str, Any], what: str) -> dict[str, Any]:
  """Our G variables ({'params', 'spectral', 'batch_stats'}, shaped like `template`) from
  pytorch-pretrained-biggan's state dict; WeightImportError names what does not fit."""
  m = model_config
  conv = _Converter(tensors, template)
  z_dim, embed_dim = m.dim_z, m.shared_dim
  # Ours: concat(embedding, z); theirs: concat(z, embedding).
  cond_order = np.concatenate([np.arange(z_dim, z_dim + embed_dim), np.arange(z_dim)])
  channels = G_ARCH[m.resolution][0][0] * m.ch
  cells = BOTTOM_WIDTH * BOTTOM_WIDTH
  # Our output o = c * 16 + cell; theirs t = cell * C + c.
  map_order = (np.arange(cells)[None, :] * channels + np.arange(channels)[:, None]).reshape(-1)

  conv.copy("embeddings.weight", ("params", "shared", "embedding"),
            (embed_dim, m.num_classes), lambda x: x.T)
  conv.sn("generator.gen_z", ("linear",), True, in_order=cond_order, out_order=map_order)
  position = attention_position(m)
  blocks = len(expected_layers(m))
  for i in range(blocks):
    index = i + (1 if position is not None and i >= position else 0)
    prefix, path = f"generator.layers.{index}", (f"block{i // m.depth}_{i % m.depth}",)
    for k in range(4):
      bn = path + (f"bn{k + 1}",)
      conv.stats(f"{prefix}.bn_{k}", bn)
      conv.sn(f"{prefix}.bn_{k}.scale", bn + ("gain",), False, in_order=cond_order)
      conv.sn(f"{prefix}.bn_{k}.offset", bn + ("bias",), False, in_order=cond_order)
      conv.sn(f"{prefix}.conv_{k}", path + (f"conv{k + 1}",), True)
  if position is not None:
    prefix, path = f"generator.layers.{position}", (f"attention{position // m.depth - 1}",)
    conv.copy(f"{prefix}.gamma", ("params",) + path + ("gamma",), (1,))
    for theirs, ours in (("theta", "theta"), ("phi", "phi"), ("g", "g"), ("o_conv", "o")):
      conv.sn(f"{prefix}.snconv1x1_{theirs}", path + (ours,), False)
  conv.stats("generator.bn", ("output_bn",))
  conv.copy("generator.bn.weight", ("params", "output_bn", "scale"))
  conv.copy("generator.bn.bias", ("params", "output_bn", "bias"))
  conv.sn("generator.conv_to_rgb", ("output_conv",), True, their_outputs=m.ch)

  pw.check_fit(what, conv.problems, conv.missing,
               [name for name in tensors if name not in conv.used], tensors,
               "Use the config of the module's resolution: "
               "--config=configs/imagenet{128,256,512}_deep.py:tfhub.")
  return pw.assemble(template, conv.out)


# ----------------------------------------------------------------- files
def find_files(weights_dir: str) -> tuple[str, str]:
  """(weights, config) in `weights_dir`: pytorch_model.bin and config.json, or the download
  names biggan-deep-R-pytorch_model.bin / biggan-deep-R-config.json."""
  found = []
  for name in (WEIGHTS_NAME, CONFIG_NAME):
    path = os.path.join(weights_dir, name)
    if not os.path.isfile(path):
      candidates = sorted(glob.glob(os.path.join(glob.escape(weights_dir), f"*-{name}")))
      if len(candidates) > 1:
        raise pw.WeightImportError(f"{weights_dir!r} holds several *-{name} files "
                                   f"({', '.join(map(os.path.basename, candidates))}); put "
                                   "one module's files in their own folder")
      path = candidates[0] if candidates else path
    found.append(path)
  missing = [p for p in found if not os.path.isfile(p)]
  if missing:
    raise pw.WeightImportError(
        f"missing {', '.join(missing)}. --from=tfhub_biggan_deep reads pytorch-pretrained-"
        f"biggan's {WEIGHTS_NAME} and {CONFIG_NAME} (or biggan-deep-R-{WEIGHTS_NAME} and "
        f"biggan-deep-R-{CONFIG_NAME} as downloaded) from --weights_dir")
  return found[0], found[1]


def read_config(path: str) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      theirs = json.load(f)
  except (OSError, ValueError) as e:
    raise pw.WeightImportError(f"cannot read {path}: {e}") from e
  if not isinstance(theirs, dict) or any(key not in theirs for key in _CONFIG_KEYS):
    raise pw.WeightImportError(f"{path} is not pytorch-pretrained-biggan's config.json (it "
                               f"needs {', '.join(_CONFIG_KEYS)})")
  return theirs


def import_tfhub_biggan_deep(weights_dir: str, config: ml_collections.ConfigDict,
                             workdir: str) -> ptc.ImportResult:
  """Writes a TF-Hub BigGAN-deep generator as step 0 of `workdir`: G and G-EMA from the
  file, D freshly initialised (none was released), Adam at zero. It samples and evaluates;
  `main` refuses to train it (see biggan_jax/config.py)."""
  weights_dir = ptc.check_import_target(weights_dir, workdir)
  weights_file, config_file = find_files(weights_dir)
  theirs = read_config(config_file)
  config = ml_collections.ConfigDict(config.to_dict())
  differences = config_differences(theirs, config)
  if differences:
    raise pw.WeightImportError(
        f"{config_file} describes another model than the config:\n  " +
        "\n  ".join(differences) + "\nUse --config=configs/imagenet"
        f"{theirs.get('output_dim', 'R')}_deep.py:tfhub (the TF-Hub variant of BigGAN-deep).")
  tensors = ptc._read_tensors(weights_file, os.path.basename(weights_file))
  task = BigGANTask(config)
  task.build(config.model.num_classes, parallel.make_mesh())
  trainer = task.trainer
  shapes = trainer.state_shapes
  generator = variables_from_tfhub(tensors, config.model,
                                   {"params": shapes.g_params, **shapes.g_state},
                                   os.path.basename(weights_file))
  g_params, g_state = ptc._variables_split(generator)
  state = trainer.init_state(config.seed).replace(
      step=np.asarray(0, np.int32), g_params=g_params, g_state=g_state, ema_params=g_params,
      ema_state=g_state)
  imported_from = {"format": "tfhub_biggan_deep", "weights_dir": os.path.abspath(weights_dir),
                   "files": [os.path.basename(weights_file), os.path.basename(config_file)]}
  ptc.write_imported_checkpoint(task, config, state, workdir, imported_from,
                                (weights_file, config_file), {"config_json": theirs})
  used = {"pytorch_model": weights_file, "config": config_file}
  return ptc.ImportResult(0, workdir, used, [], ptc.count_parameters(shapes.g_params),
                          ptc.count_parameters(shapes.d_params))
