"""Utilisation figures for the benchmarks: FLOPs, achieved TFLOP/s, MFU, peak memory, traces.

- `flops_of(lowered)`: floating-point operations of one call, from XLA's HLO cost analysis
  of the lowered (not yet optimised) program, i.e. the model's arithmetic as written, before
  fusion or rematerialisation. Loops are not multiplied by their trip counts by that
  analysis, so the benchmarks count a program traced without loops (`scan_unroll='always'`).
- `peak_flops(device, dtype)`: the device's dense matmul peak, from published data-sheet
  figures for accelerators (`PEAK_TFLOPS`), measured on the spot with a GEMM on CPUs (the
  better of XLA's and NumPy's BLAS in float32, so the peak does not move with XLA flags).
- `peak_memory_bytes(compiled)`: from XLA's memory analysis of the compiled program.
- `trace(dir)`: a `jax.profiler` trace of the timed steps (view with TensorBoard/Perfetto).
- `kernel_census(compiled.as_text())`: what one call launches (kernels by kind, the small,
  launch-bound ones, collectives, host transfers), loop bodies counted per iteration: a
  static count from the optimised HLO, for any target, deviceless compiles included.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

# Dense (no sparsity) peak TFLOP/s per chip: (bfloat16, float32 as JAX runs it by default).
# GPUs: float32 matmuls run as TF32 on tensor cores under JAX's default precision.
# TPUs: float32 matmuls run as bfloat16 passes under the default precision, so the
# bfloat16 peak is the ceiling for both. Sources: NVIDIA H100/H200/A100 and Google
# Cloud TPU v4/v5e/v5p data sheets. Matched in order against `device.device_kind`.
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.4, 494.7),
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.4, 494.7),  # SXM
    ("A100", 312.0, 156.0),
    ("TPU v5p", 459.0, 459.0),
    ("TPU v5 lite", 197.0, 197.0),  # v5e's device_kind
    ("TPU v5e", 197.0, 197.0),
    ("TPU v4", 275.0, 275.0),
)

_CPU_PEAK_CACHE: dict[str, float] = {}


def dtype_name(dtype: Any) -> str:
  """'bfloat16' for any bfloat16 spelling or dtype, else 'float32' (the peak table's keys)."""
  return "bfloat16" if "bf" in str(dtype).lower() else "float32"


def flops_of(lowered: Any) -> float:
  """FLOPs of one call of a lowered `jax.jit` program (0 where XLA reports none)."""
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX: one dict per computation.
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def peak_memory_bytes(compiled: Any) -> int | None:
  """Peak device memory of a compiled program: its arguments, outputs and temporaries,
  less the outputs that alias (donated) arguments. None where the backend has no analysis."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # Some backends do not implement it.
    return None
  if m is None:
    return None
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
           - m.alias_size_in_bytes)
  return int(total + getattr(m, "generated_code_size_in_bytes", 0))


def _best_seconds(call, repeats: int) -> float:
  call()  # Compilation, thread-pool start-up, first touch of the operands.
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    call()
    best = min(best, time.perf_counter() - t0)
  return best


def cpu_gemm_peak(dtype: str = "float32", n: int = 2048,
                  repeats: int = 8) -> tuple[float, str]:
  """(best FLOP/s of an n x n GEMM on this CPU, which GEMM gave it), measured now (cached).

  XLA's own GEMM depends on the process's XLA flags: with YNNPACK fusions off (the training
  default, `gan_core.xla_flags`) it takes Eigen's path, about 25% under the CPU's BLAS on a
  2-core AVX2 host (138 against 190 GFLOP/s in float32). A peak that moves with a flag we
  set for convolutions would flatter the MFU, so float32 takes the better of XLA's GEMM and
  NumPy's (its BLAS, all cores). NumPy has no bfloat16 BLAS: bfloat16 is XLA's GEMM only.
  """
  key = f"{dtype}:{n}"
  if key not in _CPU_PEAK_CACHE:
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    x = jnp.asarray(a, dtype=dtype)
    matmul = jax.jit(lambda p, q: p @ q)
    flops = 2.0 * n ** 3
    best = (flops / _best_seconds(lambda: matmul(x, x).block_until_ready(), repeats),
            "XLA's GEMM")
    if dtype == "float32":
      numpy_flops = flops / _best_seconds(lambda: a @ a, repeats)
      if numpy_flops > best[0]:
        best = (numpy_flops, "NumPy's BLAS GEMM")
    _CPU_PEAK_CACHE[key] = best
  return _CPU_PEAK_CACHE[key]


def peak_flops(device: jax.Device | None = None, dtype: str = "float32") -> tuple[float, str]:
  """(peak FLOP/s of one device for `dtype`, where the figure comes from)."""
  device = device or jax.devices()[0]
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype={dtype!r}: choose 'float32' or 'bfloat16'")
  if device.platform == "cpu":
    peak, which = cpu_gemm_peak(dtype)
    return peak, f"measured {dtype} GEMM on this CPU, {which}"
  kind = device.device_kind
  for name, bf16, f32 in PEAK_TFLOPS:
    if name.lower() in kind.lower():
      return (bf16 if dtype == "bfloat16" else f32) * 1e12, f"{name} data sheet ({dtype})"
  raise KeyError(f"no peak figure for device kind {kind!r}: add it to gan_core.perf.PEAK_TFLOPS")


def utilisation(flops_per_call: float, seconds_per_call: float, dtype: str = "float32",
                num_devices: int | None = None) -> dict[str, Any]:
  """Achieved TFLOP/s (all devices) and MFU against `num_devices` x the device peak."""
  num_devices = num_devices or jax.device_count()
  achieved = flops_per_call / seconds_per_call
  out: dict[str, Any] = {"tflops": achieved / 1e12}
  try:
    peak, source = peak_flops(jax.devices()[0], dtype)
  except KeyError as e:
    out.update(mfu=None, peak_source=str(e))
    return out
  if jax.devices()[0].platform == "cpu":
    num_devices = 1  # Simulated CPU devices share one processor: one measured peak.
  out.update(mfu=achieved / (peak * num_devices), peak_tflops=peak / 1e12 * num_devices,
             peak_source=source)
  return out


def format_report(flops_per_call: float, seconds_per_call: float, peak_bytes: int | None,
                  dtype: str = "float32") -> list[str]:
  """The benchmark lines: model FLOPs, achieved TFLOP/s, MFU and peak memory."""
  u = utilisation(flops_per_call, seconds_per_call, dtype)
  lines = [f"model GFLOP/iteration: {flops_per_call / 1e9:.2f}",
           f"achieved TFLOP/s: {u['tflops']:.3f}"]
  if u["mfu"] is None:
    lines.append(f"MFU: n/a ({u['peak_source']})")
  else:
    lines.append(f"MFU: {100 * u['mfu']:.1f}% (peak {u['peak_tflops']:.2f} TFLOP/s, "
                 f"{u['peak_source']})")
  lines.append("peak memory: n/a" if peak_bytes is None
               else f"peak memory: {peak_bytes / 2 ** 30:.3f} GiB (compiled memory analysis)")
  return lines


@contextlib.contextmanager
def trace(directory: str | None) -> Iterator[None]:
  """A `jax.profiler` trace into `directory` around the block (nothing when None/empty)."""
  if not directory:
    yield
    return
  jax.profiler.start_trace(directory)
  try:
    yield
  finally:
    jax.profiler.stop_trace()


# --- where the time goes: a trace's op events grouped by kind ---------------------------------


def _op_kind(name: str, hlo_line: str) -> str:
  """A coarse kind for one compiled op, from its HLO line (shape and source metadata)."""
  op = re.search(r'op_name="([^"]*)"', hlo_line)
  op = op.group(1) if op else ""
  shape = re.match(r"\w+\[([\d,]*)\]", hlo_line)
  dims = shape.group(1).split(",") if shape else []
  # A kernel gradient comes out as [O, kh, kw, I] or [kh, kw, I, O] with small square taps
  # (XLA drops the source metadata of some of them).
  kernel_shaped = len(dims) == 4 and ((dims[1] == dims[2] and dims[1] in ("1", "3", "4"))
                                      or (dims[0] == dims[1] and dims[0] in ("1", "3", "4")))
  if "conv_general_dilated" in op or (not op and name.startswith("ynn_fusion") and kernel_shaped):
    if "transpose(" not in op and op:
      return "convolution, forward"
    if kernel_shaped:
      return "convolution, kernel gradient"
    return "convolution, input gradient"
  if "attention" in op:
    return "attention (excluding its 1x1 convolutions)"
  if "dot_general" in op or name.startswith("dot"):
    return "dense / matmul"
  if name.startswith(("transpose", "copy")):
    return "transposes and copies"
  return "other (normalisation, activations, optimizer, reductions)"


def op_breakdown(trace_dir: str, hlo_text: str) -> list[tuple[str, float]]:
  """(kind, milliseconds) of the ops of `hlo_text`'s program in a trace, largest first.

  Milliseconds are summed over the events of every thread, so on a multi-threaded CPU they add
  up to more than wall time; the shares are what matter. Needs per-op trace events: XLA:CPU
  writes them after `xla_flags.trace_cpu_ops()`. Returns [] when the trace has none.
  """
  import collections
  import glob
  import os
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  lines = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*)", line)
    if m:
      lines.setdefault(m.group(1), m.group(2))
  totals: collections.Counter = collections.Counter()
  for path in glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True):
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
      space.ParseFromString(f.read())
    for plane in space.planes:
      for line in plane.lines:
        for event in line.events:
          name = plane.event_metadata[event.metadata_id].name
          if name in lines:  # An op of this program (not a runtime or Python event).
            totals[_op_kind(name, lines[name])] += event.duration_ps / 1e9
  return totals.most_common()


def format_breakdown(breakdown: list[tuple[str, float]]) -> list[str]:
  total = sum(ms for _, ms in breakdown)
  lines = [f"op time, {kind}: {ms:.1f} ms ({100 * ms / total:.1f}%)" for kind, ms in breakdown]
  if breakdown:
    lines.append(f"traced op time: {total:.1f} ms, summed over threads (XLA:CPU traces its "
                 "YNNPACK and loop fusions per op, not its Eigen convolutions)")
  return lines


# --- what the compiled program launches: a static kernel census ------------------------------

SMALL_KERNEL_ELEMENTS = 4096
# Instructions that launch nothing: plumbing and the control flow whose computations are
# walked instead. The waits and updates of async pairs (`*-done`, `*-update`) are left out
# too: their start is counted.
_NOT_KERNELS = frozenset({
    "parameter", "get-tuple-element", "tuple", "bitcast", "constant", "after-all",
    "partition-id", "replica-id", "add-dependency", "opt-barrier", "domain", "while",
    "conditional", "call"})
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute",
                "all-to-all", "collective-broadcast", "ragged-all-to-all")


@dataclasses.dataclass
class KernelCensus:
  """What one call of a compiled program launches, read from its optimised HLO.

  Each executed top-level instruction that does work (a fusion, a library call, a copy, a
  collective's start, ...) counts once per execution: a while loop's body counts once per
  iteration of its known trip count (XLA then runs the body alone, without the condition).
  `small` counts those whose largest operand or output has at most `small_elements`
  elements (on an accelerator their time is launch and latency, not arithmetic or
  bandwidth). `by_scope` maps each requested name-scope substring to (kernels, small) of the
  instructions whose `op_name` metadata contains it (e.g. "spectral_norm"). A static count,
  not a timing: what a profile on the device would attribute time to.
  """
  kernels: int = 0
  small: int = 0
  small_elements: int = SMALL_KERNEL_ELEMENTS
  by_kind: dict = dataclasses.field(default_factory=dict)
  by_scope: dict = dataclasses.field(default_factory=dict)
  collectives: int = 0
  host_transfers: int = 0
  # Predicates that decide control flow on the host: every executed conditional and every
  # condition of a loop whose trip count XLA does not know (XLA:GPU copies each to the host).
  control_flow_syncs: int = 0
  in_branches: int = 0  # In conditional branches: all branches counted, each call runs one.
  unknown_trip_counts: int = 0  # While loops whose trip count XLA does not know: counted once.


def _split_computations(hlo_text: str) -> tuple[dict[str, list[str]], str]:
  comps: dict[str, list[str]] = {}
  entry, current = "", None
  for line in hlo_text.splitlines():
    m = re.match(r"^(ENTRY )?%?([\w.\-]+) \(.*\) -> .*\{\s*$", line)
    if m:
      current = m.group(2)
      comps[current] = []
      if m.group(1):
        entry = current
    elif line.startswith("}"):
      current = None
    elif current is not None:
      comps[current].append(line)
  if not entry:
    raise ValueError("kernel_census: no ENTRY computation in the HLO text")
  return comps, entry


def _balanced(text: str) -> int:
  """The index just past the parenthesis that closes text[0] == '(' (or len(text))."""
  depth = 0
  for i, ch in enumerate(text):
    depth += ch == "("
    depth -= ch == ")"
    if depth == 0:
      return i + 1
  return len(text)


def _parse_instruction(line: str) -> tuple[str, str, str, str, str] | None:
  """(name, shape, opcode, operands, attributes) of one HLO instruction line."""
  m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
  if not m:
    return None
  rest = line[m.end():]
  if rest.startswith("("):  # A tuple shape: up to the matching parenthesis.
    end = _balanced(rest)
    shape, rest = rest[:end], rest[end:].lstrip()
  else:
    shape, _, rest = rest.partition(" ")
  op = re.match(r"([\w\-]+)\(", rest)
  if not op:
    return None
  end = _balanced(rest[op.end() - 1:]) + op.end() - 1
  return m.group(1), shape, op.group(1), rest[op.end():end - 1], rest[end:]


def _elements(shape_text: str) -> list[int]:
  sizes = []
  for dims in re.findall(r"\b[a-z][a-z0-9]*\[([\d,]*)\]", shape_text):
    n = 1
    for d in dims.split(","):
      if d:
        n *= int(d)
    sizes.append(n)
  return sizes


def _kind(op: str, shape: str, attributes: str) -> str:
  target = re.search(r'custom_call_target="([^"]*)"', attributes)
  fusion_kind = re.search(r'"kind":"(__[\w$]+)"', attributes)
  if op == "custom-call":
    t = target.group(1).lower() if target else ""
    if "callback" in t or "host" in t:
      return "host callback"
    if "conv" in t:
      return "convolution (library call)"
    if "gemm" in t or "matmul" in t or "blas" in t:
      return "GEMM (library call)"
    return "other library call"
  if op == "fusion":
    k = fusion_kind.group(1).lower() if fusion_kind else ""
    if "gemm" in k or "dot" in k or "blas" in k:
      return "GEMM (Triton / library fusion)"
    if "cudnn" in k:
      return "cuDNN fusion"
    if k:
      return f"library fusion ({k.strip('_')})"
    return "XLA fusion"
  if op == "convolution":
    return "convolution"
  if op == "dot":
    return "GEMM"
  if op == "copy-start" and "S(5)" in shape:  # To or from host memory (offloading).
    return "host transfer"
  if op in ("copy", "copy-start", "transpose"):
    return "copy / transpose"
  if op in ("send", "recv"):
    return "host transfer" if "is_host_transfer=true" in attributes else "collective"
  if op in ("infeed", "outfeed"):
    return "host transfer"
  if op.removesuffix("-start") in _COLLECTIVES or (
      op == "async-start" and any(c in attributes for c in _COLLECTIVES)):
    return "collective"
  return "other"


def kernel_census(hlo_text: str, small_elements: int = SMALL_KERNEL_ELEMENTS,
                  scopes: tuple[str, ...] = ()) -> KernelCensus:
  """The static kernel census of a compiled program (`compiled.as_text()`): KernelCensus."""
  comps, entry = _split_computations(hlo_text)
  census = KernelCensus(small_elements=small_elements)
  kinds: dict[str, int] = {}
  in_scope = {scope: [0, 0] for scope in scopes}

  def walk(name: str, mult: int, in_branch: bool, depth: int) -> None:
    if depth > 64 or name not in comps:
      return
    shapes: dict[str, str] = {}
    for line in comps[name]:
      parsed = _parse_instruction(line)
      if parsed is None:
        continue
      inst, shape, op, operands, attributes = parsed
      shapes[inst] = shape
      if op == "while":
        trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', attributes)
        body = re.search(r"body=%?([\w.\-]+)", attributes)
        cond = re.search(r"condition=%?([\w.\-]+)", attributes)
        if trip is None:  # Counted as one iteration: the condition runs twice.
          census.unknown_trip_counts += 1
          census.control_flow_syncs += 2 * mult
          if cond:
            walk(cond.group(1), 2 * mult, in_branch, depth + 1)
        if body:
          walk(body.group(1), mult * (int(trip.group(1)) if trip else 1), in_branch, depth + 1)
      elif op == "conditional":
        census.control_flow_syncs += mult
        branches = re.search(r"branch_computations=\{([^}]*)\}", attributes)
        names = (re.findall(r"%?([\w.\-]+)", branches.group(1)) if branches else
                 re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", attributes))
        for b in names:
          walk(b, mult, True, depth + 1)
      elif op == "call":
        callee = re.search(r"to_apply=%?([\w.\-]+)", attributes)
        if callee:
          walk(callee.group(1), mult, in_branch, depth + 1)
      if op in _NOT_KERNELS or op.endswith(("-done", "-update")):
        continue
      sizes = _elements(shape) + _elements(operands) + [
          n for o in re.findall(r"%([\w.\-]+)", operands) for n in _elements(shapes.get(o, ""))]
      small = max(sizes, default=0) <= small_elements
      kind = _kind(op, shape, attributes)
      census.kernels += mult
      census.small += mult if small else 0
      census.collectives += mult if kind == "collective" else 0
      census.host_transfers += mult if kind in ("host transfer", "host callback") else 0
      census.in_branches += mult if in_branch else 0
      kinds[kind] = kinds.get(kind, 0) + mult
      if in_scope:
        op_name = re.search(r'op_name="([^"]*)"', attributes)
        for scope, counts in in_scope.items():
          if op_name and scope in op_name.group(1):
            counts[0] += mult
            counts[1] += mult if small else 0

  walk(entry, 1, False, 0)
  census.by_kind = dict(sorted(kinds.items(), key=lambda kv: -kv[1]))
  census.by_scope = {scope: tuple(counts) for scope, counts in in_scope.items()}
  return census


def format_census(census: KernelCensus, per: str = "call") -> list[str]:
  lines = [f"kernels per {per}: {census.kernels} ({census.small} small: no operand or output "
           f"over {census.small_elements} elements)",
           "kernels by kind: " + ", ".join(f"{k} {n}" for k, n in census.by_kind.items())]
  lines += [f"kernels in scope {scope}: {n} ({small} small)"
            for scope, (n, small) in census.by_scope.items()]
  lines.append(f"collectives: {census.collectives}; host transfers: {census.host_transfers}; "
               f"control-flow syncs: {census.control_flow_syncs}")
  if census.in_branches:
    lines.append(f"in conditional branches (each call runs one): {census.in_branches}")
  if census.unknown_trip_counts:
    lines.append(f"loops of unknown trip count, counted once: {census.unknown_trip_counts}")
  return lines
