"""Evaluation during training: FID (and IS, KID) of G-EMA samples, logged and tracked.

Every `eval_every_steps` (BigGAN) / `eval_every_kimg` (PGGAN) the trainer calls
`Evaluator.evaluate` with a function that draws uint8 samples from G-EMA. The
evaluator extracts Inception features on the mesh, compares them with the
dataset's statistics (computed once per dataset, resolution and sample count,
cached as `.npz` with `mu` and `sigma`, the pytorch-fid / TTUR format), writes
`eval/<metric>` scalars to TensorBoard and one JSON line per evaluation to
`<workdir>/metrics.jsonl`, and keeps the checkpoint with the best FID so far in
`<workdir>/best_fid/`.

Generated images are quantised as the PGGAN code does, `round(127.5 x + 127.5)`
clipped to [0, 255]; reals come from the training data without augmentation.
Without Inception weights (no file, no network) evaluation says so once and
training goes on; an evaluation that fails for any other reason is logged with
its traceback and switched off, because no evaluation is worth a lost run.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from gan_core import checkpointing, files, parallel
from gan_core.eval import fid as fid_lib
from gan_core.eval import inception_score, kid, weights
from gan_core.errors import ConfigError
from gan_core.eval.features import InceptionFeatures

METRICS_FILE = "metrics.jsonl"
BEST_DIR = "best_fid"
SUPPORTED = ("fid", "is", "kid")


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "dataset"


class Evaluator:
  """Periodic sample-quality metrics for one training run (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, mesh: Mesh, *,
               dataset_id: str, real_batches: Callable[[int, int], Iterator[np.ndarray]],
               writer: Any):
    """`real_batches(resolution, global_batch)` yields this process's uint8 share
    (global_batch / processes, H, W, 3) of consecutive real batches, unaugmented."""
    self.config = config
    self.workdir = workdir
    self.mesh = mesh
    self.dataset_id = dataset_id
    self.real_batches = real_batches
    self.writer = writer
    self.metrics = [m.strip() for m in config.metrics.split(",") if m.strip()]
    unknown = [m for m in self.metrics if m not in SUPPORTED]
    if unknown:
      raise ConfigError(f"config.eval.metrics: unknown {unknown}; choose from {SUPPORTED}.")
    self.batch_size = -(-config.batch_size // mesh.devices.size) * mesh.devices.size
    self._extractor: InceptionFeatures | None = None
    self._disabled_reason: str | None = None
    self._reference: dict[int, dict[str, np.ndarray]] = {}
    self._best_checkpoints: checkpointing.Checkpointer | None = None
    self.best_fid = self._best_so_far()

  # ------------------------------------------------------------------ set-up

  @property
  def active(self) -> bool:
    return self._disabled_reason is None

  def _disable(self, reason: str) -> None:
    self._disabled_reason = reason
    logging.warning("Evaluation is off for the rest of this run: %s", reason)
    if jax.process_index() == 0:
      print(f"warning: evaluation is off for the rest of this run: {reason}", flush=True)

  def _get_extractor(self) -> InceptionFeatures | None:
    if self._extractor is None and self.active:
      try:
        variables = weights.load_inception_params(self.config.inception_weights or None,
                                                  download=self.config.download_inception)
      except (weights.InceptionWeightsUnavailable, weights.InceptionWeightsError) as e:
        self._disable(f"{e} Training continues without FID/IS/KID.")
        return None
      self._extractor = InceptionFeatures(variables, mesh=self.mesh,
                                          batch_size=self.batch_size, progress=False)
    return self._extractor

  def _best_so_far(self) -> float:
    """The best FID logged by earlier runs in this workdir (a resumed run keeps it)."""
    best = float("inf")
    path = os.path.join(self.workdir, METRICS_FILE)
    if files.exists(path):
      for line in files.read_text(path).splitlines():
        try:
          value = json.loads(line).get("fid")
        except json.JSONDecodeError:
          continue  # A line cut by a crash.
        if isinstance(value, (int, float)) and np.isfinite(value):
          best = min(best, float(value))
    return best

  # ------------------------------------------------------------------ features

  def _features(self, batches: Iterator[jax.Array], count: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {"pool": [], "logits_unbiased": []}
    seen = 0
    for images in batches:
      features = parallel.fetch_to_host(self._extractor.on_device(images))
      for name in parts:
        parts[name].append(features[name])
      seen += images.shape[0]
      if seen >= count:
        break
    return {name: np.concatenate(value)[:count] for name, value in parts.items()}

  def _stats_path(self, resolution: int) -> str:
    directory = self.config.stats_dir or os.path.join(weights.cache_dir(), "fid_stats")
    return os.path.join(os.path.expanduser(directory),
                        f"{_slug(self.dataset_id)}-{resolution}px-{self.config.num_samples}.npz")

  def reference(self, resolution: int) -> dict[str, np.ndarray]:
    """Dataset statistics (and features, for KID) at `resolution`, computed once and cached."""
    if resolution in self._reference:
      return self._reference[resolution]
    path = self._stats_path(resolution)
    need_features = "kid" in self.metrics
    if os.path.exists(path):
      with np.load(path) as data:
        cached = {k: data[k] for k in data.files}
      if "mu" in cached and (not need_features or "pool" in cached):
        logging.info("Dataset statistics from %s.", path)
        self._reference[resolution] = cached
        return cached
    start = time.time()

    def global_batches():
      for local in self.real_batches(resolution, self.batch_size):
        yield parallel.global_array_from_local(local, self.mesh)

    features = self._features(global_batches(), self.config.num_samples)
    mu, sigma = fid_lib.feature_statistics(features["pool"])
    reference = {"mu": mu, "sigma": sigma}
    if need_features:
      reference["pool"] = features["pool"]
    if jax.process_index() == 0:
      fid_lib.save_statistics(path, mu, sigma, num_images=np.int64(len(features["pool"])),
                              **({"pool": features["pool"]} if need_features else {}))
      logging.info("Dataset statistics of %d images at %dpx written to %s (%.0f s).",
                   len(features["pool"]), resolution, path, time.time() - start)
    self._reference[resolution] = reference
    return reference

  # ------------------------------------------------------------------ evaluation

  def evaluate(self, step: int, generate: Callable[[jax.Array], jax.Array], *,
               resolution: int, extra: dict[str, Any] | None = None) -> dict[str, float] | None:
    """Runs the metrics; None when evaluation is off.

    `generate(key)` returns `self.batch_size` uint8 (N, H, W, 3) G-EMA samples as a
    batch-sharded global array (`gan_core.images.images_to_uint8` quantisation).
    """
    if not self.active:
      return None
    try:
      return self._evaluate(step, generate, resolution, extra or {})
    except Exception as e:  # noqa: BLE001 - an evaluation bug must not end the run.
      logging.exception("Evaluation at step %d failed.", step)
      self._disable(f"evaluation at step {step} failed with {type(e).__name__}: {e}")
      return None

  def _evaluate(self, step, generate, resolution, extra) -> dict[str, float] | None:
    if self._get_extractor() is None:
      return None
    start = time.time()
    reference = self.reference(resolution)
    keys = jax.random.split(jax.random.key(self.config.seed),
                            -(-self.config.num_samples // self.batch_size))
    fakes = self._features((generate(key) for key in keys),
                           self.config.num_samples)
    results: dict[str, float] = {}
    if "fid" in self.metrics:
      results["fid"] = fid_lib.frechet_distance(*fid_lib.feature_statistics(fakes["pool"]),
                                                reference["mu"], reference["sigma"])
    if "is" in self.metrics:
      results["is_mean"], results["is_std"] = inception_score.inception_score(
          fakes["logits_unbiased"])
    if "kid" in self.metrics:
      subset = min(1000, len(fakes["pool"]), len(reference["pool"]))
      results["kid_mean"], results["kid_std"] = kid.kernel_inception_distance(
          fakes["pool"], reference["pool"], subset_size=subset)
    seconds = time.time() - start
    if jax.process_index() == 0:
      self.writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
      record = {"step": step, **extra, "resolution": resolution,
                "num_samples": self.config.num_samples, **results, "seconds": round(seconds, 1)}
      files.makedirs(self.workdir)
      files.append_text(os.path.join(self.workdir, METRICS_FILE), json.dumps(record) + "\n")
    logging.info("Evaluation at step %d (%d samples, %.0f s): %s", step,
                 self.config.num_samples, seconds,
                 ", ".join(f"{k} {v:.4g}" for k, v in results.items()))
    return results

  def maybe_keep_best(self, step: int, results: dict[str, float] | None, state: Any,
                      meta: dict[str, Any]) -> bool:
    """Saves `state` to `<workdir>/best_fid` when FID improved; returns whether it did."""
    if not results or "fid" not in results or not self.config.keep_best:
      return False
    value = results["fid"]
    if not np.isfinite(value) or value >= self.best_fid:
      return False
    if self._best_checkpoints is None:
      self._best_checkpoints = checkpointing.Checkpointer(
          os.path.join(self.workdir, BEST_DIR), max_to_keep=1)
    self._best_checkpoints.save(step, state, {**meta, "fid": value})
    self.best_fid = value
    logging.info("New best FID %.4g at step %d, kept in %s.", value, step,
                 self._best_checkpoints.directory)
    return True

  def close(self) -> None:
    if self._best_checkpoints is not None:
      self._best_checkpoints.close()
