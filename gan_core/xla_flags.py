"""XLA flags that must be set before JAX starts its backends.

`prefer_ynnpack_dots()` routes XLA:CPU's dot and convolution fusions through
YNNPACK (`--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT`). On
the 2-core CPU of benchmarks/RESULTS.md it makes the FID Inception about 1.5x
faster (stem convolutions with few channels up to 5x), with features equal to
the default path within float32 rounding (checked by tests/test_metrics_cli.py
against torch-fidelity). It did not speed up the GAN training steps measured,
so only the evaluation entry points ask for it.

`prefer_eigen_convolutions()` does the opposite for training: it turns XLA:CPU's YNNPACK
fusions off (`--xla_cpu_experimental_ynn_fusion_type=`), so convolutions run on XLA's
Eigen path. YNNPACK computes a convolution's kernel gradient 3 to 4.5x slower at high
resolution and few channels (benchmarks/conv_kernel_grad.py); without it the BigGAN-128
iteration (ch 64, batch 8) took 4,646 ms instead of 6,676 ms on the 2-core CPU of
benchmarks/RESULTS.md, and digits32 was unchanged. The training entry points and the
training benchmarks ask for it. Either function leaves a user's own setting of the flag alone.
"""

from __future__ import annotations

import os
import sys

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
YNNPACK_DOT_FLAG = f"--{YNN_FLAG}=LIBRARY_FUSION_TYPE_DOT"
NO_YNNPACK_FLAG = f"--{YNN_FLAG}="


def prefer_ynnpack_dots() -> bool:
  """Adds the YNNPACK flag to XLA_FLAGS unless JAX is already running or the user set it.

  Returns whether the flag is in effect for backends started from now on.
  """
  return _add(YNNPACK_DOT_FLAG)


def _add(flag: str, name: str = YNN_FLAG) -> bool:
  """Appends `flag` to XLA_FLAGS unless the user's XLA_FLAGS already names `name` or JAX's
  backends have started; returns whether `flag` is in effect for backends started later."""
  flags = os.environ.get("XLA_FLAGS", "")
  if name in flags:
    return flag in flags.split()
  if "jax" in sys.modules:
    from jax._src import xla_bridge
    if xla_bridge.backends_are_initialized():
      return False
  os.environ["XLA_FLAGS"] = (flags + " " + flag).strip()
  return True


def prefer_eigen_convolutions() -> bool:
  """Adds `--xla_cpu_experimental_ynn_fusion_type=` (no YNNPACK fusions) to XLA_FLAGS unless
  JAX is already running or the user set that flag. Only XLA:CPU reads it.

  Returns whether it is in effect for backends started from now on.
  """
  return _add(NO_YNNPACK_FLAG)


CPU_TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"


def trace_cpu_ops() -> bool:
  """Makes XLA:CPU write one profiler trace event per op (for `perf.op_breakdown`), unless
  JAX is already running or the user set that flag."""
  return _add(CPU_TRACE_FLAG, "xla_cpu_enable_xprof_traceme")
