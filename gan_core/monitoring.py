"""The TensorBoard writer, host copies of device values, and the per-layer diagnostics
(flattened scalars, singular values, layer norms) the training loop logs."""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def create_writer(workdir: str):
  """A clu writer to TensorBoard under workdir/tensorboard on process 0 (the console gets
  one short line per log step from the training loop instead); on the other processes of
  a multi-host run a writer that writes nothing."""
  from clu import metric_writers
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.AsyncMultiWriter(
      [metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard"))])


def to_host(tree: Any) -> Any:
  """Replicated (possibly multi-host) arrays -> numpy, from this process's local copy."""
  def leaf(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return np.asarray(jax.device_get(x))
  return jax.tree.map(leaf, tree)


def flatten_scalars(tree: Any, prefix: str = "") -> dict[str, float]:
  """{'a/b/c': float} for a nested dict of scalars: top-level names stay as they are, nested
  ones (per-layer norms) are joined with '/'."""
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    flat[prefix + name] = float(leaf)
  return flat


def singular_values(spectral: Any, name: str) -> dict[str, float]:
  """Per-layer top singular values from a `spectral` collection's `sigma` entries,
  as `sigma/<name>/<layer>`, plus their maximum as `sigma_max/<name>`."""
  values = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(spectral):
    keys = [str(getattr(k, "key", k)) for k in path]
    if keys and keys[-1] == "sigma":
      values[f"sigma/{name}/" + "/".join(keys[:-1])] = float(np.asarray(leaf))
  if values:
    values[f"sigma_max/{name}"] = max(values.values())
  return values


def layer_norms(tree: Any) -> Any:
  """The L2 norm of every leaf, e.g. per-layer gradient norms (traceable, for jit)."""
  return jax.tree.map(lambda x: jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)))), tree)
