"""Finding, verifying, converting and caching the FID Inception weights.

The weights are pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (torch-
fidelity's `weights-inception-2015-12-05-6726825d.pth` has the same layout).
They are read by `torch_pickle`, which needs no PyTorch and refuses anything
but tensors. A local path always works; without one the cache is searched and,
only when asked, the pytorch-fid file is downloaded into it and its hash
checked. Converted parameters are cached as `.npz` keyed by the file's SHA-256,
so later loads skip the conversion.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gan_core.images import save_npz_atomic

from gan_core.eval.inception import FIDInceptionV3, OUTPUT_NAMES

PYTORCH_FID_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
PYTORCH_FID_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
# torch.hub's convention: the file name carries the first 8 hex digits of its SHA-256.
PYTORCH_FID_SHA256_PREFIX = "6726825d"
# Other names the same weights are published under, looked for in the cache too.
KNOWN_FILENAMES = (PYTORCH_FID_FILENAME, "weights-inception-2015-12-05-6726825d.pth")
CACHE_ENV = "GAN_CORE_CACHE"
WEIGHTS_ENV = "GAN_CORE_INCEPTION_WEIGHTS"


class InceptionWeightsUnavailable(RuntimeError):
  """No Inception weight file could be found (and none could be downloaded)."""


class InceptionWeightsError(ValueError):
  """A weight file exists but is not the FID Inception (wrong keys, shapes or hash)."""


def cache_dir() -> str:
  """`$GAN_CORE_CACHE`, or `~/.cache/gan_core`."""
  return os.path.expanduser(os.environ.get(CACHE_ENV, os.path.join("~", ".cache", "gan_core")))


def sha256_of_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _check_hash(path: str, expected: str) -> None:
  actual = sha256_of_file(path)
  if not actual.startswith(expected.lower()):
    raise InceptionWeightsError(
        f"{path} has SHA-256 {actual}, expected one starting with {expected}. The file is "
        "corrupt or not the FID Inception weights; delete it and download it again.")


def download_weights(destination_dir: str | None = None, url: str = PYTORCH_FID_URL,
                     sha256_prefix: str = PYTORCH_FID_SHA256_PREFIX,
                     progress: bool = True) -> str:
  """Downloads the pytorch-fid weights into the cache, checks the hash, returns the path.

  The file is written to a temporary name and moved into place only after the
  hash matches, so an interrupted download never leaves a bad file behind.
  """
  destination_dir = destination_dir or cache_dir()
  os.makedirs(destination_dir, exist_ok=True)
  destination = os.path.join(destination_dir, os.path.basename(url))
  fd, partial = tempfile.mkstemp(dir=destination_dir, suffix=".partial")
  try:
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
      total = int(response.headers.get("Content-Length") or 0)
      done = 0
      for chunk in iter(lambda: response.read(1 << 20), b""):
        out.write(chunk)
        done += len(chunk)
        if progress and total:
          print(f"\rdownloading {os.path.basename(url)}: {100 * done // total}%", end="",
                flush=True)
      if progress:
        print()
    _check_hash(partial, sha256_prefix)
    os.replace(partial, destination)
  except OSError as e:
    raise InceptionWeightsUnavailable(
        f"Could not download the Inception weights from {url} ({e}). Download the file by hand "
        f"and pass its path (--inception_weights=FILE or ${WEIGHTS_ENV}), or put it in "
        f"{destination_dir}.") from e
  finally:
    if os.path.exists(partial):
      os.remove(partial)
  return destination


def find_weights(path: str | None = None, *, download: bool = False) -> str:
  """Resolves the weight file: `path`, then `$GAN_CORE_INCEPTION_WEIGHTS`, then the cache.

  With `download=True` a missing file is fetched into the cache. Raises
  `InceptionWeightsUnavailable` with instructions otherwise.
  """
  path = path or os.environ.get(WEIGHTS_ENV) or None
  if path:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
      raise InceptionWeightsUnavailable(
          f"Inception weight file {path} does not exist. Pass the path of pytorch-fid's "
          f"{PYTORCH_FID_FILENAME} (from {PYTORCH_FID_URL}).")
    return path
  for name in KNOWN_FILENAMES:
    candidate = os.path.join(cache_dir(), name)
    if os.path.isfile(candidate):
      return candidate
  if download:
    return download_weights()
  raise InceptionWeightsUnavailable(
      "No FID Inception weights: pass --inception_weights=FILE (pytorch-fid's "
      f"{PYTORCH_FID_FILENAME}, from {PYTORCH_FID_URL}), set ${WEIGHTS_ENV}, put the file in "
      f"{cache_dir()}, or allow the download.")


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """Flat `a/b/c` parameter paths of `FIDInceptionV3` and their shapes."""
  model = FIDInceptionV3(outputs=OUTPUT_NAMES)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 75, 75, 3), jnp.uint8))
  flat = traverse_util.flatten_dict(shapes["params"], sep="/")
  return {k: tuple(v.shape) for k, v in flat.items()}


_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _flax_path(key: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]] | None:
  """Maps a state-dict key to its Flax path and layout conversion (None: ignored)."""
  parts = key.split(".")
  if parts[-1] == "num_batches_tracked":
    return None
  if key == "fc.weight":
    return "fc/kernel", np.transpose
  if key == "fc.bias":
    return "fc/bias", lambda a: a
  if len(parts) >= 3 and parts[-2] == "conv" and parts[-1] == "weight":
    return "/".join(parts[:-1] + ["kernel"]), lambda a: np.transpose(a, (2, 3, 1, 0))
  if len(parts) >= 3 and parts[-2] == "bn" and parts[-1] in _BN_NAMES:
    return "/".join(parts[:-1] + [_BN_NAMES[parts[-1]]]), lambda a: a
  return "?" + key, lambda a: a


def params_from_state_dict(state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
  """Converts the `.pth` state dict into `FIDInceptionV3` params (validated, float32)."""
  expected = expected_shapes()
  flat, unexpected = {}, []
  for key, value in state_dict.items():
    mapped = _flax_path(key)
    if mapped is None:
      continue
    path, convert = mapped
    if path not in expected:
      unexpected.append(key)
      continue
    flat[path] = np.ascontiguousarray(convert(np.asarray(value)), dtype=np.float32)
  missing = sorted(set(expected) - set(flat))
  wrong = [f"{p}: file {flat[p].shape}, network {expected[p]}" for p in flat
           if flat[p].shape != expected[p]]
  if missing or unexpected or wrong:
    details = []
    if missing:
      details.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
      details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong:
      details.append(f"{len(wrong)} with wrong shapes (e.g. {wrong[:3]})")
    raise InceptionWeightsError(
        "The weight file is not the FID Inception (inception-2015-12-05) in pytorch-fid's "
        "layout: " + "; ".join(details) + ".")
  return traverse_util.unflatten_dict(flat, sep="/")


def load_inception_params(path: str | None = None, *, download: bool = False,
                          use_cache: bool = True) -> dict[str, Any]:
  """Loads (and caches) the FID Inception params: `{'params': tree}` for `FIDInceptionV3`.

  `path` as in `find_weights`. The converted tree is cached under
  `cache_dir()/converted/<sha256>.npz`; a cache entry that cannot be read is
  rebuilt from the weight file.
  """
  path = find_weights(path, download=download)
  digest = sha256_of_file(path)
  cached = os.path.join(cache_dir(), "converted", f"inception-{digest}.npz")
  if use_cache and os.path.isfile(cached):
    try:
      with np.load(cached) as data:
        flat = {k: data[k] for k in data.files}
      expected = expected_shapes()
      if {k: v.shape for k, v in flat.items()} == expected:
        return {"params": traverse_util.unflatten_dict(flat, sep="/")}
    except (OSError, ValueError, KeyError):
      pass
  from gan_core.eval import torch_pickle
  try:
    state_dict = torch_pickle.load_state_dict(path)
  except torch_pickle.WeightFileError as e:
    raise InceptionWeightsError(f"Cannot read Inception weights {path}: {e}") from e
  params = params_from_state_dict(state_dict)
  if use_cache:
    _write_cache(cached, traverse_util.flatten_dict(params, sep="/"))
  return {"params": params}


def _write_cache(path: str, flat: dict[str, np.ndarray]) -> None:
  """Best effort (a read-only cache only costs the conversion next time); atomic."""
  try:
    save_npz_atomic(path, **flat)
  except OSError:
    pass



def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """Random weights in the layout of pytorch-fid's `.pth` (OIHW, with `num_batches_tracked`).

  For tests and benchmarks, which must not need the real file: conv weights are
  He-scaled and the BatchNorm statistics near identity, so activations stay O(1)
  through the 94 conv units and the features are far from degenerate.
  """
  rng = np.random.default_rng(seed)
  shapes = expected_shapes()
  bn_names = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
  state: dict[str, np.ndarray] = {}
  for unit in sorted({path.rsplit("/", 2)[0] for path in shapes if "/conv/" in path}):
    key = unit.replace("/", ".")
    h, w, cin, cout = shapes[f"{unit}/conv/kernel"]
    state[f"{key}.conv.weight"] = rng.normal(0, np.sqrt(2 / (h * w * cin)),
                                             (cout, cin, h, w)).astype(np.float32)
    for ours, theirs in bn_names.items():
      if ours in ("scale", "var"):
        value = rng.uniform(0.5, 1.5, cout)
      else:
        value = rng.normal(0, 0.2, cout)
      state[f"{key}.bn.{theirs}"] = value.astype(np.float32)
    state[f"{key}.bn.num_batches_tracked"] = np.array(0, np.int64)
  state["fc.weight"] = rng.normal(0, 2048 ** -0.5, (1008, 2048)).astype(np.float32)
  state["fc.bias"] = rng.normal(0, 0.1, 1008).astype(np.float32)
  return state
