"""Benchmark utilisation figures: XLA's FLOP count against an analytic one, MFU and memory plumbing."""
import functools
import importlib.util
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from conftest import FAST_COMPILE_FLAG, REPO, load_config
from gan_core import perf


# ------------------------------------------------------------------ analytic BigGAN-128 count
def _conv3(h: int, cin: int, cout: int, valid_taps: bool) -> int:
  """MACs of a 3x3 'same' convolution on an h x h map. valid_taps: only the taps that land
  inside the image (XLA's cost analysis convention); else all 9 per output (the usual one)."""
  taps = (3 * h - 2) ** 2 if valid_taps else 9 * h * h
  return taps * cin * cout


def _attention(r: int, c: int) -> int:
  """BigGAN self-attention on an r x r map with c channels: 1x1 theta/phi (c/8), g (c/2),
  o (c/2 -> c) at full resolution, keys and values max-pooled 2x2, two matmuls."""
  n = r * r
  return n * c * (c // 8) * 2 + n * c * (c // 2) * 2 + n * (n // 4) * (c // 8 + c // 2)


def biggan128_macs(ch: int = 96, valid_taps: bool = False) -> tuple[int, int]:
  """(G forward, D forward) MACs per image of BigGAN at 128x128, from the paper's table
  (G channels 16,16,8,4,2 -> 16,8,4,2,1 x ch; D 3,1,2,4,8,16 -> 1,2,4,8,16,16 x ch;
  attention at 64x64), convolutions, attention and the output layers; the small
  conditional-BN and spectral-norm matvecs are left out."""
  g = 20 * 4 * 4 * 16 * ch  # First linear from a 20-d z chunk.
  r = 4
  for a, b in zip((16, 16, 8, 4, 2), (16, 8, 4, 2, 1)):
    ci, co, r = a * ch, b * ch, 2 * r  # Upsample first, then convolve at the new size.
    g += _conv3(r, ci, co, valid_taps) + _conv3(r, co, co, valid_taps) + r * r * ci * co
    if r == 64:
      g += _attention(r, co)
  g += _conv3(128, ch, 3, valid_taps)
  d, r = 0, 128
  for i, (a, b) in enumerate(zip((3, 1, 2, 4, 8, 16), (1, 2, 4, 8, 16, 16))):
    ci, co = (a if i == 0 else a * ch), b * ch
    d += _conv3(r, ci, co, valid_taps) + _conv3(r, co, co, valid_taps)
    if i == 0:
      d += (r // 2) ** 2 * ci * co  # First block: pool, then the 1x1 shortcut.
    elif i < 5:
      d += r * r * ci * co  # Pre-activation blocks: 1x1 shortcut, then pool.
    if i < 5:
      r //= 2
    if i == 0:
      d += _attention(r, co)
  return g, d + 16 * ch * 2


def test_analytic_count_is_the_published_one():
  g, d = biggan128_macs(96)
  assert g / 1e9 == pytest.approx(21.1, abs=0.05)
  assert d / 1e9 == pytest.approx(10.8, abs=0.05)


def test_xla_cost_analysis_counts_biggan128_like_the_analytic_count():
  """The FLOPs the benchmarks report (XLA's cost analysis) agree with the hand count for
  BigGAN-128 ch96 (2 FLOPs per MAC, taps in the zero padding not counted, as XLA counts)."""
  from biggan_jax.models import build_models
  config = load_config("imagenet128")
  # The whole attention map: XLA's cost analysis counts a loop's body once, so the chunked
  # attention ('auto' on CPU) would hide 3/4 of it (train_step.model_flops does the same).
  config.model.attention_query_chunk = 0
  pair = build_models(config.model, 1000)
  batch = 2
  z, y = jnp.zeros((batch, 120)), jnp.zeros((batch,), jnp.int32)
  x = jnp.zeros((batch, 128, 128, 3))
  key = jax.random.PRNGKey(0)
  g_vars = jax.eval_shape(lambda: pair.generator.init(key, z, y))
  d_vars = jax.eval_shape(lambda: pair.discriminator.init(key, x, y))
  g_flops = perf.flops_of(
      jax.jit(lambda v: pair.generator.apply(v, z, y, train=False)).lower(g_vars))
  d_flops = perf.flops_of(
      jax.jit(lambda v: pair.discriminator.apply(v, x, y, mutable=True)).lower(d_vars))
  g_macs, d_macs = biggan128_macs(96, valid_taps=True)
  # What the hand count leaves out (elementwise ops, the CBN linears, SN's matvecs) is a
  # few percent at most; a missing or doubled layer would be far more.
  assert g_flops / batch / 2 == pytest.approx(g_macs, rel=0.05)
  assert d_flops / batch / 2 == pytest.approx(d_macs, rel=0.05)
  assert g_flops / batch / 2 >= g_macs and d_flops / batch / 2 >= d_macs


def test_utilisation_and_memory_of_a_compiled_matmul():
  a = jnp.ones((256, 256), jnp.float32)
  lowered = jax.jit(lambda x: x @ x).lower(a)
  assert perf.flops_of(lowered) == pytest.approx(2 * 256 ** 3, rel=0.01)
  peak = perf.peak_memory_bytes(lowered.compile())
  assert peak is not None and peak >= 2 * 256 * 256 * 4  # The argument and the result.
  u = perf.utilisation(2 * 256 ** 3, 1e-3, "float32")
  assert u["tflops"] == pytest.approx(2 * 256 ** 3 / 1e-3 / 1e12)
  assert 0 < u["mfu"] and u["peak_source"].startswith("measured")
  lines = perf.format_report(2 * 256 ** 3, 1e-3, peak)
  assert [line.split(":")[0] for line in lines] == [
      "model GFLOP/iteration", "achieved TFLOP/s", "MFU", "peak memory"]


def test_cpu_peak_is_the_better_of_xla_and_numpy_gemm(monkeypatch):
  """The CPU peak must not move with XLA's flags (Eigen's GEMM is ~25% under the BLAS with
  YNNPACK off): float32 takes the faster of XLA's and NumPy's GEMM; bfloat16 has only XLA's."""
  def timings(*seconds):
    calls = list(seconds)
    monkeypatch.setattr(perf, "_best_seconds", lambda call, repeats: calls.pop(0))
    monkeypatch.setattr(perf, "_CPU_PEAK_CACHE", {})
    return calls
  flops = 2.0 * 64 ** 3
  left = timings(2.0, 1.0)  # XLA, then NumPy.
  assert perf.cpu_gemm_peak("float32", n=64) == (flops / 1.0, "NumPy's BLAS GEMM") and not left
  left = timings(1.0, 2.0)
  assert perf.cpu_gemm_peak("float32", n=64) == (flops / 1.0, "XLA's GEMM") and not left
  left = timings(4.0)
  assert perf.cpu_gemm_peak("bfloat16", n=64) == (flops / 4.0, "XLA's GEMM") and not left
  monkeypatch.setattr(perf, "cpu_gemm_peak", lambda dtype: (1e11, "NumPy's BLAS GEMM"))
  assert perf.peak_flops(jax.devices("cpu")[0], "float32") == (
      1e11, "measured float32 GEMM on this CPU, NumPy's BLAS GEMM")


# A hand-written optimised-HLO program whose census is known: a while loop of known trip count
# 4 (a counter, a library convolution, a reduction of its 1M-element output to a scalar, an
# async all-reduce of that scalar; the first and third in a "spectral_norm" name scope), a
# loop whose trip count XLA does not know, an async reduce-scatter, a conditional with one
# and two kernels in its branches, and an outfeed to the host.
CENSUS_HLO = """HloModule census, is_scheduled=true

%add_comp (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

%body (p: (s32[], f32[1024,1024])) -> (s32[], f32[1024,1024]) {
  %p = (s32[], f32[1024,1024]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = f32[1024,1024]{1,0} get-tuple-element(%p), index=1
  %one = s32[] constant(1)
  %next = s32[] fusion(%i, %one), kind=kLoop, calls=%add_comp, metadata={op_name="jit(f)/spectral_norm/add"}
  %conv = (f32[1024,1024]{1,0}, u8[0]{0}) custom-call(%x), custom_call_target="__cudnn$convForward"
  %y = f32[1024,1024]{1,0} get-tuple-element(%conv), index=0
  %norm = f32[] fusion(%y), kind=kInput, calls=%add_comp, metadata={op_name="jit(f)/layer/spectral_norm/div"}
  %ars = f32[] all-reduce-start(%norm), replica_groups={}, to_apply=%add_comp
  %ard = f32[] all-reduce-done(%ars)
  ROOT %t = (s32[], f32[1024,1024]{1,0}) tuple(%next, %y)
}

%cond (p: (s32[], f32[1024,1024])) -> pred[] {
  %p = (s32[], f32[1024,1024]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %n = s32[] constant(4)
  ROOT %lt = pred[] fusion(%i, %n), kind=kLoop, calls=%add_comp
}

%body2 (q: f32[8]) -> f32[8] {
  %q = f32[8]{0} parameter(0)
  ROOT %r = f32[8]{0} fusion(%q), kind=kLoop, calls=%add_comp
}

%cond2 (q: f32[8]) -> pred[] {
  %q = f32[8]{0} parameter(0)
  ROOT %c = pred[] fusion(%q), kind=kInput, calls=%add_comp
}

%yes (a: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  ROOT %y1 = f32[] fusion(%a), kind=kLoop, calls=%add_comp
}

%no (a: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %n1 = f32[] fusion(%a), kind=kLoop, calls=%add_comp
  ROOT %n2 = f32[] fusion(%n1), kind=kLoop, calls=%add_comp
}

ENTRY %main (x: f32[1024,1024], v: f32[8]) -> f32[] {
  %x = f32[1024,1024]{1,0} parameter(0)
  %v = f32[8]{0} parameter(1)
  %zero = s32[] constant(0)
  %t = (s32[], f32[1024,1024]{1,0}) tuple(%zero, %x)
  %w = (s32[], f32[1024,1024]{1,0}) while(%t), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"4"}}
  %w2 = f32[8]{0} while(%v), condition=%cond2, body=%body2
  %y = f32[1024,1024]{1,0} get-tuple-element(%w), index=1
  %s = f32[] fusion(%y), kind=kInput, calls=%add_comp
  %rss = f32[256,1024]{1,0} reduce-scatter-start(%y), replica_groups={}, dimensions={0}, to_apply=%add_comp
  %rsd = f32[256,1024]{1,0} reduce-scatter-done(%rss)
  %pred = pred[] constant(true)
  %c = f32[] conditional(%pred, %s, %s), true_computation=%yes, false_computation=%no
  %tok = token[] after-all()
  %of = token[] outfeed(%c, %tok), outfeed_shape=f32[]
  ROOT %out = f32[] copy(%c)
}
"""


def test_kernel_census_counts_loop_bodies_per_iteration_and_small_kernels_by_their_operands():
  c = perf.kernel_census(CENSUS_HLO, scopes=("spectral_norm", "absent"))
  # Loop body 4 x (counter, convolution, reduction, all-reduce start; the done is a wait; a
  # loop of known trip count runs its body alone), the unknown loop's body once and its
  # condition twice, the entry's reduction, the reduce-scatter start, both conditional
  # branches (1 + 2), the outfeed and the final copy.
  assert c.kernels == 16 + 1 + 2 + 1 + 1 + 3 + 1 + 1
  # Not small: the convolution and both reductions of the 1M-element tensor (a scalar out,
  # a large operand in), and the reduce-scatter.
  assert c.small == c.kernels - 4 - 4 - 1 - 1
  assert c.by_kind == {"XLA fusion": 4 + 4 + 1 + 2 + 1 + 3, "convolution (library call)": 4,
                       "collective": 4 + 1, "host transfer": 1, "copy / transpose": 1}
  assert (c.collectives, c.host_transfers, c.in_branches, c.unknown_trip_counts) == (5, 1, 3, 1)
  # The unknown loop's two condition evaluations and the conditional's predicate.
  assert c.control_flow_syncs == 3
  assert c.by_scope == {"spectral_norm": (8, 4), "absent": (0, 0)}
  lines = perf.format_census(c)
  assert lines[0] == f"kernels per call: {c.kernels} ({c.small} small: no operand or output over 4096 elements)"
  assert "kernels in scope spectral_norm: 8 (4 small)" in lines
  assert any("unknown trip count" in l for l in lines) and any("branches" in l for l in lines)
  assert perf.kernel_census(CENSUS_HLO, small_elements=2 ** 20).small == c.kernels
  assert "over 1048576 elements" in perf.format_census(
      perf.kernel_census(CENSUS_HLO, small_elements=2 ** 20))[0]
  with pytest.raises(ValueError, match="no ENTRY"):
    perf.kernel_census("HloModule empty")


def test_kernel_census_attributes_spectral_norm_kernels_to_their_scope():
  """SN layers put their power iteration, sigma and W / sigma in a name scope that the
  compiled program's metadata keeps (and nothing else of the layer)."""
  from biggan_jax.layers import SN_SCOPE, SNConv
  m = SNConv(16)
  x = jnp.ones((2, 8, 8, 8))
  variables = m.init(jax.random.PRNGKey(0), x)
  f = jax.jit(lambda v, x: m.apply(v, x, mutable=["spectral"]))
  c = perf.kernel_census(f.lower(variables, x).compile().as_text(), scopes=(SN_SCOPE,))
  in_scope, _ = c.by_scope[SN_SCOPE]
  assert 0 < in_scope < c.kernels, c  # The convolution itself is outside the scope.


def test_kernel_census_of_a_compiled_loop_grows_with_its_trip_count():
  """On a real compiled program: a fori_loop's body counts once per iteration."""
  def program(trips):
    def f(x, w):
      return jax.lax.fori_loop(0, trips, lambda i, x: jnp.tanh(x @ w) + jnp.sum(x), x)
    x = jnp.ones((128, 128))
    return perf.kernel_census(jax.jit(f).lower(x, x).compile().as_text())
  c3, c7 = program(3), program(7)
  per_trip = (c7.kernels - c3.kernels) / 4
  assert per_trip >= 1 and per_trip == int(per_trip), (c3, c7)
  assert c3.unknown_trip_counts == c7.unknown_trip_counts == 0
  assert c3.collectives == c3.host_transfers == 0


def test_accelerator_peaks_are_looked_up_by_device_kind():
  class Fake:
    platform = "gpu"
    def __init__(self, kind):
      self.device_kind = kind
  assert perf.peak_flops(Fake("NVIDIA H100 80GB HBM3"), "bfloat16")[0] == 989.4e12
  assert perf.peak_flops(Fake("NVIDIA H200"), "float32")[0] == 494.7e12
  assert perf.peak_flops(Fake("NVIDIA H100 PCIe"), "bfloat16")[0] == 756e12
  assert perf.peak_flops(Fake("TPU v5 lite"), "bfloat16")[0] == 197e12
  with pytest.raises(KeyError, match="PEAK_TFLOPS"):
    perf.peak_flops(Fake("Some GPU"), "float32")
  with pytest.raises(ValueError, match="float32"):
    perf.peak_flops(Fake("NVIDIA H200"), "float16")


def run_benchmark(script: str, devices: int, *args: str) -> subprocess.CompletedProcess:
  """benchmarks/<script> with `args`, on `devices` simulated CPU devices."""
  env = dict(os.environ, XLA_FLAGS=(f"--xla_force_host_platform_device_count={devices} "
                                    f"{FAST_COMPILE_FLAG}"))
  return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def test_train_step_benchmark_prints_utilisation_and_writes_a_trace(tmp_path):
  out = run_benchmark(
      "train_step.py", 1,
      f"--config={REPO / 'configs' / 'digits32.py'}", "--steps=1", "--warmup=0",
      # Plumbing, not timing: a narrower model compiles faster.
      "--config.model.ch=4", "--config.model.dim_z=16", "--config.model.shared_dim=8",
      f"--profile={tmp_path / 'trace'}")
  assert out.returncode == 0, out.stderr[-3000:]
  fields = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
  assert float(fields["model GFLOP/iteration"]) > 0
  assert float(fields["achieved TFLOP/s"]) > 0
  assert re.search(r"GEMM on this CPU, (XLA's GEMM|NumPy's BLAS GEMM)\)$", fields["MFU"]), fields["MFU"]
  assert fields["peak memory"].endswith("(compiled memory analysis)")
  assert int(fields["kernels per iteration"].split()[0]) > 0
  assert fields["collectives"] == "0; host transfers: 0; control-flow syncs: 0"
  total, small = map(int, re.match(r"(\d+) \((\d+) small\)$",
                                   fields["kernels in scope spectral_norm"]).groups())
  assert 0 < small <= total < int(fields["kernels per iteration"].split()[0])
  traces = [f for _, _, files in os.walk(tmp_path / "trace") for f in files]
  assert any(f.endswith(".xplane.pb") for f in traces), traces
  # The op time by kind, read from that trace: convolutions are there and the shares add up
  # to 100% of the traced op time.
  shares = {k[len("op time, "):]: float(v.split("(")[1].rstrip("%)"))
            for k, v in fields.items() if k.startswith("op time, ")}
  assert any(k.startswith("convolution, ") and v > 0 for k, v in shares.items()), shares
  assert shares.get("other (normalisation, activations, optimizer, reductions)", 0) > 0, shares
  assert abs(sum(shares.values()) - 100) < 0.5, shares
  assert float(fields["traced op time"].split(" ms")[0]) > 0


def test_pggan_phases_benchmark_prints_utilisation_and_kernels_per_phase():
  out = run_benchmark("pggan_phases.py", 2, f"--config={REPO / 'configs' / 'pggan_digits32.py'}",
                      "--resolutions=4,8", "--steps=1")
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [dict(item.split("=", 1) for item in line.split())
          for line in out.stdout.splitlines() if line.startswith("res=")]
  # 4: the stable phase; 8: its fade-in and stable phases.
  assert [(r["res"], r["fading"]) for r in rows] == [
      ("4", "False"), ("8", "True"), ("8", "False")], out.stdout
  for r in rows:
    assert float(r["gflop"]) > 0 and float(r["tflops"]) > 0 and r["mfu"].endswith("%"), r
    assert float(r["peak_mem_gib"]) > 0, r
    assert 0 < int(r["small_kernels"]) <= int(r["kernels"]), r
  # Fading in adds the skip path's layers: more kernels than the stable phase at 8.
  assert int(rows[1]["kernels"]) > int(rows[2]["kernels"]), rows


def test_inception_benchmark_prints_utilisation_and_kernels_per_batch():
  out = run_benchmark("inception_throughput.py", 1, "--torch=false", "--num_images=8",
                      "--batch_size=8", "--image_size=64")
  assert out.returncode == 0, out.stderr[-3000:]
  fields = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
  assert float(fields["model GFLOP/batch"]) > 0
  assert float(fields["images/s"]) > 0
  assert re.search(r"GEMM on this CPU, (XLA's GEMM|NumPy's BLAS GEMM)\)$", fields["MFU"]), fields
  assert fields["peak memory"].endswith("(compiled memory analysis)")
  kernels, small = map(int, re.match(r"(\d+) \((\d+) small", fields["kernels per batch"]).groups())
  assert 0 < small < kernels
  assert "convolution" in fields["kernels by kind"]


def test_model_flops_leave_out_what_the_memory_knobs_recompute(tiny):
  """MFU counts the model's arithmetic: with model.remat and model.attention_query_chunk on
  (the same function), train_step.py's model FLOPs are the plain iteration's, although the
  lowered program with the knobs on holds the recomputation (and a loop) and counts
  differently."""
  import numpy as np
  from biggan_jax.train import BigGANTrainer
  from gan_core import parallel
  spec = importlib.util.spec_from_file_location("train_step_bench",
                                                REPO / "benchmarks" / "train_step.py")
  train_step = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(train_step)  # Defines its absl flags: once per process.
  tiny.num_d_steps = 1
  mesh = parallel.make_mesh()
  trainer = BigGANTrainer(tiny, 10, mesh)
  state = trainer.init_state(0)  # The knobs keep the parameter tree: one state serves all.
  shape = trainer.batch_leading_shape
  batch = {"images": parallel.global_array_from_local(
               np.zeros(shape + (32, 32, 3), np.uint8), mesh, 2),
           "labels": parallel.global_array_from_local(np.zeros(shape, np.int32), mesh, 2)}
  plain = train_step.model_flops(tiny, 10, mesh, state, batch)
  knobs = tiny.copy_and_resolve_references()
  knobs.model.remat = True
  knobs.model.attention_query_chunk = 64  # Attention at 16x16: 4 chunks.
  assert train_step.model_flops(knobs, 10, mesh, state, batch) == plain > 0
  knobs.scan_unroll = "always"
  assert perf.flops_of(BigGANTrainer(knobs, 10, mesh).train_iteration.lower(
      state, batch)) != plain


def test_training_turns_ynnpack_fusions_off_unless_the_user_chose():
  """XLA:CPU's YNNPACK kernel gradients are slow (RESULTS.md): training asks for the Eigen
  path before JAX starts, and keeps a user's own setting of the flag."""
  code = ("import os; from gan_core.xla_flags import prefer_eigen_convolutions as p; "
          "print(p()); print(os.environ['XLA_FLAGS'])")
  def run(xla_flags):
    env = dict(os.environ, XLA_FLAGS=xla_flags)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()
  assert run("--xla_force_host_platform_device_count=2") == [
      "True", "--xla_force_host_platform_device_count=2 --xla_cpu_experimental_ynn_fusion_type="]
  mine = "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"
  assert run(mine) == ["False", mine]


@functools.lru_cache(maxsize=None)
def _memory_headroom_module():  # Once: its absl flags can be defined only once per process.
  import importlib.util
  spec = importlib.util.spec_from_file_location("memory_headroom",
                                                REPO / "benchmarks" / "memory_headroom.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_memory_headroom_reads_the_tpu_compilers_out_of_memory_figure_and_bisects():
  mh = _memory_headroom_module()
  message = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory "
             "space hbm. Used 20.51G of 15.75G hbm. Exceeded hbm capacity by 4.76G.")
  assert mh.used_bytes_from_error(message) == int(20.51 * 2**30)
  assert mh.used_bytes_from_error("INTERNAL: something else") is None
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
             "temporaries (31.17G) exceeds available HBM (15.75G).")  # Temporaries only:
  assert mh.used_bytes_from_error(message, 2_000_000) == int(31.17 * 2**30) + 2_000_000

  class Compiler:  # A peak curve; records the batches it was asked to compile.
    def __init__(self, curve, probes=(8, 64)):
      self.curve, self.cache, self.asked = curve, {}, []
      for b in probes:
        self.peak(b)
      self.asked.clear()

    def peak(self, b):
      if b not in self.cache:
        self.asked.append(b)
        self.cache[b] = self.curve(b), ""
      return self.cache[b]

  linear = lambda b: int((1 + 0.1 * b) * 1e9)  # 1 GB + 0.1 GB per example.
  for capacity, answer in [(8e9, 64), (10.7e9, 96), (32e9, 304), (141e9, 1400)]:
    m = Compiler(linear)
    fits, fails = mh.largest_fitting(m, capacity, 4096)
    # The largest multiple of 8 that fits, and the next one, both compiled: no figure guessed.
    assert (fits, fails) == (answer, answer + 8), capacity
    assert m.cache[fits][0] <= capacity < m.cache[fails][0]
    # Aimed along the line through the probes: at most the crossing and 8 beyond it.
    assert len(m.asked) <= 2 and all(b % 8 == 0 for b in m.asked), m.asked
  m = Compiler(linear)
  assert mh.largest_fitting(m, 1e15, 4096) == (4096, None)  # Everything fits: '>= 4096'.
  # Below 8 the search steps by 1 (BigGAN-512 ran at 4 per TPU core), with compiled brackets.
  m = Compiler(linear)
  assert mh.largest_fitting(m, 1.45e9, 4096) == (4, 5)
  assert all(b < 8 for b in m.asked) and len(m.asked) <= 4, m.asked
  assert mh.largest_fitting(Compiler(linear), 0.5e9, 4096) == (None, 1)  # Nothing fits: '< 1'.
  assert mh.largest_fitting(Compiler(linear), 1.45e9, 4096, min_batch=8) == (None, 8)
  assert mh.largest_fitting(Compiler(linear), 1.85e9, 4096, min_batch=2) == (8, 16)
  assert mh.largest_fitting(Compiler(linear), 1.15e9, 4096, min_batch=2) == (None, 2)

  # A curved peak (the search comes at it from one side) and compiles that fail without a
  # figure (None) still end bracketed to 8, in fewer compiles than stepping by 8 would.
  curved = lambda b: int((3 + 0.02 * b + 0.0002 * b * b) * 1e9)
  for capacity in (16e9, 32e9, 80e9, 141e9):
    m = Compiler(curved)
    fits, fails = mh.largest_fitting(m, capacity, 4096)
    assert fails == fits + 8 and curved(fits) <= capacity < curved(fails), capacity
    assert len(m.asked) <= 14, m.asked
  m = Compiler(lambda b: None if b > 100 else linear(b))
  assert mh.largest_fitting(m, 50e9, 4096) == (96, 104)


def test_memory_headroom_marks_answers_that_rest_on_the_out_of_hbm_estimate():
  mh = _memory_headroom_module()
  refusal = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
             "temporaries (31.17G) exceeds available HBM (15.75G).")
  assert mh.hbm_bytes_from_error(refusal) == int(15.75 * 2**30)
  assert mh.hbm_bytes_from_error("Used 20.51G of 94.75G hbm. Exceeded") == int(94.75 * 2**30)
  assert mh.hbm_bytes_from_error("INTERNAL: something else") is None
  hbm = int(15.75 * 2**30)
  compiled, estimate = "300 s", f"12 s, {mh.ESTIMATE}: temporaries + arguments"
  cache = {8: (4e9, compiled), 112: (15.9e9, compiled), 120: (16.6e9, estimate),
           232: (31.2e9, estimate), 240: (32.5e9, estimate)}
  # Within the target's HBM a refusal is proof: 120 does not fit 16 GB on this target.
  assert mh.table_cell(cache, 16e9, 112, 120, hbm) == "112"
  # Above it, both sides of the bracket are the compiler's estimates: marked.
  assert mh.table_cell(cache, 32e9, 232, 240, hbm) == "~232"
  # A compiled fit beside an estimated failure above the HBM (or an unknown HBM): marked.
  assert mh.table_cell(cache, 20e9, 112, 120, hbm) == "~112"
  assert mh.table_cell(cache, 16e9, 112, 120, None) == "~112"
  assert mh.table_cell(cache, 1e15, 240, None, hbm) == "~>= 240"
  assert mh.table_cell(cache, 1e9, None, 8, hbm) == "< 8"
  assert mh.table_cell({**cache, 1: (3e9, compiled)}, 1e9, None, 1, hbm) == "< 1"


def test_memory_headroom_gpu_specs_resolve_and_name_their_memory():
  mh = _memory_headroom_module()
  sizes = {}
  for name in ("h100", "h200"):
    path = mh.gpu_spec_path(name)
    text = open(path).read()
    assert 'platform_name: "CUDA"' in text and "major: 9" in text, path
    sizes[name] = int(re.search(r"device_memory_size: (\d+)", text).group(1))
    assert mh.gpu_spec_path(path) == path  # A path is taken as is.
  # The totals CUDA reports for the two cards: 79.1 GiB and 141 GiB.
  assert 79 < sizes["h100"] / 2**30 < 80 and sizes["h200"] == 141 * 2**30, sizes
  with pytest.raises(ValueError, match=r"no such spec; use one of \['h100', 'h200'\]"):
    mh.gpu_spec_path("h300")
  if importlib.util.find_spec("jax_cuda12_plugin") is None:  # As in CI: say what to install.
    with pytest.raises(RuntimeError, match=r"pip install \"jax\[cuda12\]"):
      mh.gpu_compile_only_devices("h200", 2)


def test_memory_headroom_benchmark_prints_the_table_on_this_cpu():
  out = run_benchmark(
      "memory_headroom.py", 2,
      f"--configs={REPO / 'configs' / 'digits32.py'}", "--remat=false", "--max_batch=8",
      "--capacities_gb=0.000001,1000", "--min_batch=8", "--set=model.ch=4", "--set=model.dim_z=16",
      "--set=model.shared_dim=8", "--census")
  assert out.returncode == 0, out.stderr[-3000:]
  census = [l for l in out.stdout.splitlines() if "kernels per iteration: " in l]
  assert census and "batch 8/device: kernels per iteration: " in census[0], out.stdout
  assert int(census[0].split("kernels per iteration: ")[1].split()[0]) > 0
  row = [l for l in out.stdout.splitlines() if l.startswith("| digits32.py")]
  assert len(row) == 1, out.stdout
  cells = [c.strip() for c in row[0].strip("|").split("|")]
  assert cells[:4] == ["digits32.py", "32", "off", "float32"], cells
  assert float(cells[4].split()[0]) > 0  # The compiled peak at 8 per device, in GB.
  assert cells[5:] == ["< 8", ">= 8"], cells


def test_cpu_bf16_repro_prints_a_rate_per_op_dtype_and_flag_set():
  out = run_benchmark("cpu_bf16_repro.py", 1, "--gemm=64", "--conv=1,8,8,4,4", "--repeats=1",
                      "--flag_sets=default,eigen")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("CPU: ") and "avx512_bf16: " in out.stdout, out.stdout
  rows = {l.split("|")[1].strip(): l for l in out.stdout.splitlines() if l.startswith("| ")}
  assert {"jax, jaxlib's default", "jax, YNNPACK fusions off (our training default)"} <= set(rows)
  for label, line in rows.items():
    if label == "run":
      continue
    cells = [c.strip() for c in line.strip().strip("|").split("|")][1:]
    assert len(cells) == 6, line  # f32 and bf16 for the GEMM, conv forward, kernel gradient.
    assert all(float(c.split()[0]) > 0 for c in cells), line
  torch_row = "torch (oneDNN)" in rows
  assert torch_row or "torch not installed" in out.stdout, out.stdout
  bad = run_benchmark("cpu_bf16_repro.py", 1, "--flag_sets=nonesuch")
  assert bad.returncode != 0 and "known: default" in bad.stderr, bad.stderr[-500:]
