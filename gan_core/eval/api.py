"""`gan_core.eval.compute`: sample-quality metrics of image sets, from Python.

  from gan_core.eval import compute
  compute("fid,kid", fake="samples/", real="real.npz")          # folders or .npz
  compute("fid", fake=images_uint8, stats="cifar10_stats.npz")  # arrays, FID statistics
  compute("fid,is", fake=lambda key: my_generate(key), num_samples=10_000,
          stats="cifar10_stats.npz")                             # a generate function
  # -> {'fid': ..., 'is_mean': ..., 'is_std': ...}

`fake` (the evaluated set, A) is a folder of images (sorted file-name order, any size),
an `.npz` with `images` (uint8 N x H x W x 3), a uint8 array, or a function of a
`jax.random` key returning a uint8 batch (N, H, W, 3) (numpy or jax), called with
successive keys of `seed` until `num_samples` images are drawn. `real` (the reference,
B) is a folder, `.npz` or array; for FID alone `stats` (an `.npz` with `mu` and `sigma`,
the pytorch-fid / TTUR format, or a `(mu, sigma)` pair) can replace it. The metrics and
what they need are listed in `gan_core.eval.registry`; the command line
`python -m gan_core.metrics` is a thin wrapper around this function.

The Inception weights are pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`:
`inception_weights=FILE`, $GAN_CORE_INCEPTION_WEIGHTS, the cache ($GAN_CORE_CACHE,
default ~/.cache/gan_core), or `download_inception=True` (checked against its hash).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Sequence, Union

import numpy as np

from gan_core.eval import registry
from gan_core.eval.registry import MetricError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


class InputError(MetricError):
  """An input path, file or array the metrics cannot use."""


class ImageSet:
  """One input: an image folder, an `.npz` of images or of FID statistics, or an array."""

  def __init__(self, source: Union[str, os.PathLike, np.ndarray], name: str = "input"):
    self.path = name if isinstance(source, np.ndarray) else os.fspath(source)
    self.files: list[str] | None = None
    self.images: np.ndarray | None = None
    self.statistics: tuple[np.ndarray, np.ndarray] | None = None
    if isinstance(source, np.ndarray):
      self.images = _checked_images(source, name)
      return
    path = self.path
    if not os.path.exists(path):
      raise InputError(f"{path} does not exist (expected a folder of images or an .npz).")
    if os.path.isdir(path):
      self.files = sorted(os.path.join(path, f) for f in os.listdir(path)
                          if f.lower().endswith(IMAGE_EXTENSIONS))
      if not self.files:
        raise InputError(f"{path} has no images (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    elif path.endswith(".npz"):
      self._load_npz()
    else:
      raise InputError(f"{path} is neither a folder of images nor an .npz file.")

  def _load_npz(self) -> None:
    try:
      data = np.load(self.path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise InputError(f"Cannot read {self.path}: {e}") from e
    with data:
      if "images" in data.files:
        self.images = _checked_images(data["images"], f"{self.path}: 'images'")
      elif "mu" in data.files or "sigma" in data.files:
        from gan_core.eval.fid import StatisticsFileError, load_statistics
        try:
          self.statistics = load_statistics(self.path)
        except StatisticsFileError as e:
          raise InputError(str(e)) from e
      else:
        raise InputError(f"{self.path} has arrays {sorted(data.files)}: expected 'images' "
                         "(uint8 N x H x W x 3) or FID statistics 'mu' and 'sigma'.")

  @property
  def is_statistics(self) -> bool:
    return self.statistics is not None

  def __len__(self) -> int:
    return len(self.files) if self.files is not None else len(self.images)

  def iterate(self) -> Iterator[np.ndarray]:
    """Images one at a time, uint8 (H, W, 3), RGB."""
    if self.images is not None:
      yield from self.images
      return
    from PIL import Image
    for file in self.files:
      try:
        with Image.open(file) as image:
          array = np.asarray(image.convert("RGB"), np.uint8)
      except Exception as e:  # PIL raises many types for broken files (ValueError, TypeError...).
        raise InputError(f"Cannot read image {file}: {e}. Remove or replace the file.") from e
      yield array

  def as_array(self, what: str) -> np.ndarray:
    """All images as one uint8 array (they must share one size)."""
    if self.is_statistics:
      raise InputError(f"{what} needs images, but {self.path} holds only FID statistics.")
    if self.images is not None:
      return self.images
    images = list(self.iterate())
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
      raise InputError(f"{what} needs images of one size; {self.path} has {sorted(shapes)[:4]}.")
    return np.stack(images)


def _checked_images(images: Any, what: str) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise InputError(f"{what} is {images.dtype}; it must be uint8 (0..255). Quantise first, "
                     "e.g. np.clip(np.round(127.5 * x + 127.5), 0, 255).astype(np.uint8).")
  if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
    raise InputError(f"{what} has shape {images.shape}; expected (N, H, W, 3) with N > 0.")
  return images


def _statistics(stats: Any) -> tuple[np.ndarray, np.ndarray]:
  if isinstance(stats, (str, os.PathLike)):
    statistics = ImageSet(stats).statistics
    if statistics is None:
      raise InputError(f"stats={os.fspath(stats)!r} holds images, not FID statistics "
                       "('mu', 'sigma'); pass it as real= instead.")
    return statistics
  try:
    mu, sigma = stats["mu"], stats["sigma"]
  except (TypeError, KeyError, IndexError):
    mu, sigma = stats
  return np.asarray(mu, np.float64), np.asarray(sigma, np.float64)


def _generated(generate: Callable, num_samples: int, seed: int) -> Iterator[np.ndarray]:
  """uint8 host batches of `generate(key)` until `num_samples` images."""
  import jax
  from gan_core import parallel
  key, drawn = jax.random.key(seed), 0
  while drawn < num_samples:
    key, sub = jax.random.split(key)
    batch = generate(sub)
    batch = _checked_images(parallel.fetch_to_host(batch) if isinstance(batch, jax.Array)
                            else batch, "a batch of the generate function")
    batch = batch[:num_samples - drawn]
    drawn += len(batch)
    yield batch


def compute(metrics: str | Sequence[str] = "fid,is", fake: Any = None, real: Any = None, *,
            stats: Any = None, num_samples: int | None = None, seed: int | None = None,
            inception_weights: str | None = None, download_inception: bool = False,
            batch_size: int = 64, bf16: bool = False, kid_subset_size: int = 1000,
            kid_subsets: int = 100, progress: bool = False, mesh: Any = None,
            save_stats: str | None = None, dump_features: str | None = None
            ) -> dict[str, float]:
  """The requested metrics of `fake` (against `real` / `stats`); see the module docstring.

  `seed` seeds the generate function's keys (default 0), KID's subsets (default 2020) and
  SWD's patches and directions (default 0). `save_stats` writes A's FID statistics and
  `dump_features` A's Inception features (pool, logits_unbiased) to `.npz` files; with
  either, `metrics` may be empty.
  """
  names = registry.parse(metrics)
  if fake is None:
    raise InputError("compute: give the evaluated set as fake= (folder, .npz, uint8 array or "
                     "generate function).")
  generated = callable(fake) and not isinstance(fake, np.ndarray)
  if generated and not num_samples:
    raise InputError("compute: a generate function needs num_samples=.")
  a = None if generated else ImageSet(fake, "fake")
  b = None if real is None else ImageSet(real, "real")
  statistics_source = "stats="
  if b is not None and b.is_statistics:
    if stats is not None:
      raise InputError("compute: give FID statistics either as real= or as stats=, not both.")
    b, stats, statistics_source = None, b.statistics, b.path
  reference_statistics = None if stats is None else _statistics(stats)
  compares = [m for m in names if registry.METRICS[m].compares]
  if compares and b is None and reference_statistics is None:
    raise InputError(f"{','.join(compares)} compare two sets: give a second input B, the real "
                     "images (real=; for FID alone, statistics also do: stats=).")
  needs_real_images = [m.upper() for m in names if registry.METRICS[m].real_pool
                       or registry.METRICS[m].real_images]
  if needs_real_images and b is None:
    raise InputError(f"{statistics_source} holds only FID statistics; "
                     f"{' and '.join(needs_real_images)} need the real images.")
  if a is not None and a.is_statistics:
    if [m for m in names if m != "fid"] or save_stats or dump_features:
      raise InputError(f"{a.path} holds only FID statistics; IS, KID, SWD, MS-SSIM, save_stats "
                       "and dump_features need images.")

  options = registry.Options(seed=seed, kid_subset_size=kid_subset_size,
                             kid_subsets=kid_subsets)
  inputs = registry.Inputs()
  fake_needs_features = registry.needs(names, "fake_features") or save_stats or dump_features
  real_needs_features = b is not None and (
      registry.needs(names, "real_pool")
      or (registry.needs(names, "real_statistics") and reference_statistics is None))
  extractor = None
  if (fake_needs_features and (a is None or not a.is_statistics)) or real_needs_features:
    extractor = _make_extractor(inception_weights, download_inception, batch_size, bf16,
                                progress, mesh)
  keep_fake_images = registry.needs(names, "fake_images")

  if generated:
    parts: dict[str, list[np.ndarray]] = {}
    images = []
    for batch in _generated(fake, num_samples, 0 if seed is None else seed):
      if extractor is not None and fake_needs_features:
        for name, value in extractor(batch, description="fake").items():
          parts.setdefault(name, []).append(value)
      if keep_fake_images:
        images.append(batch)
    if parts:
      inputs.fake_features = {name: np.concatenate(v) for name, v in parts.items()}
    if images:
      inputs.fake_images = np.concatenate(images)
  elif a.is_statistics:
    fake_statistics = a.statistics
  else:
    if fake_needs_features:
      inputs.fake_features = extractor(a.iterate(), total=len(a), description="fake")
    if keep_fake_images:
      inputs.fake_images = a.as_array(",".join(m for m in names
                                               if registry.METRICS[m].fake_images))
  if real_needs_features:
    real_features = extractor(b.iterate(), total=len(b), description="real")
    inputs.real_pool = real_features["pool"]
  if registry.needs(names, "real_statistics"):
    if reference_statistics is None:
      from gan_core.eval import fid
      reference_statistics = fid.feature_statistics(inputs.real_pool)
    inputs.real_statistics = reference_statistics
  if registry.needs(names, "real_images"):
    inputs.real_images = b.as_array(",".join(m for m in names
                                             if registry.METRICS[m].real_images))

  from gan_core.images import save_npz_atomic
  if dump_features:
    save_npz_atomic(dump_features, pool=inputs.fake_features["pool"],
                    logits_unbiased=inputs.fake_features["logits_unbiased"])
  if save_stats:
    from gan_core.eval import fid
    mu, sigma = fid.feature_statistics(inputs.fake_features["pool"])
    fid.save_statistics(save_stats, mu, sigma,
                        num_images=np.int64(len(inputs.fake_features["pool"])))
  if a is not None and a.is_statistics:  # FID of two statistics files.
    from gan_core.eval import fid
    return {"fid": fid.frechet_distance(*fake_statistics, *inputs.real_statistics)}
  return registry.evaluate(names, inputs, options)


def _make_extractor(weights_path, download, batch_size, bf16, progress, mesh):
  import jax.numpy as jnp
  from gan_core.eval import features, weights
  try:
    variables = weights.load_inception_params(weights_path or None, download=download)
  except weights.InceptionWeightsUnavailable as e:
    raise InputError(f"{e} (or pass download_inception=True / --download_inception).") from e
  except weights.InceptionWeightsError as e:
    raise InputError(str(e)) from e
  return features.InceptionFeatures(
      variables, mesh=mesh, batch_size=batch_size, outputs=("pool", "logits_unbiased"),
      dtype=jnp.bfloat16 if bf16 else jnp.float32, progress=progress)
