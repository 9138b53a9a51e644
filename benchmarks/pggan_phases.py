r"""Times PGGAN training iterations phase by phase (each resolution, fading and stable).

  python benchmarks/pggan_phases.py --config=configs/pggan_celebahq1024.py \
      [--batch_size=B] [--resolutions=4,8,1024] [--steps=N] [--config.FIELD=VALUE ...]

For every selected resolution it compiles and times the fade-in iteration
(resolutions above the initial one) and the stable iteration on synthetic uint8
data on all devices, and prints one line per phase:
`res=R fading=F batch=B compile_s=C ms/iteration=M images/s=X`
(images/s counts real images shown to D: num_d_steps * batch per iteration), followed by
the phase's `gflop=` (model FLOPs per iteration, XLA's cost analysis of the iteration traced
without loops), `tflops=` (achieved), `mfu=` (against the device peak for the config's compute
dtype, see gan_core/perf.py), `peak_mem_gib=` (compiled memory analysis), and `kernels=` /
`small_kernels=` (kernels launched per iteration and how many of them are small,
`gan_core.perf.kernel_census`).
`--profile=DIR` writes a `jax.profiler` trace of the timed iterations (all phases).
"""
from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from gan_core.cli import parse_flags

config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("batch_size", None, "Global batch size for every resolution "
                     "(overrides the config's per-resolution sizes).")
flags.DEFINE_string("resolutions", "", "Comma-separated resolutions (default: all).")
flags.DEFINE_integer("steps", 5, "Timed iterations per phase.")
flags.DEFINE_integer("warmup", 1, "Untimed iterations after compilation.")
flags.DEFINE_string("profile", "", "Write a jax.profiler trace of the timed iterations here.")
FLAGS = flags.FLAGS


def main(_):
  from gan_core import parallel, perf
  from gan_core.xla_flags import prefer_eigen_convolutions
  prefer_eigen_convolutions()  # As the training entry points do (gan_core/xla_flags.py).
  from pggan_jax.train import PGGANTrainer
  config = FLAGS.config
  if FLAGS.batch_size:
    for key in config.batch_size:
      config.batch_size[key] = FLAGS.batch_size
  mesh = parallel.make_mesh()
  num_classes = config.model.num_classes
  trainer = PGGANTrainer(config, num_classes, mesh)
  unrolled_config = config.copy_and_resolve_references()
  unrolled_config.scan_unroll = "always"
  unrolled = PGGANTrainer(unrolled_config, num_classes, mesh)  # Lowered only, for FLOPs.
  dtype = perf.dtype_name(config.model.compute_dtype)
  state = trainer.init_state(config.seed)
  wanted = [int(r) for r in FLAGS.resolutions.split(",") if r] or trainer.resolutions
  rng = np.random.default_rng(0)
  print(f"# {config.model.resolution}x{config.model.resolution} PGGAN on {mesh.devices.size} "
        f"{jax.devices()[0].platform} device(s) ({jax.devices()[0].device_kind}), "
        f"{platform.processor() or platform.machine()}")
  for res in wanted:
    batch_size = config.batch_size[f"r{res}"]
    local = (config.num_d_steps, batch_size // jax.process_count())
    batch = {
        "images": parallel.global_array_from_local(
            rng.integers(0, 256, local + (res, res, config.model.num_channels), dtype=np.uint8),
            mesh, 1),
        "labels": parallel.global_array_from_local(
            rng.integers(0, max(num_classes, 1), local).astype(np.int32), mesh, 1)}
    for fading in ((True, False) if res > config.initial_resolution else (False,)):
      alpha, lr = jnp.float32(0.5 if fading else 1.0), jnp.float32(1e-3)
      t0 = time.perf_counter()
      compiled = trainer.train_iteration.lower(state, batch, alpha, lr, res=res,
                                               fading=fading).compile()
      run = lambda s: compiled(s, batch, alpha, lr)
      state, metrics = run(state)
      jax.block_until_ready(metrics)
      compile_s = time.perf_counter() - t0
      flops = perf.flops_of(unrolled.train_iteration.lower(state, batch, alpha, lr, res=res,
                                                           fading=fading))
      for _ in range(FLAGS.warmup):
        state, metrics = run(state)
      jax.block_until_ready(metrics)
      with perf.trace(FLAGS.profile):  # One trace run per phase.
        t0 = time.perf_counter()
        for _ in range(FLAGS.steps):
          state, metrics = run(state)
        jax.block_until_ready(metrics)
        ms = (time.perf_counter() - t0) / FLAGS.steps * 1000
      images = config.num_d_steps * batch_size
      u = perf.utilisation(flops, ms / 1000, dtype)
      memory = perf.peak_memory_bytes(compiled)
      mfu = "n/a" if u["mfu"] is None else f"{100 * u['mfu']:.2f}%"
      mem = "n/a" if memory is None else f"{memory / 2 ** 30:.3f}"
      census = perf.kernel_census(compiled.as_text())
      print(f"res={res} fading={fading} batch={batch_size} compile_s={compile_s:.1f} "
            f"ms/iteration={ms:.1f} images/s={images / ms * 1000:.1f} "
            f"gflop={flops / 1e9:.2f} tflops={u['tflops']:.3f} mfu={mfu} peak_mem_gib={mem} "
            f"kernels={census.kernels} small_kernels={census.small}", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
