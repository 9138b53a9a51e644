"""XLA flags that must be set before JAX starts its backends.

`prefer_ynnpack_dots()` routes XLA:CPU's dot and convolution fusions through
YNNPACK (`--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT`). On
the 2-core CPU of benchmarks/RESULTS.md it makes the FID Inception about 1.5x
faster (stem convolutions with few channels up to 5x), with features equal to
the default path within float32 rounding (checked by tests/test_metrics_cli.py
against torch-fidelity). It did not speed up the GAN training steps measured,
so only the evaluation entry points ask for it.
"""
from __future__ import annotations

import os
import sys

YNNPACK_DOT_FLAG = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"


def prefer_ynnpack_dots() -> bool:
  """Adds the YNNPACK flag to XLA_FLAGS unless JAX is already running or the user set it.

  Returns whether the flag is in effect for backends started from now on.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" in flags:
    return YNNPACK_DOT_FLAG in flags.split()
  if "jax" in sys.modules:
    from jax._src import xla_bridge
    if xla_bridge.backends_are_initialized():
      return False
  os.environ["XLA_FLAGS"] = (flags + " " + YNNPACK_DOT_FLAG).strip()
  return True
