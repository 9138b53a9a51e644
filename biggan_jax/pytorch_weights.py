"""BigGAN-PyTorch checkpoints <-> our train state: the tensor-by-tensor correspondence.

BigGAN-PyTorch (ajbrock/BigGAN-PyTorch) saves a training run with `utils.save_weights` as
`G.pth`, `D.pth`, `G_ema.pth` (module state dicts), `G_optim.pth`, `D_optim.pth` (Adam state
dicts) and `state_dict.pth` (the iteration counter and its config). Our BigGAN and
BigGAN-deep follow its models layer for layer, so every entry of its state dicts has exactly
one place in our state; `generator_layout` / `discriminator_layout` list them, in the order
of the PyTorch modules' `state_dict()` (which is also the order of `module.parameters()`,
by which the Adam states are indexed).

Conversions (PyTorch -> ours; export inverts them):
  conv weight (out, in, kh, kw)  -> kernel (kh, kw, in, out)
  linear weight (out, in)        -> kernel (in, out)
  SN `u0` (1, out), `sv0` (1,)   -> `spectral` u (out,), sigma ()
  BN `stored_mean`/`stored_var`  -> `batch_stats` .../stats/mean, var
  output BN `gain`               -> params output_bn/scale
  embeddings, biases, attention `gamma`: unchanged.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import numpy as np

from biggan_jax.models import BOTTOM_WIDTH, D_ARCH, D_DEEP_ARCH, G_ARCH
from gan_core.errors import UserError

PARAMS, SPECTRAL, BATCH_STATS = "params", "spectral", "batch_stats"


class WeightImportError(UserError, ValueError):
  """PyTorch weights that do not fit the configured model (or are not BigGAN-PyTorch's)."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One PyTorch state-dict entry and where it lives in our variables."""
  torch_name: str
  collection: str  # 'params', 'spectral' or 'batch_stats'
  path: tuple[str, ...]  # Inside that collection.
  kind: str  # 'copy', 'linear', 'conv', 'u', 'sigma'

  @property
  def is_parameter(self) -> bool:
    """A torch Parameter (optimised, indexed by the Adam state) rather than a buffer."""
    return self.collection == PARAMS


def to_ours(kind: str, value: np.ndarray) -> np.ndarray:
  if kind == "linear":
    return value.T
  if kind == "conv":
    return value.transpose(2, 3, 1, 0)
  if kind == "u":
    return value.reshape(value.shape[1:]) if value.ndim == 2 and value.shape[0] == 1 else value
  if kind == "sigma":
    return value.reshape(()) if value.shape == (1,) else value
  return value


def to_torch(kind: str, value: np.ndarray) -> np.ndarray:
  if kind == "linear":
    return value.T
  if kind == "conv":
    return value.transpose(3, 2, 0, 1)
  if kind == "u":
    return value.reshape((1,) + value.shape)
  if kind == "sigma":
    return value.reshape((1,))
  return value


def torch_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The PyTorch shape of an entry whose value has our `shape`."""
  return to_torch(kind, np.empty(shape, np.bool_)).shape


# --------------------------------------------------------------------------- layouts
class _Layout:
  def __init__(self):
    self.entries: list[Entry] = []

  def add(self, torch_name, collection, path, kind="copy"):
    self.entries.append(Entry(torch_name, collection, tuple(path), kind))

  def sn(self, torch_name: str, path: Iterable[str], kind: str, bias: bool = True,
         weight: str = "kernel") -> None:
    """An SN layer: weight, bias (parameters), then the buffers u0, sv0."""
    path = tuple(path)
    self.add(f"{torch_name}.weight", PARAMS, path + (weight,), kind)
    if bias:
      self.add(f"{torch_name}.bias", PARAMS, path + ("bias",))
    self.add(f"{torch_name}.u0", SPECTRAL, path + ("u",), "u")
    self.add(f"{torch_name}.sv0", SPECTRAL, path + ("sigma",), "sigma")

  def ccbn(self, torch_name: str, path: tuple[str, ...]) -> None:
    """layers.ccbn: its buffers, then its two bias-free SN linear maps."""
    self.add(f"{torch_name}.stored_mean", BATCH_STATS, path + ("stats", "mean"))
    self.add(f"{torch_name}.stored_var", BATCH_STATS, path + ("stats", "var"))
    self.sn(f"{torch_name}.gain", path + ("gain",), "linear", bias=False)
    self.sn(f"{torch_name}.bias", path + ("bias",), "linear", bias=False)

  def attention(self, torch_name: str, path: tuple[str, ...]) -> None:
    """layers.Attention: its own parameter gamma, then theta, phi, g, o (bias-free 1x1)."""
    self.add(f"{torch_name}.gamma", PARAMS, path + ("gamma",))
    for name in ("theta", "phi", "g", "o"):
      self.sn(f"{torch_name}.{name}", path + (name,), "conv", bias=False)

  def output(self) -> None:
    """G's output_layer: Sequential(bn, ReLU, SNConv2d)."""
    self.add("output_layer.0.gain", PARAMS, ("output_bn", "scale"))
    self.add("output_layer.0.bias", PARAMS, ("output_bn", "bias"))
    self.add("output_layer.0.stored_mean", BATCH_STATS, ("output_bn", "stats", "mean"))
    self.add("output_layer.0.stored_var", BATCH_STATS, ("output_bn", "stats", "var"))
    self.sn("output_layer.2", ("output_conv",), "conv")


def _check_supported(model_config: Any) -> None:
  if model_config.resolution not in G_ARCH:
    raise WeightImportError(f"model.resolution={model_config.resolution} has no BigGAN-PyTorch "
                            f"layout; choose one of {sorted(G_ARCH)}")
  if model_config.architecture not in ("biggan", "biggan_deep"):
    raise WeightImportError(f"model.architecture={model_config.architecture!r} has no "
                            "BigGAN-PyTorch layout")


def generator_layout(model_config: Any) -> list[Entry]:
  """BigGAN-PyTorch's `G.state_dict()` entries for `config.model`, in its order."""
  _check_supported(model_config)
  m = model_config
  layout = _Layout()
  layout.add("shared.weight", PARAMS, ("shared", "embedding"))
  layout.sn("linear", ("linear",), "linear")
  resolution = BOTTOM_WIDTH
  deep = m.architecture == "biggan_deep"
  for index in range(len(G_ARCH[m.resolution][0])):
    resolution *= 2
    # BigGAN-PyTorch's deep G keeps one ModuleList per block (blocks.{stage*depth+sub}.0),
    # its attention appended to the stage's last one; its deep D keeps one per stage.
    subs = m.depth if deep else 1
    for sub in range(subs):
      prefix = f"blocks.{index * subs + sub}.0"
      path = (f"block{index}_{sub}",) if deep else (f"block{index}",)
      convs = ("conv1", "conv2", "conv3", "conv4") if deep else ("conv1", "conv2", "conv_sc")
      for conv in convs:
        layout.sn(f"{prefix}.{conv}", path + (conv,), "conv")
      for bn in (("bn1", "bn2", "bn3", "bn4") if deep else ("bn1", "bn2")):
        layout.ccbn(f"{prefix}.{bn}", path + (bn,))
    if resolution in tuple(m.g_attention):
      layout.attention(f"blocks.{index * subs + subs - 1}.1", (f"attention{index}",))
  layout.output()
  return layout.entries


def discriminator_layout(model_config: Any) -> list[Entry]:
  """BigGAN-PyTorch's `D.state_dict()` entries for `config.model`, in its order."""
  _check_supported(model_config)
  m = model_config
  layout = _Layout()
  resolution = m.resolution
  if m.architecture == "biggan":
    _, out_mults, downsample = D_ARCH[m.resolution]
    in_channels = 3
    for index, (out_mult, down) in enumerate(zip(out_mults, downsample)):
      prefix, path = f"blocks.{index}.0", (f"block{index}",)
      layout.sn(f"{prefix}.conv1", path + ("conv1",), "conv")
      layout.sn(f"{prefix}.conv2", path + ("conv2",), "conv")
      if in_channels != out_mult * m.ch or down:
        layout.sn(f"{prefix}.conv_sc", path + ("conv_sc",), "conv")
      in_channels = out_mult * m.ch
      resolution //= 2 if down else 1
      if resolution in tuple(m.d_attention):
        layout.attention(f"blocks.{index}.1", (f"attention{index}",))
  else:
    in_mults, out_mults, downsample = D_DEEP_ARCH[m.resolution]
    layout.sn("input_conv", ("input_conv",), "conv")
    in_channels = in_mults[0] * m.ch
    for index, (out_mult, down) in enumerate(zip(out_mults, downsample)):
      for sub in range(m.depth):
        prefix, path = f"blocks.{index}.{sub}", (f"block{index}_{sub}",)
        for conv in ("conv1", "conv2", "conv3", "conv4"):
          layout.sn(f"{prefix}.{conv}", path + (conv,), "conv")
        if in_channels != out_mult * m.ch:
          layout.sn(f"{prefix}.conv_sc", path + ("conv_sc",), "conv")
        in_channels = out_mult * m.ch
      resolution //= 2 if down else 1
      if resolution in tuple(m.d_attention):
        layout.attention(f"blocks.{index}.{m.depth}", (f"attention{index}",))
  layout.sn("linear", ("linear",), "linear")
  layout.sn("embed", ("embed",), "copy", bias=False, weight="embedding")
  return layout.entries


# --------------------------------------------------------------------------- conversion
def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  out = []
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out += _paths(value, prefix + (key,))
    else:
      out.append(prefix + (key,))
  return out


def _describe(shape: Iterable[int]) -> str:
  return "(" + ", ".join(str(s) for s in shape) + ")"


def variables_from_torch(layout: list[Entry], tensors: Mapping[str, np.ndarray],
                         template: Mapping[str, Any], what: str) -> dict[str, Any]:
  """Our variables ({'params': ..., 'spectral': ..., 'batch_stats': ...}) from a PyTorch
  state dict, shaped like `template` (the same collections, arrays or ShapeDtypeStructs).

  Every entry of `layout` must be in `tensors` with the shape the config implies and every
  leaf of `template` must be filled exactly once; otherwise WeightImportError lists the
  missing, unexpected and mis-shaped tensors, the first ones by name.
  """
  problems, filled, missing = [], {}, 0
  for entry in layout:
    leaf = _get(template, (entry.collection,) + entry.path)
    expected = torch_shape(entry.kind, tuple(leaf.shape))
    if entry.torch_name not in tensors:
      problems.append(f"missing {entry.torch_name} {_describe(expected)}")
      missing += 1
      continue
    value = np.asarray(tensors[entry.torch_name])
    if tuple(value.shape) != expected:
      problems.append(f"{entry.torch_name}: file {_describe(value.shape)}, config expects "
                      f"{_describe(expected)}")
      continue
    if not np.issubdtype(value.dtype, np.floating):
      problems.append(f"{entry.torch_name}: dtype {value.dtype}, expected a float tensor")
      continue
    key = (entry.collection,) + entry.path
    if key in filled:
      raise AssertionError(f"layout maps two tensors onto {'/'.join(key)}")
    filled[key] = np.array(to_ours(entry.kind, value), dtype=leaf.dtype, order="C")
  known = {entry.torch_name for entry in layout}
  check_fit(what, problems, missing, [name for name in tensors if name not in known],
            tensors, "Pass the --config (and --config.model.* overrides: resolution, ch, "
            "dim_z, architecture, attention, num_classes) that the weights were trained with.")
  return assemble(template, filled)


def check_fit(what: str, problems: list[str], missing: int, extra: list[str],
              tensors: Mapping[str, np.ndarray], hint: str) -> None:
  """Raises WeightImportError listing `problems` (missing or mis-shaped tensors, `missing`
  of them missing) and the `extra` tensor names, in order, the first 10 shown."""
  problems = problems + [f"unexpected {name} {_describe(np.shape(tensors[name]))}"
                         for name in extra]
  if not problems:
    return
  shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
  raise WeightImportError(
      f"{what} does not fit the configured model ({len(problems)} problem"
      f"{'s' if len(problems) > 1 else ''}: {len(problems) - missing - len(extra)} of "
      f"another shape or type, {missing} missing, {len(extra)} unexpected; in order):\n  " +
      "\n  ".join(shown) + "\n" + hint)


def assemble(template: Mapping[str, Any], filled: Mapping[tuple[str, ...], Any]
             ) -> dict[str, Any]:
  """The nested variables of `filled` ({path: array}), which must cover every leaf of
  `template`."""
  unfilled = [p for p in _paths(template) if p not in filled]
  if unfilled:  # The mapping and the model disagree: a bug here, not in the user's file.
    raise AssertionError(f"mapping leaves {['/'.join(p) for p in unfilled[:5]]} unfilled")
  out: dict[str, Any] = {}
  for key, value in filled.items():
    _set(out, key, value)
  return out


def variables_to_torch(layout: list[Entry], variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The PyTorch state dict (names and order of `layout`) of our variables."""
  # (np.array, not np.ascontiguousarray, which would make the 0-d gammas 1-d.)
  return {entry.torch_name: np.array(
      to_torch(entry.kind, np.asarray(_get(variables, (entry.collection,) + entry.path),
                                      np.float32)), order="C")
          for entry in layout}


def parameter_entries(layout: list[Entry]) -> list[Entry]:
  """The entries that are torch Parameters, in `module.parameters()` order."""
  return [entry for entry in layout if entry.is_parameter]


# --------------------------------------------------------------------------- Adam
@dataclasses.dataclass
class AdamMoments:
  count: int
  mu: dict[str, Any]  # Our params tree.
  nu: dict[str, Any]
  hyper: dict[str, Any]  # lr, betas, eps, weight_decay of the torch param group.


def adam_from_torch(layout: list[Entry], optim: Any, params_template: Mapping[str, Any],
                    what: str) -> AdamMoments:
  """Adam's moments and step count from a torch `optimizer.state_dict()`.

  torch keys the per-parameter state by the parameter's index in the param group, in
  `module.parameters()` order; `step` is a number (old torch) or a 0-d tensor. A
  parameter without state (the optimizer never stepped) gets zero moments.
  """
  entries = parameter_entries(layout)
  if not isinstance(optim, Mapping) or "state" not in optim or "param_groups" not in optim:
    raise WeightImportError(f"{what} is not a torch optimizer state dict (no 'state' and "
                            "'param_groups')")
  groups = optim["param_groups"]
  if not isinstance(groups, list) or len(groups) != 1:
    raise WeightImportError(f"{what}: expected one Adam param group, found "
                            f"{len(groups) if isinstance(groups, list) else groups!r}")
  ids = list(groups[0].get("params", []))
  if len(ids) != len(entries):
    raise WeightImportError(f"{what} optimises {len(ids)} parameters; the configured model has "
                            f"{len(entries)}. Was it saved for another model or config?")
  state = optim["state"]
  steps, problems = set(), []
  mu: dict[str, Any] = {}
  nu: dict[str, Any] = {}
  for index, (entry, param_id) in enumerate(zip(entries, ids)):
    leaf = _get(params_template, entry.path)
    per = state.get(param_id, state.get(index)) if isinstance(state, Mapping) else None
    if not per:
      _set(mu, entry.path, np.zeros(leaf.shape, np.float32))
      _set(nu, entry.path, np.zeros(leaf.shape, np.float32))
      steps.add(0)
      continue
    expected = torch_shape(entry.kind, tuple(leaf.shape))
    for name, target in (("exp_avg", mu), ("exp_avg_sq", nu)):
      value = np.asarray(per.get(name)) if name in per else None
      if value is None or tuple(value.shape) != expected:
        problems.append(f"state {param_id} ({entry.torch_name}) {name}: "
                        f"{'missing' if value is None else _describe(value.shape)}, expected "
                        f"{_describe(expected)}")
        continue
      _set(target, entry.path, np.array(to_ours(entry.kind, value), np.float32, order="C"))
    steps.add(int(round(float(np.asarray(per.get("step", 0))))))
  if problems:
    raise WeightImportError(f"{what} does not fit the configured model:\n  " +
                            "\n  ".join(problems[:10]))
  if len(steps) > 1:
    raise WeightImportError(f"{what}: the parameters have different Adam step counts "
                            f"{sorted(steps)}; BigGAN-PyTorch steps all of them together")
  hyper = {key: groups[0].get(key) for key in ("lr", "betas", "eps", "weight_decay", "amsgrad")}
  return AdamMoments(steps.pop() if steps else 0, mu, nu, hyper)


def adam_to_torch(layout: list[Entry], count: int, mu: Mapping[str, Any], nu: Mapping[str, Any],
                  lr: float, betas: tuple[float, float], eps: float) -> dict[str, Any]:
  """A torch `Adam.state_dict()` (torch >= 1.12 layout: `step` a 0-d float32 tensor)."""
  entries = parameter_entries(layout)
  state = {index: {"step": np.asarray(float(count), np.float32),
                   "exp_avg": np.array(to_torch(entry.kind, np.asarray(
                       _get(mu, entry.path), np.float32)), order="C"),
                   "exp_avg_sq": np.array(to_torch(entry.kind, np.asarray(
                       _get(nu, entry.path), np.float32)), order="C")}
           for index, entry in enumerate(entries)}
  group = {"lr": float(lr), "betas": (float(betas[0]), float(betas[1])), "eps": float(eps),
           "weight_decay": 0, "amsgrad": False, "maximize": False, "foreach": None,
           "capturable": False, "differentiable": False, "fused": None,
           "params": list(range(len(entries)))}
  return {"state": state, "param_groups": [group]}

