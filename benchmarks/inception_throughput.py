r"""Throughput of FID Inception feature extraction, ours and torch-fidelity's.

  python benchmarks/inception_throughput.py [--batch_size=B] [--num_images=N] [--image_size=S]

Both extract the 2048-d pool features and the 1008 unbiased logits from the
same random uint8 images held in memory, with the same random weights (the
numbers do not depend on the weight values). Ours goes through
`gan_core.eval.features.InceptionFeatures` (host -> device, all devices of the
mesh, back to host); torch-fidelity's `FeatureExtractorInceptionV3` runs on
CPU tensors under `torch.no_grad()` with torch's default thread count. One
untimed batch warms each up (compilation for ours). Prints `images/s: X` for
ours, then torch-fidelity's and the ratio when torch and torch-fidelity are
installed (`pip install torch==2.13.0 && pip install --no-deps torch-fidelity`).
Ours also prints `model GFLOP/iteration` (one batch, XLA's cost analysis), achieved TFLOP/s,
`MFU` and `peak memory` (gan_core/perf.py); `--profile=DIR` traces the timed batches.
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_integer("batch_size", 32, "Images per batch (ours: over all devices).")
flags.DEFINE_integer("num_images", 256, "Timed images.")
flags.DEFINE_integer("image_size", 64, "Side of the square uint8 input images.")
flags.DEFINE_bool("torch", True, "Also time torch-fidelity when it is installed.")
flags.DEFINE_bool("cpu_ynnpack", True, "XLA:CPU YNNPACK fusions (gan_core/xla_flags.py).")
flags.DEFINE_bool("bf16", False, "Our extractor in bfloat16 (accelerators).")
flags.DEFINE_string("profile", "", "Write a jax.profiler trace of our timed batches here.")
FLAGS = flags.FLAGS


def time_ours(variables, images) -> float:
  import jax
  import jax.numpy as jnp
  from gan_core import parallel, perf
  from gan_core.eval.features import InceptionFeatures
  extractor = InceptionFeatures(variables, batch_size=FLAGS.batch_size, progress=False,
                                dtype=jnp.bfloat16 if FLAGS.bf16 else jnp.float32)
  extractor(images[:FLAGS.batch_size])
  with perf.trace(FLAGS.profile):
    start = time.perf_counter()
    extractor(images)
    seconds = time.perf_counter() - start
  # The same program on one batch, lowered again for its cost and memory analyses.
  batch = jax.ShapeDtypeStruct((extractor.batch_size,) + images.shape[1:], jnp.uint8,
                               sharding=parallel.batch_sharding(extractor.mesh))
  with jax.default_matmul_precision("highest"):
    lowered = extractor._apply.lower(extractor.variables, batch)
  batches = -(-len(images) // extractor.batch_size)
  compiled = lowered.compile()
  for line in perf.format_report(perf.flops_of(lowered), seconds / batches,
                                 perf.peak_memory_bytes(compiled),
                                 "bfloat16" if FLAGS.bf16 else "float32"):
    print(line.replace("iteration", "batch"))
  for line in perf.format_census(perf.kernel_census(compiled.as_text()), per="batch"):
    print(line)
  return len(images) / seconds


def time_torch_fidelity(weight_file, images) -> float | None:
  import importlib.util
  import unittest.mock
  if importlib.util.find_spec("torch") is None or importlib.util.find_spec(
      "torch_fidelity") is None:
    print("torch-fidelity: not installed, skipped")
    return None
  import torch
  # torch-fidelity's package __init__ imports torchvision for its dataset helpers only.
  if importlib.util.find_spec("torchvision") is None:
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms",
                 "torchvision.transforms.functional", "torchvision.models"):
      sys.modules[name] = unittest.mock.MagicMock(name=name)
  from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
  model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=weight_file)
  batches = [torch.from_numpy(images[i:i + FLAGS.batch_size]).permute(0, 3, 1, 2).contiguous()
             for i in range(0, len(images), FLAGS.batch_size)]
  with torch.no_grad():
    model(batches[0])
    start = time.perf_counter()
    for batch in batches:
      model(batch)
  return len(images) / (time.perf_counter() - start)


def main(argv):
  del argv
  if FLAGS.cpu_ynnpack:
    from gan_core.xla_flags import prefer_ynnpack_dots
    prefer_ynnpack_dots()
  import jax
  import numpy as np
  from gan_core.eval import weights
  from gan_core.eval.torch_pickle import save_state_dict

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (FLAGS.num_images, FLAGS.image_size, FLAGS.image_size, 3),
                        dtype=np.uint8)
  with tempfile.TemporaryDirectory() as tmp:
    weight_file = os.path.join(tmp, "random-inception.pth")
    state_dict = weights.random_state_dict()
    save_state_dict(weight_file, state_dict)
    variables = {"params": weights.params_from_state_dict(state_dict)}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__} on {jax.device_count()} x {jax.devices()[0].device_kind}")
    print(f"images: {FLAGS.num_images} x {FLAGS.image_size}x{FLAGS.image_size}, batch "
          f"{FLAGS.batch_size}, ynnpack {FLAGS.cpu_ynnpack}, bf16 {FLAGS.bf16}")
    ours = time_ours(variables, images)
    print(f"images/s: {ours:.1f}")
    if FLAGS.torch:
      theirs = time_torch_fidelity(weight_file, images)
      if theirs:
        import torch
        print(f"torch-fidelity images/s: {theirs:.1f} (torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads)")
        print(f"speedup: {ours / theirs:.2f}x")


if __name__ == "__main__":
  app.run(main)
