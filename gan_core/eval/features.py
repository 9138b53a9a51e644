"""Inception feature extraction, jitted and sharded over the `gan_core` mesh.

Images of one size are grouped into batches of a fixed global size (the last
batch is zero-padded and trimmed), so each distinct image size compiles once.
The batch axis is sharded over every device of the mesh and the weights are
replicated. float32 with the highest matmul precision is the default, for
parity with the reference tools; `dtype=jnp.bfloat16` trades that for speed.
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from gan_core import parallel
from gan_core.eval.inception import FIDInceptionV3

OUTPUT_DIMS = {"64": 64, "192": 192, "768": 768, "pool": 2048, "logits_unbiased": 1008,
               "logits": 1008}
DEFAULT_OUTPUTS = ("pool", "logits_unbiased")


class InceptionFeatures:
  """Callable feature extractor: uint8 NHWC images in, dict of float32 features out."""

  def __init__(self, variables: dict[str, Any], *, mesh: Mesh | None = None,
               batch_size: int = 64, outputs: Sequence[str] = DEFAULT_OUTPUTS,
               dtype: Any = jnp.float32, progress: bool = True):
    self.mesh = mesh or parallel.make_mesh()
    num_devices = self.mesh.devices.size
    # Round up so that every batch splits evenly over the devices.
    self.batch_size = -(-max(1, batch_size) // num_devices) * num_devices
    self.outputs = tuple(outputs)
    self.progress = progress
    self.variables = jax.device_put(variables, parallel.replicated(self.mesh))
    self._apply = _compiled_network(self.outputs, jnp.dtype(dtype), self.mesh)

  def on_device(self, images: jax.Array) -> dict[str, jax.Array]:
    """Features of a (global, batch-sharded) uint8 array whose batch divides over the mesh."""
    with jax.default_matmul_precision("highest"):
      return self._apply(self.variables, images)

  def __call__(self, images: np.ndarray | Iterable[np.ndarray], *,
               total: int | None = None, description: str = "inception") -> dict[str, np.ndarray]:
    """Features of `images`: a uint8 (N, H, W, 3) array or an iterable of (H, W, 3) images.

    Images keep their order; consecutive images of the same size share batches.
    """
    if isinstance(images, np.ndarray):
      _check_uint8_images(images)
      total = len(images)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}
    progress = _progress_bar(total, description) if self.progress else None
    for batch in _same_size_batches(images, self.batch_size):
      count = len(batch)
      if count < self.batch_size:
        padding = np.zeros((self.batch_size - count,) + batch.shape[1:], np.uint8)
        batch = np.concatenate([batch, padding])
      features = parallel.fetch_to_host(
          self.on_device(jax.device_put(batch, parallel.batch_sharding(self.mesh))))
      for name in self.outputs:
        collected[name].append(features[name][:count])
      if progress is not None:
        progress.update(count)
    if progress is not None:
      progress.close()
    return {name: np.concatenate(parts) if parts else np.zeros((0, OUTPUT_DIMS[name]), np.float32)
            for name, parts in collected.items()}


@functools.lru_cache(maxsize=16)
def _compiled_network(outputs: tuple[str, ...], dtype: jnp.dtype, mesh: Mesh):
  """One jitted network per (outputs, dtype, mesh), shared by all extractors of a process so
  that, e.g., each new evaluator does not compile the Inception again.

  Input shardings follow the arguments: host batches are put batch-sharded, and generated
  samples arrive sharded by the jit that made them.
  """
  model = FIDInceptionV3(outputs=outputs, dtype=dtype)
  return jax.jit(model.apply, out_shardings=parallel.batch_sharding(mesh))


def _check_uint8_images(images: np.ndarray) -> None:
  if images.dtype != np.uint8:
    raise ValueError(f"Images must be uint8 (0..255), got {images.dtype}. Quantise generator "
                     "output first, e.g. round(127.5 * x + 127.5) clipped to [0, 255].")
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"Images must have shape (N, H, W, 3), got {images.shape}.")


def _same_size_batches(images: np.ndarray | Iterable[np.ndarray],
                       batch_size: int) -> Iterator[np.ndarray]:
  """Splits into batches of at most `batch_size` consecutive images of one size."""
  if isinstance(images, np.ndarray):
    for start in range(0, len(images), batch_size):
      yield images[start:start + batch_size]
    return
  pending: list[np.ndarray] = []
  for index, image in enumerate(images):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"Image {index} must be uint8 (H, W, 3), got {image.dtype} "
                       f"{image.shape}.")
    if pending and (image.shape != pending[0].shape or len(pending) == batch_size):
      yield np.stack(pending)
      pending = []
    pending.append(image)
  if pending:
    yield np.stack(pending)


def _progress_bar(total: int | None, description: str):
  try:
    from tqdm import tqdm
  except ImportError:  # tqdm comes with tensorflow-datasets; without it, no bar.
    return None
  return tqdm(total=total, desc=description, unit="img", disable=jax.process_index() != 0)
