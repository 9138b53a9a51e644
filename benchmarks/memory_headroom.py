r"""The largest per-device batch whose BigGAN training iteration fits in device memory.

  python benchmarks/memory_headroom.py [--configs=configs/imagenet128.py,...] \
      [--target=local | --target=tpu:v5e:2x2 | --target=gpu:h200] [--capacities_gb=16,32,80,141]

For each config, with and without `config.model.remat` (G and D blocks rematerialised), the
script compiles the whole training iteration (num_d_steps D steps + the G step, as in
training; `num_accumulations` 1, so the per-device batch is what lives in memory at once)
at per-device batches 8 and 64 (`--probe_batches`) and reads the compiled program's peak
device memory (arguments + outputs + temporaries - donated aliases,
`gan_core.perf.peak_memory_bytes`). Then, for every capacity, it searches (in multiples of
8, and below 8 in steps of 1 down to `--min_batch`, as at 512x512 where BigGAN ran at 4 per
TPU core) for the largest per-device batch whose compiled peak fits: the next batch compiled is
where the line through the nearest compiled peaks meets the capacity (the peak is nearly
linear in the batch, so a capacity usually costs two compiles: the crossing and the next
batch),
with bisection as the fallback. Each answer is bracketed by two compiled peaks, the batch
that fits and the next one on the grid (8 larger; 1 larger below 8) that does not; none is
interpolated. The script prints
every compiled peak, then the table.

`--target=local` compiles for this process's devices (a GPU or TPU machine; on CPU the
memory analysis does not see remat's saving). `--target=tpu:TOPOLOGY` compiles for a TPU
topology without the hardware (deviceless ahead-of-time compilation; needs `libtpu`
installed, e.g. in a separate virtual environment: `pip install "jax[tpu]"`). The TPU
compiler refuses a program that exceeds the target's HBM (in seconds rather than minutes)
and says how much it needs; the script reads that figure, which is an estimate, not a
compiled peak: it does not see rematerialisation and ran 10-12% high for BigGAN-128 on a v5e
(benchmarks/RESULTS.md). A refusal proves that a batch does not fit any capacity up to the
target's HBM; a capacity above it is answered from the estimates, and its table cell is
marked `~`. Compile for a target with more HBM for those (`tpu:v5p:2x2x1`: 95 GiB per chip;
in libtpu 0.0.42.1 no TPU target has more per device, TPU7x's 192 GB chip being two devices
of 94.75 GiB). `--target=gpu:SPEC` compiles with XLA:GPU for one host of `--gpu_devices`
GPUs described by SPEC (`h100`, `h200`: benchmarks/gpu_specs/, or the path of a
GpuTargetConfigProto text file), also without the hardware: it needs JAX's CUDA plugin
(`pip install "jax[cuda12]"`, in a separate virtual environment on a CPU machine; the
script sets JAX_PLATFORMS=cpu unless it is set) but no GPU. XLA:GPU does not refuse a
program larger than the device, so every capacity is answered from compiled peaks.
Deviceless, it does not autotune convolutions and gives cuDNN no workspace; on the card,
autotuning may pick algorithms that need some. The capacities are compared with the compiled peak as is:
on GPUs JAX takes 75% of the memory by default (`XLA_PYTHON_CLIENT_MEM_FRACTION`), and
runtimes keep some for themselves, so leave headroom.

`--census` also prints, for every compiled batch, the kernel census of the iteration
(`gan_core.perf.kernel_census`): what one iteration launches on the target (kernels by kind,
how many are small and launch-bound, collectives, host transfers), counted from the optimised
HLO, so a GPU program can be inspected before a GPU is at hand.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any

from absl import app, flags

flags.DEFINE_list("configs", ["configs/imagenet128.py", "configs/imagenet256.py",
                              "configs/imagenet512.py"], "BigGAN config files.")
flags.DEFINE_string("target", "local", "'local', 'tpu:<topology>' (e.g. tpu:v5e:2x2) or "
                    "'gpu:<spec>' (e.g. gpu:h200; a name under benchmarks/gpu_specs/ or a path).")
flags.DEFINE_integer("gpu_devices", 8, "Devices of the one host that --target=gpu:SPEC "
                     "compiles for (data parallel over them, as on an 8-GPU node).")
flags.DEFINE_list("capacities_gb", ["16", "32", "80", "141"], "Device memory sizes (GB, 1e9).")
flags.DEFINE_integer("max_batch", 4096, "Largest per-device batch tried.")
flags.DEFINE_integer("min_batch", 1, "Smallest per-device batch tried where 8 does not fit "
                     "(the search steps by 1 below 8); 8 stops it at 8.")
flags.DEFINE_list("known_peaks", [], "BATCH:GB pairs this script printed in an earlier run "
                  "(same config, remat setting, target and versions), taken as compiled; "
                  "for one config and one remat setting only.")
flags.DEFINE_list("batches", [], "Only compile these per-device batches and print their peaks "
                  "(no search, no table), e.g. to compare targets.")
flags.DEFINE_list("probe_batches", ["8", "64"], "Per-device batches compiled first (8 always): "
                  "the line through them aims the search for each capacity.")
flags.DEFINE_bool("census", False, "Also print the kernel census of every compiled iteration "
                  "(gan_core.perf.kernel_census: kernels per iteration by kind, small ones, "
                  "collectives, host transfers), e.g. for a deviceless GPU target.")
flags.DEFINE_string("compute_dtype", "", "Override config.model.compute_dtype.")
flags.DEFINE_list("remat", ["false", "true"], "Remat settings to measure.")
flags.DEFINE_multi_string("set", [], "Config overrides FIELD=VALUE (Python literals), e.g. "
                          "--set=model.ch=64.")
FLAGS = flags.FLAGS

GB = 1e9
# XLA:TPU's out-of-memory compile errors come in two forms: the whole program's use,
#   "Used 20.51G of 15.75G hbm. Exceeded hbm capacity by 4.76G."
# and, where the temporaries alone exceed the HBM, only those:
#   "the total memory required for HLO temporaries (31.17G) exceeds available HBM (15.75G)"
_USED = re.compile(r"Used ([0-9.]+)([KMGT]) of ([0-9.]+)([KMGT]) hbm")
_TEMPORARIES = re.compile(r"memory required for HLO temporaries \(([0-9.]+)([KMGT])\)")
_HBM = re.compile(r"(?:of ([0-9.]+)([KMGT]) hbm|available HBM \(([0-9.]+)([KMGT])\))")
_UNIT = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
ESTIMATE = "from the compiler's out-of-HBM error"


def hbm_bytes_from_error(message: str) -> int | None:
  """The target's HBM per device, as XLA:TPU's out-of-HBM compile error states it."""
  m = _HBM.search(message)
  if m is None:
    return None
  value, unit = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
  return int(float(value) * _UNIT[unit])


def table_cell(cache: dict[int, tuple[int | None, str]], capacity: float, fits: int | None,
               fails: int | None, hbm: int | None) -> str:
  """The table's entry for one capacity: '~' marks an answer that rests on an estimate.

  `cache` maps batch -> (peak bytes, note) as `Measurer.cache`; `hbm` is the target's HBM
  per device where a refusal stated it. A fitting batch whose figure is an estimate (the
  target refused it, so the capacity is above the target's HBM) is uncertain, and so is a
  failing batch's estimate for a capacity above `hbm` (or where `hbm` is unknown): the
  refusal shows only that it needs more than `hbm`.
  """
  text = (f"< {fails}" if fits is None else str(fits) if fails is not None
          else f">= {fits}")
  estimated = lambda b: b is not None and ESTIMATE in cache[b][1]
  if estimated(fits) or (estimated(fails) and (hbm is None or capacity > hbm)):
    return "~" + text
  return text


def used_bytes_from_error(message: str, argument_bytes: int = 0) -> int | None:
  """The bytes XLA:TPU says a program needs, from its out-of-HBM compile error.

  Where the message gives only the temporaries, the program's arguments (`argument_bytes`:
  per device; the outputs alias the donated state) are added to them.
  """
  m = _USED.search(message)
  if m is not None:
    return int(float(m.group(1)) * _UNIT[m.group(2)])
  m = _TEMPORARIES.search(message)
  if m is not None:
    return int(float(m.group(1)) * _UNIT[m.group(2)]) + argument_bytes
  return None


def per_device_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
  import jax
  import numpy as np
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.shape if leaf.sharding is None else leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
  return total


def devices_for(target: str) -> list[Any]:
  import jax
  if target == "local":
    return jax.devices()
  if target.startswith("tpu:"):
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    from jax.experimental import topologies
    return list(topologies.get_topology_desc(platform="tpu",
                                             topology_name=target[4:]).devices)
  if target.startswith("gpu:"):
    return gpu_compile_only_devices(target[4:], FLAGS.gpu_devices)
  raise ValueError(f"--target={target!r}: use 'local', 'tpu:<topology>' (e.g. tpu:v5e:2x2) "
                   "or 'gpu:<spec>' (e.g. gpu:h200)")


GPU_SPECS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_specs")


def gpu_spec_path(spec: str) -> str:
  """The GpuTargetConfigProto text file for `spec`: a name under benchmarks/gpu_specs/ (h100,
  h200) or a path."""
  if os.path.isfile(spec):
    return spec
  path = os.path.join(GPU_SPECS, f"{spec}.txtpb")
  if not os.path.isfile(path):
    names = sorted(f[:-6] for f in os.listdir(GPU_SPECS) if f.endswith(".txtpb"))
    raise ValueError(f"--target=gpu:{spec}: no such spec; use one of {names} or the path of a "
                     "GpuTargetConfigProto text file")
  return path


def gpu_compile_only_devices(spec: str, count: int) -> list[Any]:
  """`count` compile-only devices of one host of the GPU that `spec` describes (deviceless
  ahead-of-time compilation: needs JAX's CUDA plugin, `pip install "jax[cuda12]"`, but no GPU)."""
  import jax
  from jax.experimental import topologies
  with open(gpu_spec_path(spec)) as f:
    target_config = f.read()
  try:
    topology = topologies.get_topology_desc(platform="cuda", target_config=target_config,
                                            topology=f"1x1x{count}")
  except (NotImplementedError, RuntimeError) as e:
    raise RuntimeError(f"--target=gpu:{spec} needs JAX's CUDA plugin (no GPU needed): "
                       f'pip install "jax[cuda12]=={jax.__version__}", and '
                       f"JAX_PLATFORMS=cpu where no GPU is present ({e})") from e
  return list(topology.devices)


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

  def __init__(self, config_path: str, remat: bool, devices: list[Any], label: str = ""):
    self.label = label
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
    self.hbm: int | None = None  # The target's HBM per device, from a refusal's message.
    for item in FLAGS.known_peaks:
      batch, _, gb = item.partition(":")
      self.cache[int(batch)] = int(float(gb) * GB), "from --known_peaks"

  def peak(self, per_device: int) -> tuple[int | None, str]:
    """(peak bytes or None, note) of the compiled iteration at this per-device batch."""
    if per_device not in self.cache:
      self.cache[per_device] = peak, note = self._compile(per_device)
      print(f"{self.label} batch {per_device}/device: "
            f"{'?' if peak is None else f'{peak / GB:.2f} GB'} ({note})", flush=True)
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
    state = trainer.abstract_state()
    t0 = time.perf_counter()
    try:
      compiled = trainer.train_iteration.lower(state, batch).compile()
    except Exception as e:  # noqa: BLE001 -- an out-of-memory compile is a measurement.
      used = used_bytes_from_error(str(e), per_device_bytes((state, batch)))
      if used is None:
        raise
      self.hbm = hbm_bytes_from_error(str(e)) or self.hbm
      form = "used" if _USED.search(str(e)) else "temporaries + arguments"
      return used, f"{time.perf_counter() - t0:.0f} s, {ESTIMATE}: {form}"
    if FLAGS.census:
      from biggan_jax.layers import SN_SCOPE
      census = perf.kernel_census(compiled.as_text(), scopes=(SN_SCOPE,))
      for line in perf.format_census(census, per="iteration"):
        print(f"{self.label} batch {per_device}/device: {line}", flush=True)
    return perf.peak_memory_bytes(compiled), f"{time.perf_counter() - t0:.0f} s"


def on_grid(x: float, smallest: int = 1) -> int:
  """The largest searched batch <= x (at least `smallest`, <= 8): a multiple of 8, or below 8
  any of smallest..7."""
  return int(x // 8) * 8 if x >= 8 else max(int(x), smallest)


def next_on_grid(b: int) -> int:
  return b + 1 if b < 8 else b + 8


def previous_on_grid(b: int) -> int:
  return b - 1 if b <= 8 else b - 8


def _slope(points: list[tuple[int, int]]) -> float | None:
  """Bytes per example through the two given (batch, peak) points, if it is positive."""
  (b0, p0), (b1, p1) = points
  return (p1 - p0) / (b1 - b0) if b1 != b0 and p1 > p0 else None


def largest_fitting(m: Any, capacity: float, max_batch: int, min_batch: int = 1
                    ) -> tuple[int | None, int | None]:
  """(largest fitting, smallest failing) batch on the search grid, each compiled.

  The grid is the multiples of 8 and, below 8, min_batch..7 (`min_batch=8`: multiples of 8
  only). Uses every batch `m` has compiled so far (`m.cache`) and compiles more until the
  two are neighbours on the grid, the smallest batch fails (fitting None), or `max_batch`
  fits (failing None). The next batch is where the line through the bracketing compiled
  peaks (or, outside a bracket, through the two nearest) reaches the capacity, rounded down
  onto the grid and kept strictly inside the bracket; the peak grows almost linearly with
  the batch, so a capacity usually costs two compiles (the crossing, then the next batch).
  Where a step did not halve the bracket (a curved peak, approached from one side), the
  next one bisects it. The figures reported are compiled peaks on both sides of the answer,
  none interpolated.
  """
  smallest = min(min_batch, 8)
  widths: list[float] = []
  for _ in range(10_000):
    known = {b: p for b, (p, _) in m.cache.items()}
    fit = sorted(b for b, p in known.items() if p is not None and p <= capacity)
    over = sorted(b for b, p in known.items() if p is None or p > capacity)
    hi = over[0] if over else None
    fit = [b for b in fit if hi is None or b < hi]  # A larger fitting batch is noise.
    lo = fit[-1] if fit else None
    if (hi is not None and hi <= smallest) or (
        lo is not None and hi is not None and next_on_grid(lo) >= hi):
      return lo, hi
    if lo is not None and lo >= max_batch:
      return lo, None
    floor = next_on_grid(lo) if lo is not None else smallest
    ceiling = previous_on_grid(hi) if hi is not None else max_batch
    widths.append(float("inf") if lo is None or hi is None else hi - lo)
    guess = None
    if len(widths) < 3 or widths[-1] <= widths[-3] / 2:
      if lo is not None and hi is not None and known[hi] is not None:
        line = [(lo, known[lo]), (hi, known[hi])]
      elif lo is not None and hi is None and len(fit) >= 2:
        # The widest baseline: near the device's capacity XLA rematerialises on its own,
        # which bends the peak down, so two close batches can even give a negative slope.
        line = [(fit[0], known[fit[0]]), (lo, known[lo])]
      elif lo is None and len(over) >= 2 and known[over[1]] is not None and known[hi] is not None:
        line = [(hi, known[hi]), (over[1], known[over[1]])]
      else:
        line = None
      slope = _slope(line) if line else None
      if slope:
        b, p = line[0]
        guess = on_grid(b + (capacity - p) / slope, smallest)
    if guess is None:  # Bisect, or double / halve outside a bracket.
      if lo is not None and hi is not None:
        guess = on_grid((lo + hi) / 2, smallest)
      else:
        guess = lo * 2 if lo is not None else on_grid(hi / 2, smallest)
    m.peak(min(max(guess, floor), ceiling))
  raise RuntimeError("largest_fitting did not converge")


def main(_):
  if FLAGS.target.startswith("gpu:"):
    # Compile-only GPU devices need the CUDA plugin registered but no GPU backend started
    # (JAX reads this when it is imported).
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  devices = devices_for(FLAGS.target)
  kind = getattr(devices[0], "device_kind", str(devices[0]))
  capacities = [float(c) for c in FLAGS.capacities_gb]
  print(f"target: {FLAGS.target} ({len(devices)} x {kind}); jax {jax.__version__}")
  overrides = "".join(f" --set={o}" for o in FLAGS.set)
  if overrides:
    print(f"config overrides:{overrides}")
  if FLAGS.known_peaks and len(FLAGS.configs) * len(FLAGS.remat) != 1:
    raise app.UsageError("--known_peaks needs one config and one --remat setting")
  rows, compiled = [], []
  for path in FLAGS.configs:
    for remat in (r.lower() in ("1", "true", "yes") for r in FLAGS.remat):
      m = Measurer(path, remat, devices, label=f"{path} remat={remat}")
      if FLAGS.batches:
        for b in FLAGS.batches:
          m.peak(int(b))
        continue
      for b in sorted({min(int(b), FLAGS.max_batch) for b in FLAGS.probe_batches} | {8}):
        m.peak(b)
      # Smallest capacity first: every batch compiled so far narrows the next search.
      found = {cap: largest_fitting(m, cap * GB, FLAGS.max_batch, FLAGS.min_batch)
               for cap in sorted(capacities)}
      cells = [table_cell(m.cache, cap * GB, *found[cap], m.hbm) for cap in capacities]
      compiled.append((path, remat, sorted((b, p, ESTIMATE in note)
                                           for b, (p, note) in m.cache.items())))
      rows.append((path, m.config.model.resolution, remat, m.config.model.compute_dtype,
                   m.peak(8)[0], cells))
  if FLAGS.batches:
    return
  header = ("| config | res | remat | dtype | peak at 8/device | "
            + " | ".join(f"{c:g} GB" for c in capacities) + " |")
  print()
  print(f"Largest per-device batch whose compiled iteration fits ({FLAGS.target}, {kind}"
        f"{overrides}):")
  print(header)
  print("|" + "---|" * (5 + len(capacities)))
  for path, res, remat, dtype, peak8, cells in rows:
    p8 = "?" if peak8 is None else f"{peak8 / GB:.2f} GB"
    print(f"| {os.path.basename(path)} | {res} | {'on' if remat else 'off'} | {dtype} | {p8} | "
          + " | ".join(cells) + " |")
  if any(c.startswith("~") for *_, cells in rows for c in cells):
    print("~: the answer rests on the compiler's out-of-HBM estimate (the capacity is above the "
          "target's HBM), not on compiled peaks: compile for a target with more HBM.")
  print()
  print("Every compiled peak (per-device batch: GB; 'est.' = the out-of-HBM estimate):")
  for path, remat, points in compiled:
    print(f"{os.path.basename(path)} remat {'on' if remat else 'off'}: " + ", ".join(
        f"{b}: {'?' if p is None else f'{p / GB:.2f}'}{' est.' if est else ''}"
        for b, p, est in points))


if __name__ == "__main__":
  app.run(main)
