"""Checkpoints: the one module that talks to Orbax.

A checkpoint step holds two items: `state` (the whole train-state pytree, saved
by every process through Orbax) and `meta` (JSON: the config, parameter shapes,
data position, step). Saves are asynchronous and atomic (Orbax writes to a
temporary directory and renames it when complete), so a run killed mid-save
leaves the previous checkpoints intact and the partial one is ignored.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import sys
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from gan_core.errors import UserError, first_line


# Train-state fields added after checkpoints were first written, and what starting them at
# zero means: a checkpoint without them resumes with these zero-filled.
FIELDS_ADDED_LATER = {"augment": "ADA's augmentation probability p and its r_t statistics"}


class CheckpointError(UserError, RuntimeError):
  """A checkpoint cannot be written or read; the message says what to do."""


class IncompatibleCheckpointError(CheckpointError):
  """The checkpoint in the workdir was written for a different model."""


def _as_path(directory: str) -> str:
  return directory if "://" in directory else os.path.abspath(os.path.expanduser(directory))


def checkpoint_dir(workdir: str) -> str:
  """Where a training run keeps its checkpoints."""
  return os.path.join(workdir, "checkpoints")


def latest_step_of(workdir: str) -> int | None:
  """The newest checkpoint step of a training workdir (None: none), creating nothing."""
  directory = checkpoint_dir(workdir)
  if not (os.path.isdir(directory) if "://" not in directory else _gfile_isdir(directory)):
    return None
  checkpoints = Checkpointer(directory)
  try:
    return checkpoints.latest_step()
  finally:
    checkpoints.close()


def _gfile_isdir(path: str) -> bool:
  import tensorflow as tf
  return tf.io.gfile.isdir(path)


def save_due(interval_reached: bool, last: bool, preempted: bool) -> bool:
  """A training run saves at its checkpoint interval, after its last iteration and when
  preempted (SIGTERM: the scheduler gives a grace period for exactly this)."""
  return interval_reached or last or preempted


class Checkpointer:
  """Orbax CheckpointManager over `directory`.

  Retention: the newest `max_to_keep` steps, and with `keep_every_steps` > 0 also a
  permanent series spaced at least that many steps apart (the first checkpoint, then the
  first one at least `keep_every_steps` after the previously kept one, ...), so that a
  collapse noticed late still has a checkpoint from before it.
  """

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True,
               keep_every_steps: int = 0):
    from orbax.checkpoint import checkpoint_managers
    self.directory = _as_path(directory)
    self._saving_step: int | None = None
    policy = checkpoint_managers.LatestN(max_to_keep)
    if keep_every_steps > 0:
      policy = checkpoint_managers.AnyPreservationPolicy([policy, checkpoint_managers.EveryNSteps(
          keep_every_steps, exact_interval=False)])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options,
                                            item_names=("state", "meta"))
    except OSError as e:
      raise CheckpointError(f"cannot create or open the checkpoint directory "
                            f"{self.directory!r}: {e}. Check that the workdir is writable "
                            "and the disk is not full.") from e

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
    """Starts an asynchronous save of `state` and `meta` at `step`."""
    meta = json.loads(json.dumps(meta))  # Fail here, not in a background thread.
    self._saving_step = step
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # Also a failure of the previous asynchronous save.
      raise CheckpointError(self._write_failure(step, e)) from e

  def wait(self) -> None:
    """Blocks until pending saves are on disk."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # OSError from Python, ValueError from TensorStore, ...
      raise CheckpointError(self._write_failure(self._saving_step, e)) from e

  def _write_failure(self, step: int | None, error: Exception) -> str:
    kept = self.all_steps()
    # TensorStore adds its driver spec (a long JSON) to the message; drop it.
    reason = re.sub(r"\s*\[tensorstore_spec='.*?'\]", "", first_line(error))
    if len(reason) > 400:  # TensorStore messages are long; the OS's reason comes last.
      reason = reason[:200] + " ... " + reason[-180:]
    return (f"writing checkpoint {'' if step is None else f'{step} '}to {self.directory!r} failed "
            f"({type(error).__name__}: {reason}). The disk may be full or read-only. Earlier "
            f"checkpoints are untouched (steps {kept}); free space or fix permissions and "
            "rerun the same command to resume from the latest of them.")

  def restore_meta(self, step: int) -> dict[str, Any]:
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def restore_state(self, step: int, abstract_state: Any) -> Any:
    """Restores `state` at `step` onto the shardings of `abstract_state`."""
    try:
      return self._read_state(step, abstract_state)
    except (ValueError, KeyError, TypeError) as e:
      raise IncompatibleCheckpointError(
          f"the train state saved at {self.directory!r} (step {step}) does not have the "
          f"structure this code expects ({first_line(e)}). It was probably written by another "
          "version of this code. The checkpoint has not been modified; restore it with the "
          "version that wrote it, or use a new --workdir.") from e

  def restore_fields(self, step: int, abstract_state: Any, fields: tuple[str, ...]) -> Any:
    """Only the named fields of the (dataclass) state at `step`, e.g. G-EMA for sampling;
    the other fields are not read from storage and hold `...` placeholders."""
    skipped = {f.name: jax.tree.map(lambda _: ocp.PLACEHOLDER, getattr(abstract_state, f.name))
               for f in dataclasses.fields(abstract_state) if f.name not in fields}
    target = abstract_state.replace(**skipped)
    try:
      return self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))))["state"]
    except (ValueError, KeyError, TypeError) as e:
      raise IncompatibleCheckpointError(
          f"the {', '.join(fields)} saved at {self.directory!r} (step {step}) do not have the "
          f"structure this code expects ({first_line(e)}). It was probably written by another "
          "version of this code.") from e

  def _read_state(self, step: int, abstract_state: Any) -> Any:
    absent = self._fields_added_later(step, abstract_state)
    if not absent:
      return self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))["state"]
    if jax.process_index() == 0:
      logging.warning("Checkpoint step %d predates the train-state field(s) %s; they start at "
                      "zero (%s).", step, ", ".join(absent),
                      "; ".join(FIELDS_ADDED_LATER[name] for name in absent))
    target = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(abstract_state)
              if f.name not in absent}  # The saved tree: the state's fields by name.
    saved = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))))["state"]
    zeros = {name: jax.tree.map(
        lambda s: jax.device_put(np.zeros(s.shape, s.dtype), s.sharding),
        getattr(abstract_state, name)) for name in absent}
    return type(abstract_state)(**saved, **zeros)

  def _fields_added_later(self, step: int, abstract_state: Any) -> tuple[str, ...]:
    """Fields of `abstract_state` in FIELDS_ADDED_LATER that checkpoint `step` lacks."""
    if not dataclasses.is_dataclass(abstract_state):
      return ()
    wanted = [f.name for f in dataclasses.fields(abstract_state) if f.name in FIELDS_ADDED_LATER]
    if not wanted:
      return ()
    from etils import epath
    saved = set(ocp.StandardCheckpointHandler().metadata(
        epath.Path(self.directory) / str(step) / "state").keys())
    return tuple(name for name in wanted if name not in saved)

  def restore_newest_readable(
      self, abstract_state: Any,
      check_meta: Callable[[dict[str, Any], int], None] | None = None,
  ) -> tuple[int, Any, dict[str, Any]] | None:
    """(step, state, meta) of the newest checkpoint that reads completely; None if none.

    A newer checkpoint that cannot be read (a truncated or missing file, as a storage
    fault or a disk filling up during a copy leaves) is reported loudly and moved aside
    to `<directory>_damaged/<step>-<time>` (never deleted), and the next older one is
    tried. `check_meta(meta, step)` raises IncompatibleCheckpointError for a checkpoint
    of another model, which ends the search with nothing moved. When no checkpoint
    reads, a CheckpointError lists each step's reason and nothing is moved.
    """
    failures: list[tuple[int, str, Exception]] = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        meta = self.restore_meta(step)
      except Exception as e:  # JSONDecodeError, OSError, ... from a damaged meta item.
        failures.append((step, "meta", e))
        continue
      if check_meta is not None:
        check_meta(meta, step)
      try:
        state = self._read_state(step, abstract_state)
      except Exception as e:  # TensorStore DATA_LOSS, JSON errors in _METADATA, ...
        failures.append((step, "state", e))
        continue
      for failed_step, item, error in failures:
        self._move_aside(failed_step, item, error)
      return step, state, meta
    if failures:
      reasons = "; ".join(f"step {s} ({item}: {_one_line(e)})" for s, item, e in failures)
      raise CheckpointError(
          f"no checkpoint in {self.directory!r} can be read: {reasons}. Nothing was moved or "
          "deleted. If the files were damaged, restore them from a copy (or move the step "
          "folders away to start over); if they were written by another version of this "
          "code, resume with that version.")
    return None

  def _move_aside(self, step: int, item: str, error: Exception) -> None:
    """Moves the unreadable checkpoint `step` out of Orbax's sight, keeping its files."""
    source = os.path.join(self.directory, str(step))
    target = os.path.join(self.directory + "_damaged",
                          f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    if jax.process_index() == 0:
      message = (f"CHECKPOINT DAMAGED: step {step} in {self.directory!r} cannot be read "
                 f"({item}: {_one_line(error)}). Moved it to {target!r} (kept, not deleted); "
                 "resuming from the newest readable checkpoint.")
      logging.error("%s", message)
      print(f"warning: {message}", file=sys.stderr, flush=True)
      _move_tree(source, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"checkpoint_moved_aside_{step}")
    self._manager.reload()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      try:
        self._manager.close()
      except Exception as e:  # A failed save is reported by wait(); keep its message.
        logging.warning("closing the checkpoint manager: %s", e)


class BestCheckpoint:
  """The checkpoint with the lowest value of one metric so far (FID), alone in `directory`.

  Saved through a `Checkpointer` of its own (asynchronously, like the others), created
  only when the first improvement arrives; `best` starts from what earlier runs of the
  workdir logged, so a resumed run does not replace a better checkpoint with a worse one.
  """

  def __init__(self, directory: str, best: float = float("inf")):
    self.directory = directory
    self.best = best
    self._checkpoints: Checkpointer | None = None

  def offer(self, step: int, value: float, state: Any, meta: Mapping[str, Any]) -> bool:
    """Saves `state` when `value` beats the best so far; returns whether it did."""
    if not np.isfinite(value) or value >= self.best:
      return False
    if self._checkpoints is None:
      self._checkpoints = Checkpointer(self.directory, max_to_keep=1)
    self._checkpoints.save(step, state, meta)
    self.best = value
    logging.info("New best %.4g at step %d, kept in %s.", value, step, self.directory)
    return True

  def close(self) -> None:
    if self._checkpoints is not None:
      self._checkpoints.close()


def _one_line(error: Exception, limit: int = 300) -> str:
  text = f"{type(error).__name__}: {first_line(error)}"
  return text if len(text) <= limit else text[:limit - 60] + " ... " + text[-55:]


def _move_tree(source: str, target: str) -> None:
  """Renames a folder (local) or copies then removes it (object stores cannot rename)."""
  if "://" not in source:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.rename(source, target)
    return
  import tensorflow as tf
  gfile = tf.io.gfile
  for folder, _, names in gfile.walk(source):
    relative = folder[len(source):].lstrip("/")
    gfile.makedirs(os.path.join(target, relative))
    for name in names:
      gfile.copy(os.path.join(folder, name), os.path.join(target, relative, name))
  gfile.rmtree(source)


def open_checkpoint(workdir: str, step: int | None, train_command: str
                    ) -> tuple[Checkpointer, int, dict[str, Any]]:
  """(checkpointer, step, meta) of a training workdir's checkpoint `step` (None: latest).

  For tools that read a finished or running training (sampling); `train_command` is
  named in the error when the workdir has no checkpoints yet.
  """
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise CheckpointError(f"no checkpoints in {directory!r}: train first with "
                          f"`{train_command} --config=... --workdir=...`")
  checkpoints = Checkpointer(directory)
  step = checkpoints.latest_step() if step is None else step
  if step is None or step not in checkpoints.all_steps():
    raise CheckpointError(f"checkpoint step {step} not found in {directory!r} "
                          f"(available: {checkpoints.all_steps()})")
  return checkpoints, step, checkpoints.restore_meta(step)


def shape_table(tree: Any) -> dict[str, list[int]]:
  """{"path/to/leaf": shape} of a pytree (what a checkpoint's meta records and checks)."""
  return {"/".join(str(getattr(k, "key", k)) for k in path): list(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def abstract_state(shapes: Any, sharding: Any) -> Any:
  """Restore targets: every leaf of `shapes` as a ShapeDtypeStruct placed on `sharding`."""
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes)


class StateLayout:
  """Mixin of a trainer whose `_init_state(seed)` builds a state with `g_params` and
  `d_params`, placed on `self.replicated`: its layout, traced once without computing."""

  @functools.cached_property
  def state_shapes(self) -> Any:
    """Shapes and dtypes of the train state (no computation, no memory)."""
    return jax.eval_shape(self._init_state, self.config.seed)

  def abstract_state(self) -> Any:
    """Shapes, dtypes and shardings of the train state (for restoring)."""
    return abstract_state(self.state_shapes, self.replicated)

  @functools.cached_property
  def parameter_shapes(self) -> dict[str, dict[str, list[int]]]:
    """{'generator': {path: shape}, 'discriminator': {...}} of trainable parameters."""
    state = self.state_shapes
    return {"generator": shape_table(state.g_params),
            "discriminator": shape_table(state.d_params)}


def _flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(_flatten(value, name + sep, sep))
    else:
      flat[name] = value
  return flat


# Model settings that change how the same function is computed, not what it is: a run may
# resume with them changed (logged like any other setting).
NOT_ARCHITECTURE = frozenset({"model.remat"})


def check_compatible(saved_meta: Mapping[str, Any], current_meta: Mapping[str, Any],
                     directory: str, step: int, model_keys: tuple[str, ...] = ("model",),
                     absent_means: Mapping[str, Any] | None = None) -> None:
  """Raises IncompatibleCheckpointError naming every architecture mismatch.

  Compares the model config sections and the parameter shapes. Other config
  differences (learning rate, number of steps, ...) are allowed and logged.
  `absent_means` gives config fields added after checkpoints were first written the
  value that a checkpoint without them was trained with ('model.output_bn_eps': 1e-5).
  """
  problems = []
  saved_cfg = {**(absent_means or {}), **_flatten(saved_meta.get("config", {}))}
  current_cfg = _flatten(json.loads(json.dumps(current_meta.get("config", {}))))
  for key in sorted(set(saved_cfg) | set(current_cfg)):
    old, new = saved_cfg.get(key, "<absent>"), current_cfg.get(key, "<absent>")
    if old == new:
      continue
    if key.split(".")[0] in model_keys and key not in NOT_ARCHITECTURE:
      problems.append(f"config {key}: checkpoint {old!r}, current {new!r}")
    elif jax.process_index() == 0:
      logging.warning("Resuming with a changed setting %s: checkpoint %r, current %r",
                      key, old, new)
  saved_shapes = _flatten(saved_meta.get("parameter_shapes", {}), sep="/")
  current_shapes = _flatten(current_meta.get("parameter_shapes", {}), sep="/")
  for name in sorted(set(saved_shapes) | set(current_shapes)):
    old, new = saved_shapes.get(name, "<absent>"), current_shapes.get(name, "<absent>")
    if old != new:
      problems.append(f"parameter {name}: checkpoint shape {old}, current {new}")
  if problems:
    shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
    raise IncompatibleCheckpointError(
        f"the checkpoint at {directory!r} (step {step}) was written for a different model "
        "and cannot be resumed with this config:\n  " + "\n  ".join(shown) +
        "\nThe checkpoint has not been modified. Use a new --workdir for this config, or pass "
        "the settings the checkpoint was trained with (they are saved in its meta/ item).")
