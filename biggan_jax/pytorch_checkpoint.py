"""Import BigGAN-PyTorch training checkpoints as our checkpoints, and export ours back.

`import_biggan_pytorch` reads the files BigGAN-PyTorch's `utils.save_weights` writes
(`G.pth`, `D.pth`, `G_ema.pth`, `G_optim.pth`, `D_optim.pth`, `state_dict.pth`, each
optionally with a `_SUFFIX`), with the restricted reader of `gan_core.eval.torch_pickle`
(tensors and plain data only; nothing in the files is executed), maps every tensor onto our
train state (`biggan_jax.pytorch_weights`) and saves an Orbax checkpoint at the imported
iteration, so that `python -m biggan_jax.main --workdir=OUT` continues training with
BigGAN-PyTorch's Adam moments and step counts. `export_biggan_pytorch` writes a checkpoint
of ours back as those six files.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
import optax
from absl import logging

from biggan_jax import pytorch_weights as pw
from biggan_jax.train import BigGANTask, TrainState
from gan_core import augment, checkpointing, files, parallel, training
from gan_core.errors import UserError
from gan_core.eval import torch_pickle
from gan_core.eval.weights import sha256_of_file

FILES = ("G", "D", "G_ema", "G_optim", "D_optim", "state_dict")
PROVENANCE_FILE = "imported.json"

# BigGAN-PyTorch's state_dict counters as `train.py` initialises them.
_STATE_DICT_DEFAULTS = {"itr": 0, "epoch": 0, "save_num": 0, "save_best_num": 0,
                        "best_IS": 0, "best_FID": 999999}


def file_name(name: str, suffix: str = "") -> str:
  """`utils.save_weights`' file name: G.pth, or G_best0.pth with suffix 'best0'."""
  return "_".join([name] + ([suffix] if suffix else [])) + ".pth"


# ----------------------------------------------------------------- their config vs ours
def _attention_string(resolutions: Any) -> str:
  return "_".join(str(r) for r in resolutions) or "0"


def _attention_set(text: Any) -> set[int]:
  return {int(r) for r in str(text).split("_") if r and int(r) > 0}


def reference_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Our config in BigGAN-PyTorch's flag names (what its `state_dict['config']` holds)."""
  m = config.model
  deep = m.architecture == "biggan_deep"
  return {
      "model": "BigGANdeep" if deep else "BigGAN", "resolution": m.resolution,
      "n_classes": m.num_classes, "G_ch": m.ch, "D_ch": m.ch, "dim_z": m.dim_z,
      "shared_dim": m.shared_dim, "hier": bool(m.hierarchical or deep), "G_shared": True,
      "G_attn": _attention_string(m.g_attention), "D_attn": _attention_string(m.d_attention),
      "G_depth": m.depth, "D_depth": m.depth, "BN_eps": m.bn_eps, "SN_eps": m.sn_eps,
      "num_D_steps": config.num_d_steps, "G_ortho": config.ortho_reg,
      "G_lr": config.g_lr, "D_lr": config.d_lr, "G_B1": config.adam_b1, "G_B2": config.adam_b2,
      "D_B1": config.adam_b1, "D_B2": config.adam_b2, "adam_eps": config.adam_eps,
      "ema": True, "ema_decay": config.ema_decay, "ema_start": config.ema_start,
      "batch_size": config.batch_size // config.num_accumulations,
      "num_G_accumulations": config.num_accumulations,
      "num_D_accumulations": config.num_accumulations,
      "num_G_SVs": 1, "num_D_SVs": 1, "num_G_SV_itrs": 1, "num_D_SV_itrs": 1,
  }


# Settings that change what the imported weights compute (refused when they differ) and
# settings of the training recipe (reported, so the user can pick a matching preset).
_MODEL_KEYS = ("model", "resolution", "n_classes", "G_ch", "D_ch", "dim_z", "shared_dim", "hier",
               "G_shared", "G_attn", "D_attn", "BN_eps", "SN_eps", "num_G_SVs", "num_D_SVs",
               "num_G_SV_itrs", "num_D_SV_itrs")
_RECIPE_KEYS = ("num_D_steps", "G_ortho", "G_lr", "D_lr", "G_B1", "G_B2", "D_B1", "D_B2",
                "adam_eps", "ema_decay", "ema_start", "batch_size", "num_G_accumulations",
                "num_D_accumulations")


def _same(key: str, theirs: Any, ours: Any) -> bool:
  if key in ("G_attn", "D_attn"):
    return _attention_set(theirs) == _attention_set(ours)
  if key in ("G_depth", "D_depth") or theirs is None:
    return True
  if isinstance(ours, float) or isinstance(theirs, float):
    try:
      return bool(np.isclose(float(theirs), float(ours), rtol=1e-9, atol=0))
    except (TypeError, ValueError):
      return False
  if isinstance(ours, bool):
    return bool(theirs) == ours
  return theirs == ours


def compare_configs(theirs: Mapping[str, Any], config: ml_collections.ConfigDict
                    ) -> tuple[list[str], list[str]]:
  """(model differences, recipe differences) between a BigGAN-PyTorch run's config and
  ours, over the keys its config has."""
  ours = reference_config(config)
  if ours["model"] == "BigGANdeep":
    ours["hier"] = theirs.get("hier", True)  # Its deep G always conditions on all of z.
  model, recipe = [], []
  for keys, out in ((_MODEL_KEYS, model), (_RECIPE_KEYS, recipe)):
    for key in keys:
      if key in theirs and not _same(key, theirs[key], ours[key]):
        out.append(f"{key}: theirs {theirs[key]!r}, ours {ours[key]!r}")
  if "ema" in theirs and not theirs["ema"]:
    recipe.append("ema: theirs False (no G_ema: G-EMA starts as a copy of G)")
  m = config.model
  for key, want in (("output_bn_eps", 1e-5), ("sn_eval", "power_iteration"),
                    ("truncation_bn_stats", 0)):
    if m.get(key, want) != want:  # Settings BigGAN-PyTorch has no name for.
      model.append(f"model.{key}: BigGAN-PyTorch's is {want!r}, ours {m.get(key)!r}")
  return model, recipe


# ----------------------------------------------------------------- import
@dataclasses.dataclass
class ImportResult:
  step: int
  workdir: str
  files: dict[str, str]  # name -> path read
  recipe_differences: list[str]
  g_parameters: int
  d_parameters: int


def _read(path: str, what: str, reader=torch_pickle.load) -> Any:
  try:
    return reader(path)
  except torch_pickle.UnsafePickleError as e:
    raise pw.WeightImportError(f"{path}: refused, it is not plain tensor data ({e})") from e
  except torch_pickle.WeightFileError as e:
    raise pw.WeightImportError(f"cannot read {what}: {e}") from e


def _read_tensors(path: str, what: str) -> dict[str, np.ndarray]:
  """A module state dict (name -> tensor)."""
  return _read(path, what, torch_pickle.load_state_dict)


def _variables_split(variables: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  variables = dict(variables)
  return variables.pop(pw.PARAMS), variables


def _with_adam(opt_state: Any, moments: pw.AdamMoments) -> Any:
  adam = opt_state[0]
  if not isinstance(adam, optax.ScaleByAdamState):
    raise AssertionError(f"unexpected optimizer state {type(adam).__name__}")
  adam = adam._replace(count=np.asarray(moments.count, np.int32), mu=moments.mu, nu=moments.nu)
  return (adam,) + tuple(opt_state[1:])


def _adam_differences(name: str, hyper: Mapping[str, Any], lr: float, b1: float, b2: float,
                      eps: float) -> list[str]:
  out = []
  theirs = {"lr": hyper.get("lr"), "betas": tuple(hyper.get("betas") or ()),
            "eps": hyper.get("eps")}
  if theirs["lr"] is not None and not np.isclose(theirs["lr"], lr, rtol=1e-9, atol=0):
    out.append(f"{name} lr: theirs {theirs['lr']}, ours {lr}")
  if theirs["betas"] and not np.allclose(theirs["betas"], (b1, b2), rtol=1e-9, atol=0):
    out.append(f"{name} betas: theirs {theirs['betas']}, ours {(b1, b2)}")
  if theirs["eps"] is not None and not np.isclose(theirs["eps"], eps, rtol=1e-9, atol=0):
    out.append(f"{name} eps: theirs {theirs['eps']}, ours {eps}")
  if hyper.get("weight_decay"):
    out.append(f"{name} weight_decay: theirs {hyper['weight_decay']}, ours 0")
  if hyper.get("amsgrad"):
    out.append(f"{name} amsgrad: theirs True, ours False")
  return out


def import_biggan_pytorch(weights_dir: str, config: ml_collections.ConfigDict, workdir: str,
                          *, ema_only: bool = False, suffix: str = "") -> ImportResult:
  """Writes BigGAN-PyTorch's saved run in `weights_dir` as a checkpoint of ours in `workdir`.

  Full import: G, D, G_ema (G when absent), both Adam states and the iteration `itr`
  of state_dict.pth become the train state at step `itr`. `ema_only`: a lone G_ema.pth
  (a released generator) becomes G and G-EMA, with D freshly initialised, Adam at zero
  and step `itr` when a state_dict.pth is beside it (else 0).
  """
  weights_dir = check_import_target(weights_dir, workdir)
  paths = {name: os.path.join(weights_dir, file_name(name, suffix)) for name in FILES}
  needed = ("G_ema",) if ema_only else ("G", "D", "G_optim", "D_optim", "state_dict")
  missing = [paths[name] for name in needed if not os.path.isfile(paths[name])]
  if missing:
    raise pw.WeightImportError(
        f"missing {', '.join(missing)}. A full import needs the files BigGAN-PyTorch's "
        "utils.save_weights writes (G, D, G_optim, D_optim, state_dict; G_ema when EMA was "
        "on); for a lone generator use --ema_only (reads G_ema.pth)" if not ema_only else
        f"missing {missing[0]}: --ema_only reads G_ema{'_' + suffix if suffix else ''}.pth")
  used = {name: path for name, path in paths.items() if os.path.isfile(path)
          and (name in needed or name in ("G_ema", "state_dict"))}

  state_dict = dict(_STATE_DICT_DEFAULTS)
  if "state_dict" in used:
    saved = _read(used["state_dict"], "state_dict.pth")
    if not isinstance(saved, dict) or "itr" not in saved:
      raise pw.WeightImportError(f"{used['state_dict']} has no 'itr': not BigGAN-PyTorch's "
                                 "state_dict.pth")
    state_dict.update(saved)
  step = int(state_dict["itr"])
  theirs = state_dict.get("config") if isinstance(state_dict.get("config"), dict) else {}

  config = ml_collections.ConfigDict(config.to_dict())
  generator_file = used["G_ema"] if ema_only else used["G"]
  g_tensors = _read_tensors(generator_file, os.path.basename(generator_file))
  if not config.model.num_classes:  # Taken from the data otherwise; here from the weights.
    shared = g_tensors.get("shared.weight")
    config.model.num_classes = int(shared.shape[0]) if shared is not None else 1
  model_diffs, recipe_diffs = compare_configs(theirs, config)
  if model_diffs:
    raise pw.WeightImportError(
        "the weights were trained with other model settings than the config:\n  " +
        "\n  ".join(model_diffs) + "\nPass the matching --config.model.* values (the import "
        "must compute the same function as BigGAN-PyTorch).")

  task = BigGANTask(config)
  task.build(config.model.num_classes, parallel.make_mesh())
  trainer = task.trainer
  shapes = trainer.state_shapes
  g_layout = pw.generator_layout(config.model)
  d_layout = pw.discriminator_layout(config.model)
  g_template = {"params": shapes.g_params, **shapes.g_state}
  d_template = {"params": shapes.d_params, **shapes.d_state}
  generator = pw.variables_from_torch(g_layout, g_tensors, g_template,
                                      os.path.basename(generator_file))
  g_params, g_state = _variables_split(generator)
  if ema_only:
    state = trainer.init_state(config.seed).replace(
        step=np.asarray(step, np.int32), g_params=g_params, g_state=g_state,
        ema_params=g_params, ema_state=g_state)
  else:
    if "G_ema" in used:
      ema = pw.variables_from_torch(g_layout, _read_tensors(used["G_ema"], "G_ema.pth"),
                                    g_template, os.path.basename(used["G_ema"]))
      ema_params, ema_state = _variables_split(ema)
    else:
      ema_params, ema_state = g_params, g_state
      recipe_diffs.append("no G_ema file: G-EMA starts as a copy of G")
    d_params, d_state = _variables_split(pw.variables_from_torch(
        d_layout, _read_tensors(used["D"], "D.pth"), d_template, os.path.basename(used["D"])))
    g_adam = pw.adam_from_torch(g_layout, _read(used["G_optim"], "G_optim.pth"),
                                shapes.g_params, os.path.basename(used["G_optim"]))
    d_adam = pw.adam_from_torch(d_layout, _read(used["D_optim"], "D_optim.pth"),
                                shapes.d_params, os.path.basename(used["D_optim"]))
    recipe_diffs += _adam_differences("G Adam", g_adam.hyper, config.g_lr, config.adam_b1,
                                      config.adam_b2, config.adam_eps)
    recipe_diffs += _adam_differences("D Adam", d_adam.hyper, config.d_lr, config.adam_b1,
                                      config.adam_b2, config.adam_eps)
    g_opt = _with_adam(trainer.g_tx.init(g_params), g_adam)
    d_opt = _with_adam(trainer.d_tx.init(d_params), d_adam)
    _, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    state = TrainState(step=np.asarray(step, np.int32), rng=train_key, g_params=g_params,
                       g_state=g_state, d_params=d_params, d_state=d_state, g_opt_state=g_opt,
                       d_opt_state=d_opt, ema_params=ema_params, ema_state=ema_state,
                       augment=augment.init_state(config))
  imported_from = {"format": "biggan_pytorch", "weights_dir": os.path.abspath(weights_dir),
                   "files": sorted(os.path.basename(p) for p in used.values()),
                   "itr": step, "ema_only": ema_only}
  write_imported_checkpoint(task, config, state, workdir, imported_from, used.values(), {
      "state_dict": {k: v for k, v in state_dict.items() if k != "config"},
      "config_differences": recipe_diffs})
  return ImportResult(step, workdir, used, recipe_diffs, count_parameters(shapes.g_params),
                      count_parameters(shapes.d_params))


def check_import_target(weights_dir: str, workdir: str) -> str:
  """The expanded `weights_dir`, once it is a folder and `workdir` holds no checkpoints."""
  weights_dir = os.path.expanduser(weights_dir)
  if not os.path.isdir(weights_dir):
    raise pw.WeightImportError(f"--weights_dir {weights_dir!r} is not a directory")
  if checkpointing.latest_step_of(workdir) is not None:
    raise UserError(f"{workdir!r} already holds checkpoints; import into a new --workdir "
                    "(nothing was changed)")
  return weights_dir


def count_parameters(tree: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def write_imported_checkpoint(task: BigGANTask, config: ml_collections.ConfigDict,
                              state: TrainState, workdir: str, imported_from: dict[str, Any],
                              sources: Any, provenance: dict[str, Any]) -> None:
  """Saves an imported train state as checkpoint `state.step` of `workdir`, with the meta a
  training run writes (so `main` resumes it with the usual checks) plus `imported_from`,
  and OUT/imported.json: `imported_from`, the SHA-256 of every source file, `provenance`."""
  trainer = task.trainer
  state = jax.device_put(state, trainer.replicated)
  jax.tree.map(lambda leaf, want: _check_leaf(leaf, want), state, trainer.state_shapes)
  step = int(state.step)
  resolved = json.loads(config.to_json_best_effort())
  examples = step * trainer.examples_per_iteration
  meta = training.checkpoint_meta(task, resolved, step, examples, examples)
  meta["imported_from"] = imported_from
  checkpoints = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                           max_to_keep=config.max_to_keep)
  try:
    checkpoints.save(step, state, meta)
  finally:
    checkpoints.close()
  record = {**imported_from, "sha256": {os.path.basename(p): sha256_of_file(p) for p in sources},
            **provenance}
  files.write_bytes(os.path.join(workdir, PROVENANCE_FILE),
                    (json.dumps(record, indent=2, default=str) + "\n").encode())


def _check_leaf(leaf: Any, want: Any) -> None:
  if tuple(leaf.shape) != tuple(want.shape) or leaf.dtype != want.dtype:
    raise AssertionError(f"imported leaf {leaf.shape} {leaf.dtype}, expected {want.shape} "
                         f"{want.dtype}")


# ----------------------------------------------------------------- export
def export_biggan_pytorch(workdir: str, out_dir: str, step: int | None = None) -> dict[str, str]:
  """Writes checkpoint `step` (default: latest) of a BigGAN run in `workdir` as
  BigGAN-PyTorch's six files in `out_dir`; returns {name: path}."""
  checkpoints, step, meta = checkpointing.open_checkpoint(workdir, step,
                                                          "python -m biggan_jax.main")
  try:
    if meta.get("model") != "biggan":
      raise checkpointing.CheckpointError(
          f"{checkpoints.directory!r} holds a {meta.get('model')!r} checkpoint; only BigGAN "
          "and BigGAN-deep checkpoints have a BigGAN-PyTorch layout")
    model_config = meta.get("config", {}).get("model", {})
    tfhub = (model_config.get("truncation_bn_stats", 0)
             or model_config.get("sn_eval", "power_iteration") != "power_iteration")
    if tfhub:
      raise checkpointing.CheckpointError(
          f"{checkpoints.directory!r} holds a TF-Hub BigGAN-deep generator (BN statistics per "
          "truncation, stored spectral norms), which BigGAN-PyTorch's files cannot represent; "
          "the original pytorch_model.bin is already its PyTorch form")
    config = BigGANTask.sampling_config(ml_collections.ConfigDict(meta["config"]), 1)
    task = BigGANTask(config)
    task.build(meta["num_classes"], parallel.sampling_mesh())
    state = checkpoints.restore_state(step, task.abstract_state())
  finally:
    checkpoints.close()
  state = jax.device_get(state)
  g_layout = pw.generator_layout(config.model)
  d_layout = pw.discriminator_layout(config.model)
  out_dir = os.path.expanduser(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  g_adam, d_adam = state.g_opt_state[0], state.d_opt_state[0]
  betas = (config.adam_b1, config.adam_b2)
  reference = reference_config(config)
  reference["n_classes"] = meta["num_classes"]
  contents = {
      "G": pw.variables_to_torch(g_layout, {"params": state.g_params, **state.g_state}),
      "D": pw.variables_to_torch(d_layout, {"params": state.d_params, **state.d_state}),
      "G_ema": pw.variables_to_torch(g_layout, {"params": state.ema_params, **state.ema_state}),
      "G_optim": pw.adam_to_torch(g_layout, int(g_adam.count), g_adam.mu, g_adam.nu,
                                  config.g_lr, betas, config.adam_eps),
      "D_optim": pw.adam_to_torch(d_layout, int(d_adam.count), d_adam.mu, d_adam.nu,
                                  config.d_lr, betas, config.adam_eps),
      "state_dict": {**_STATE_DICT_DEFAULTS, "itr": int(state.step),
                     "config": {**reference, "exported_from": os.path.abspath(workdir),
                                "exported_step": int(step)}},
  }
  written = {}
  for name in FILES:
    path = os.path.join(out_dir, file_name(name))
    if name in ("G", "D", "G_ema"):
      torch_pickle.save_state_dict(path, contents[name])
    else:
      torch_pickle.save(path, contents[name])
    written[name] = path
  logging.info("Exported step %d of %s to %s.", step, workdir, out_dir)
  return written
