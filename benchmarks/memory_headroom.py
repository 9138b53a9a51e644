r"""The largest per-device batch whose BigGAN training iteration fits in device memory.

  python benchmarks/memory_headroom.py [--configs=configs/imagenet128.py,...] \
      [--target=local | --target=tpu:v5e:2x2] [--capacities_gb=16,32,80,141]

For each config, with and without `config.model.remat` (G and D blocks rematerialised), the
script compiles the whole training iteration (num_d_steps D steps + the G step, as in
training; `num_accumulations` 1, so the per-device batch is what lives in memory at once)
at per-device batches 8, 16, 32, ... and reads the compiled program's peak device memory
(arguments + outputs + temporaries - donated aliases, `gan_core.perf.peak_memory_bytes`).
Then, for every capacity, it bisects (to a multiple of 8) for the largest per-device batch
whose compiled peak fits. Every figure in the table is a compiled peak, none is
interpolated: where a batch is not compiled the table says so.

`--target=local` compiles for this process's devices (a GPU or TPU machine; on CPU the
memory analysis does not see remat's saving). `--target=tpu:TOPOLOGY` compiles for a TPU
topology without the hardware (deviceless ahead-of-time compilation; needs `libtpu`
installed, e.g. in a separate virtual environment: `pip install "jax[tpu]"`). The TPU
compiler refuses a program that exceeds the target's HBM and says by how much; the script
reads the used bytes from that message, so one v5e target (16 GB) measures the peaks for
every capacity. The capacities are compared with the compiled peak as is: on GPUs JAX takes
75% of the memory by default (`XLA_PYTHON_CLIENT_MEM_FRACTION`), and runtimes keep some for
themselves, so leave headroom.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any

from absl import app, flags

flags.DEFINE_list("configs", ["configs/imagenet128.py", "configs/imagenet256.py",
                              "configs/imagenet512.py"], "BigGAN config files.")
flags.DEFINE_string("target", "local", "'local' or 'tpu:<topology>', e.g. tpu:v5e:2x2.")
flags.DEFINE_list("capacities_gb", ["16", "32", "80", "141"], "Device memory sizes (GB, 1e9).")
flags.DEFINE_integer("max_batch", 1024, "Largest per-device batch tried.")
flags.DEFINE_string("compute_dtype", "", "Override config.model.compute_dtype.")
flags.DEFINE_list("remat", ["false", "true"], "Remat settings to measure.")
flags.DEFINE_multi_string("set", [], "Config overrides FIELD=VALUE (Python literals), e.g. "
                          "--set=model.ch=64.")
FLAGS = flags.FLAGS

GB = 1e9
# "Used 20.51G of 15.75G hbm. Exceeded hbm capacity by 4.76G." (XLA:TPU's out-of-memory error)
_USED = re.compile(r"Used ([0-9.]+)([KMGT]) of ([0-9.]+)([KMGT]) hbm")
_UNIT = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def used_bytes_from_error(message: str) -> int | None:
  """The bytes XLA:TPU says a program needs, from its out-of-HBM compile error."""
  m = _USED.search(message)
  return None if m is None else int(float(m.group(1)) * _UNIT[m.group(2)])


def devices_for(target: str) -> list[Any]:
  import jax
  if target == "local":
    return jax.devices()
  if target.startswith("tpu:"):
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    from jax.experimental import topologies
    return list(topologies.get_topology_desc(platform="tpu",
                                             topology_name=target[4:]).devices)
  raise ValueError(f"--target={target!r}: use 'local' or 'tpu:<topology>' (e.g. tpu:v5e:2x2)")


def load_config(path: str) -> Any:
  """`get_config(arg)` of a config file given as PATH or PATH:ARG."""
  import importlib.util
  path, _, arg = path.partition(":")
  spec = importlib.util.spec_from_file_location("memory_headroom_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def apply_override(config: Any, item: str) -> None:
  """config.a.b = literal for item 'a.b=literal' (a clear error for an unknown field)."""
  import ast
  field, sep, value = item.partition("=")
  if not sep:
    raise ValueError(f"--set={item!r}: expected FIELD=VALUE, e.g. model.ch=64")
  *parents, leaf = field.split(".")
  node = config
  for name in parents:
    node = getattr(node, name)
  if leaf not in node:
    raise ValueError(f"--set={item!r}: the config has no field {field!r}")
  try:
    setattr(node, leaf, ast.literal_eval(value))
  except (ValueError, SyntaxError):
    setattr(node, leaf, value)  # A bare string, e.g. model.compute_dtype=bfloat16.


class Measurer:
  """peak(per_device_batch) for one config and remat setting, compiled once per batch."""

  def __init__(self, config_path: str, remat: bool, devices: list[Any]):
    self.config = load_config(config_path)
    for item in FLAGS.set:
      apply_override(self.config, item)
    self.config.num_accumulations = 1
    self.config.model.remat = remat
    self.config.scan_unroll = "never"  # As on accelerators (`auto` unrolls on CPU only).
    if FLAGS.compute_dtype:
      self.config.model.compute_dtype = FLAGS.compute_dtype
    self.devices = devices
    self.cache: dict[int, tuple[int | None, str]] = {}

  def peak(self, per_device: int) -> tuple[int | None, str]:
    """(peak bytes or None, note) of the compiled iteration at this per-device batch."""
    if per_device not in self.cache:
      self.cache[per_device] = self._compile(per_device)
    return self.cache[per_device]

  def _compile(self, per_device: int) -> tuple[int | None, str]:
    import jax
    import jax.numpy as jnp
    from biggan_jax.train import BigGANTrainer
    from gan_core import parallel, perf
    c = self.config
    c.batch_size = per_device * len(self.devices)
    mesh = parallel.make_mesh(self.devices)
    trainer = BigGANTrainer(c, c.model.num_classes or 1, mesh)
    shape = trainer.batch_leading_shape
    res = c.model.resolution
    sharding = parallel.batch_sharding(mesh, 2)
    batch = {"images": jax.ShapeDtypeStruct(shape + (res, res, 3), jnp.uint8, sharding=sharding),
             "labels": jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding)}
    t0 = time.perf_counter()
    try:
      compiled = trainer.train_iteration.lower(trainer.abstract_state(), batch).compile()
    except Exception as e:  # noqa: BLE001 -- an out-of-memory compile is a measurement.
      used = used_bytes_from_error(str(e))
      if used is None:
        raise
      return used, f"{time.perf_counter() - t0:.0f} s, from the compiler's out-of-HBM error"
    return perf.peak_memory_bytes(compiled), f"{time.perf_counter() - t0:.0f} s"


def largest_fitting(m: Measurer, capacity: float, fits: int, fails: int | None) -> int:
  """Bisect (multiples of 8) between a fitting and a failing batch."""
  if fails is None:
    return fits
  while fails - fits > 8:
    mid = (fits + fails) // 2 // 8 * 8
    if mid in (fits, fails):
      break
    peak, _ = m.peak(mid)
    if peak is not None and peak <= capacity:
      fits = mid
    else:
      fails = mid
  return fits


def main(_):
  import jax
  devices = devices_for(FLAGS.target)
  kind = getattr(devices[0], "device_kind", str(devices[0]))
  capacities = [float(c) for c in FLAGS.capacities_gb]
  print(f"target: {FLAGS.target} ({len(devices)} x {kind}); jax {jax.__version__}")
  rows = []
  for path in FLAGS.configs:
    for remat in (r.lower() in ("1", "true", "yes") for r in FLAGS.remat):
      m = Measurer(path, remat, devices)
      b = 8
      while b <= FLAGS.max_batch:  # Doubling until the largest capacity is exceeded.
        peak, note = m.peak(b)
        print(f"{path} remat={remat} batch {b}/device: "
              f"{'?' if peak is None else f'{peak / GB:.2f} GB'} ({note})", flush=True)
        if peak is None or peak > max(capacities) * GB:
          break
        b *= 2
      cells = []
      for cap in capacities:  # Every batch compiled so far (bisections too) narrows the search.
        fit = [s for s, (p, _) in m.cache.items() if p is not None and p <= cap * GB]
        over = [s for s, (p, _) in m.cache.items() if p is None or p > cap * GB]
        if not fit:
          cells.append("< 8")
          continue
        best = largest_fitting(m, cap * GB, max(fit), min(over) if over else None)
        cells.append(str(best) if over else f">= {best}")
      rows.append((path, m.config.model.resolution, remat, m.config.model.compute_dtype,
                   m.peak(8)[0], cells))
  header = ("| config | res | remat | dtype | peak at 8/device | "
            + " | ".join(f"{c:g} GB" for c in capacities) + " |")
  print()
  print(f"Largest per-device batch whose compiled iteration fits ({FLAGS.target}, {kind}):")
  print(header)
  print("|" + "---|" * (5 + len(capacities)))
  for path, res, remat, dtype, peak8, cells in rows:
    p8 = "?" if peak8 is None else f"{peak8 / GB:.2f} GB"
    print(f"| {os.path.basename(path)} | {res} | {'on' if remat else 'off'} | {dtype} | {p8} | "
          + " | ".join(cells) + " |")


if __name__ == "__main__":
  app.run(main)
