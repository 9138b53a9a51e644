"""Evaluation of a generator over the mesh: `Evaluator.measure(generate) -> {name: value}`.

The training loop (at its eval cadence) and the `evaluate` commands call `measure`
with a function that draws uint8 samples from G-EMA; the evaluator only measures:
it extracts Inception features on the mesh, compares them with the dataset's
statistics (computed once per dataset, resolution and sample count, cached as
`.npz` with `mu` and `sigma`, the pytorch-fid / TTUR format) and computes the
metrics of `config.eval.metrics` (any of `gan_core.eval.registry`: fid, is, kid,
swd, ms_ssim). Logging the results and keeping the best checkpoint is the caller's.

Generated images are quantised as the PGGAN code does, `round(127.5 x + 127.5)`
clipped to [0, 255]; reals come from the training data without augmentation.
Without Inception weights (no file, no network) evaluation says so once and
training goes on; an evaluation that fails for any other reason is logged with
its traceback and switched off, because no evaluation is worth a lost run. SWD
and MS-SSIM are defined from 16x16 on; at smaller PGGAN resolutions they are left
out. SWD compares `min(num_samples, swd_num_samples)` images of each set.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from gan_core import parallel
from gan_core.errors import ConfigError
from gan_core.eval import fid as fid_lib
from gan_core.eval import registry, weights
from gan_core.eval.features import InceptionFeatures


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "dataset"


class Evaluator:
  """Periodic sample-quality metrics for one training run (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh, *, dataset_id: str,
               real_batches: Callable[[int, int], Iterator[np.ndarray]],
               catch_errors: bool = True):
    """`real_batches(resolution, global_batch)` yields this process's uint8 share
    (global_batch / processes, H, W, 3) of consecutive real batches, unaugmented.
    With `catch_errors` (training), a failing evaluation switches evaluation off
    instead of raising."""
    self.config = config
    self.mesh = mesh
    self.dataset_id = dataset_id
    self.real_batches = real_batches
    self.catch_errors = catch_errors
    try:
      self.metrics = registry.parse(config.metrics, "config.eval.metrics")
    except registry.MetricError as e:
      raise ConfigError(str(e)) from e
    self.batch_size = -(-config.batch_size // mesh.devices.size) * mesh.devices.size
    self._extractor: InceptionFeatures | None = None
    self._disabled_reason: str | None = None
    self._reference: dict[int, dict[str, np.ndarray]] = {}

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
        if not self.catch_errors:
          raise
        self._disable(f"{e} Training continues without FID/IS/KID.")
        return None
      self._extractor = InceptionFeatures(variables, mesh=self.mesh,
                                          batch_size=self.batch_size, progress=False)
    return self._extractor

  # ------------------------------------------------------------------ inputs

  def _collect(self, batches: Iterator[jax.Array], count: int, features: bool,
               images: bool) -> dict[str, np.ndarray]:
    """Inception features and/or host images of the first `count` images of `batches`."""
    parts: dict[str, list[np.ndarray]] = {}
    seen = 0
    for batch in batches:
      if features:
        for name, value in parallel.fetch_to_host(self._extractor.on_device(batch)).items():
          parts.setdefault(name, []).append(value)
      if images:
        parts.setdefault("images", []).append(parallel.fetch_to_host(batch))
      seen += batch.shape[0]
      if seen >= count:
        break
    return {name: np.concatenate(value)[:count] for name, value in parts.items()}

  def _stats_path(self, resolution: int) -> str:
    directory = self.config.stats_dir or os.path.join(weights.cache_dir(), "fid_stats")
    return os.path.join(os.path.expanduser(directory),
                        f"{_slug(self.dataset_id)}-{resolution}px-{self.config.num_samples}.npz")

  def _swd_count(self) -> int:
    return min(self.config.num_samples, self.config.get("swd_num_samples", 4096))

  def reference(self, resolution: int, metrics: list[str]) -> dict[str, np.ndarray]:
    """What `metrics` need of the real data at `resolution`: FID statistics (`mu`, `sigma`)
    and KID's features (`pool`), computed once and cached in `stats_dir`, and SWD's
    images (`images`, kept in memory)."""
    reference = self._reference.setdefault(resolution, {})
    need_stats = registry.needs(metrics, "real_statistics") and "mu" not in reference
    need_pool = registry.needs(metrics, "real_pool") and "pool" not in reference
    need_images = registry.needs(metrics, "real_images") and "images" not in reference
    path = self._stats_path(resolution)
    if (need_stats or need_pool) and os.path.exists(path):
      with np.load(path) as data:
        cached = {k: data[k] for k in data.files}
      if "mu" in cached and (not need_pool or "pool" in cached):
        logging.info("Dataset statistics from %s.", path)
        reference.update(cached)
        need_stats = need_pool = False
    if not (need_stats or need_pool or need_images):
      return reference
    start = time.time()

    def global_batches():
      for local in self.real_batches(resolution, self.batch_size):
        yield parallel.global_array_from_local(local, self.mesh)

    count = self.config.num_samples if (need_stats or need_pool) else self._swd_count()
    collected = self._collect(global_batches(), count, features=need_stats or need_pool,
                              images=need_images)
    if need_images:
      reference["images"] = collected["images"][:self._swd_count()]
    if need_stats or need_pool:
      mu, sigma = fid_lib.feature_statistics(collected["pool"])
      reference.update(mu=mu, sigma=sigma, pool=collected["pool"])
      if jax.process_index() == 0:  # KID's features are cached only when KID asks for them.
        fid_lib.save_statistics(path, mu, sigma, num_images=np.int64(len(collected["pool"])),
                                **({"pool": collected["pool"]} if need_pool else {}))
        logging.info("Dataset statistics of %d images at %dpx written to %s (%.0f s).",
                     len(collected["pool"]), resolution, path, time.time() - start)
    return reference

  # ------------------------------------------------------------------ measuring

  def measure(self, generate: Callable[[jax.Array], jax.Array], *,
              resolution: int) -> dict[str, float] | None:
    """The metrics of `config.metrics` defined at `resolution`; None when evaluation is off.

    `generate(key)` returns `self.batch_size` uint8 (N, H, W, 3) G-EMA samples as a
    batch-sharded global array (`gan_core.images.images_to_uint8` quantisation); it is
    called with the same keys at every evaluation (`config.seed`).
    """
    if not self.active:
      return None
    if not self.catch_errors:
      return self._measure(generate, resolution)
    try:
      return self._measure(generate, resolution)
    except Exception as e:  # noqa: BLE001 - an evaluation bug must not end the run.
      logging.exception("Evaluation failed.")
      self._disable(f"evaluation failed with {type(e).__name__}: {e}")
      return None

  def _measure(self, generate, resolution) -> dict[str, float] | None:
    metrics = registry.defined_at(self.metrics, resolution)
    needs_features = registry.needs(metrics, "fake_features")
    if needs_features and self._get_extractor() is None:
      return None
    reference = self.reference(resolution, metrics)
    keys = jax.random.split(jax.random.key(self.config.seed),
                            -(-self.config.num_samples // self.batch_size))
    fakes = self._collect((generate(key) for key in keys), self.config.num_samples,
                          features=needs_features,
                          images=registry.needs(metrics, "fake_images"))
    inputs = registry.Inputs(
        fake_features=fakes if needs_features else None, fake_images=fakes.get("images"),
        real_statistics=(reference["mu"], reference["sigma"]) if "mu" in reference else None,
        real_pool=reference.get("pool"), real_images=reference.get("images"))
    options = registry.Options(kid_subset_size=min(1000, self.config.num_samples))
    return registry.evaluate(metrics, inputs, options)
