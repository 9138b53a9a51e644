r"""Times the compiled BigGAN training iteration.

  python benchmarks/train_step.py --config=configs/imagenet128.py [--batch_size=B] [--steps=N]

Builds the train state and a synthetic uint8 batch on the mesh (all devices),
compiles, runs `--warmup` iterations, then times `--steps` iterations and prints
`images/s: X` (real images consumed by D per second, i.e. num_d_steps * batch
per iteration) and `ms/iteration: X`. Extra `--config.FIELD=VALUE` overrides apply.
`--compilation_cache=DIR` reads/writes the persistent compilation cache there (default off,
so that the first call measures a compilation); run twice to time a cold and a warm start.

Utilisation (gan_core/perf.py): `model GFLOP/iteration` (XLA's cost analysis of the iteration
traced without loops), `achieved TFLOP/s`, `MFU` against the device's peak for the config's
compute dtype (data sheet; measured with a GEMM on CPUs) and `peak memory` (compiled memory
analysis), and the kernel census of the compiled iteration (`gan_core.perf.kernel_census`:
kernels launched per iteration, how many are small, how many are spectral normalisation's,
collectives, host transfers). `--profile=DIR` writes a `jax.profiler` trace of the timed
iterations and, on CPU, prints the op time by kind (forward / input-gradient /
kernel-gradient convolutions, attention, matmuls, transposes, the rest) from that trace.
"""
from __future__ import annotations

import platform
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from gan_core.cli import parse_flags

config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("batch_size", None, "Global batch size (overrides the config).")
flags.DEFINE_integer("steps", 10, "Timed iterations.")
flags.DEFINE_integer("warmup", 2, "Untimed iterations after compilation.")
flags.DEFINE_string("profile", "", "Write a jax.profiler trace of the timed iterations here.")
flags.DEFINE_string("compilation_cache", "off", "Persistent compilation cache directory, or "
                    "'off'.")
FLAGS = flags.FLAGS


def main(_):
  from biggan_jax.train import BigGANTrainer
  from gan_core import compilation_cache, parallel, perf
  from gan_core.xla_flags import prefer_eigen_convolutions, trace_cpu_ops
  prefer_eigen_convolutions()  # As the training entry points do (gan_core/xla_flags.py).
  if FLAGS.profile:
    trace_cpu_ops()  # Before any backend starts: XLA:CPU then writes one event per op.
  cache = compilation_cache.enable(FLAGS.compilation_cache)
  config = FLAGS.config
  if FLAGS.batch_size:
    config.batch_size = FLAGS.batch_size
  mesh = parallel.make_mesh()
  num_classes = config.model.num_classes or 1
  trainer = BigGANTrainer(config, num_classes, mesh)
  state = trainer.init_state(config.seed)
  rng = np.random.default_rng(0)
  shape = trainer.batch_leading_shape
  local = shape[:-1] + (shape[-1] // jax.process_count(),)
  res = config.model.resolution
  batch = {
      "images": parallel.global_array_from_local(
          rng.integers(0, 256, local + (res, res, 3), dtype=np.uint8), mesh, 2),
      "labels": parallel.global_array_from_local(
          rng.integers(0, num_classes, local).astype(np.int32), mesh, 2)}
  t0 = time.perf_counter()
  compiled = trainer.train_iteration.lower(state, batch).compile()
  compile_only_s = time.perf_counter() - t0
  flops = model_flops(config, num_classes, mesh, state, batch)
  t0 = time.perf_counter()
  state, metrics = trainer.train_iteration(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0 + compile_only_s
  for _ in range(FLAGS.warmup):
    state, metrics = trainer.train_iteration(state, batch)
  jax.block_until_ready(metrics)
  with perf.trace(FLAGS.profile):
    t0 = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, metrics = trainer.train_iteration(state, batch)
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - t0
  ms = elapsed / FLAGS.steps * 1000
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} "
        f"({platform.processor() or platform.machine()}), jax {jax.__version__}")
  print(f"config: resolution={res} ch={config.model.ch} arch={config.model.architecture} "
        f"batch_size={config.batch_size} num_d_steps={config.num_d_steps} "
        f"num_accumulations={config.num_accumulations} dtype={config.model.compute_dtype} "
        f"augment={config.augment.kind}")
  print(f"compile: {compile_only_s:.1f} s (compilation cache: {cache or 'off'})")
  print(f"first call (compile + 1 iteration): {compile_s:.1f} s")
  print(f"images/s: {trainer.examples_per_iteration / (ms / 1000):.1f}")
  print(f"ms/iteration: {ms:.1f}")
  for line in perf.format_report(flops, ms / 1000, perf.peak_memory_bytes(compiled),
                                 perf.dtype_name(config.model.compute_dtype)):
    print(line)
  from biggan_jax.layers import SN_SCOPE
  hlo_text = compiled.as_text()  # Megabytes for a full model: rendered once, read twice.
  census = perf.kernel_census(hlo_text, scopes=(SN_SCOPE,))
  for line in perf.format_census(census, per="iteration"):
    print(line)
  if FLAGS.profile:
    print(f"trace: {FLAGS.profile}")
    breakdown = perf.op_breakdown(FLAGS.profile, hlo_text)
    for line in perf.format_breakdown(breakdown):
      print(line)
    if not breakdown:
      print("op time: the trace has no per-op events (on GPU/TPU, read it with TensorBoard)")


def model_flops(config, num_classes, mesh, state, batch) -> float:
  """Model FLOPs of one iteration: the iteration traced without loops (XLA's cost analysis
  does not multiply loop bodies by their trip counts), lowered, not compiled. The memory
  knobs are switched off for the count: they compute the same function (same parameters),
  and what they recompute is not model arithmetic (MFU, not hardware utilisation)."""
  from biggan_jax.train import BigGANTrainer
  from gan_core import perf
  unrolled = config.copy_and_resolve_references()
  unrolled.scan_unroll = "always"
  unrolled.model.remat = False
  unrolled.model.attention_query_chunk = 0
  trainer = BigGANTrainer(unrolled, num_classes, mesh)
  return perf.flops_of(trainer.train_iteration.lower(state, batch))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
