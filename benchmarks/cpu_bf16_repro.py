r"""Minimal reproduction: bfloat16 is no faster than float32 on XLA:CPU, even with AVX-512 BF16.

  python benchmarks/cpu_bf16_repro.py [--gemm=2048] [--conv=8,64,64,128,128] [--repeats=5]
      [--flag_sets=default,eigen,ynn_dot,...] [--threads=2]

Times, in float32 and bfloat16 (float32 accumulation, as in training), on this CPU:
`gemm` (an n x n x n matmul) and a 3x3 convolution's forward and kernel gradient at
(N, H, W, Cin, Cout), each compiled once and timed best of `--repeats`, under each of the
XLA:CPU flag sets below (one subprocess each, since XLA_FLAGS is read at start-up), then the
same ops in torch (oneDNN) where torch is installed. Prints GFLOP/s and bf16's speed-up over
f32. Prints the CPU's bf16 instruction-set flags first (avx512_bf16, amx_bf16): a CPU with
either should run bf16 GEMMs at up to 2x (AVX-512 BF16) or far more (AMX) the f32 rate,
as torch does. Self-contained (jax, optionally torch), so it can be attached to an
upstream report as is.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

FLAG_SETS = {  # name: (XLA_FLAGS added, what it is)
    "default": ("", "jaxlib's default"),
    "eigen": ("--xla_cpu_experimental_ynn_fusion_type=", "YNNPACK fusions off (our training default)"),
    "ynn_dot": ("--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
                "YNNPACK dot fusions"),
    "ynn_individual_dot": ("--xla_cpu_experimental_ynn_fusion_type="
                           "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT", "YNNPACK individual dots only"),
    "ynn_individual_conv": ("--xla_cpu_experimental_ynn_fusion_type="
                            "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
                            "YNNPACK individual convolutions only"),
    "onednn": ("--xla_cpu_use_onednn=true", "--xla_cpu_use_onednn"),
    "onednn_custom_call": ("--xla_cpu_experimental_onednn_custom_call=true", "oneDNN custom calls"),
    "xnnpack": ("--xla_cpu_use_xnnpack=true", "--xla_cpu_use_xnnpack"),
}


def parse(argv: list[str]) -> dict:
  opts = {"gemm": 2048, "conv": (8, 64, 64, 128, 128), "repeats": 5, "worker": None,
          "threads": 2, "flag_sets": list(FLAG_SETS)}
  for arg in argv:
    name, _, value = arg.lstrip("-").partition("=")
    if name == "gemm":
      opts["gemm"] = int(value)
    elif name == "conv":
      opts["conv"] = tuple(int(v) for v in value.split(","))
      if len(opts["conv"]) != 5:
        raise SystemExit(f"--conv={value!r}: expected N,H,W,CIN,COUT, e.g. 8,64,64,128,128")
    elif name == "repeats":
      opts["repeats"] = int(value)
    elif name == "threads":
      opts["threads"] = int(value)
    elif name == "flag_sets":
      opts["flag_sets"] = [v for v in value.split(",") if v]
      unknown = set(opts["flag_sets"]) - set(FLAG_SETS)
      if unknown:
        raise SystemExit(f"--flag_sets: unknown {sorted(unknown)}; known: {', '.join(FLAG_SETS)}")
    elif name == "worker":
      opts["worker"] = value
    else:
      raise SystemExit(f"unknown argument {arg!r}; see the docstring: python {sys.argv[0]}")
  return opts


def _best(fn, args, repeats: int) -> float:
  import jax
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def jax_rates(opts: dict) -> dict[str, float]:
  """GFLOP/s of each op and dtype with this process's XLA_FLAGS."""
  import jax
  import jax.numpy as jnp
  n = opts["gemm"]
  b, h, w, cin, cout = opts["conv"]
  conv_flop = 2 * b * h * w * cin * cout * 9
  key = jax.random.key(0)
  rates = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    name = jnp.dtype(dtype).name
    x = jax.random.normal(key, (n, n), dtype)
    gemm = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    rates[f"gemm {name}"] = 2 * n ** 3 / _best(gemm, (x, x), opts["repeats"]) / 1e9
    img = jax.random.normal(key, (b, h, w, cin), dtype)
    ker = jax.random.normal(key, (3, 3, cin, cout), dtype) * 0.05

    def conv(k, x):
      return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                          preferred_element_type=jnp.float32)

    forward = jax.jit(conv)
    kernel_grad = jax.jit(jax.grad(lambda k, x: jnp.sum(conv(k, x))))
    rates[f"conv forward {name}"] = conv_flop / _best(forward, (ker, img), opts["repeats"]) / 1e9
    rates[f"conv kernel grad {name}"] = (conv_flop / _best(kernel_grad, (ker, img), opts["repeats"])
                                         / 1e9)
  return rates


def torch_rates(opts: dict) -> dict[str, float] | None:
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(opts["threads"])
  n = opts["gemm"]
  b, h, w, cin, cout = opts["conv"]
  conv_flop = 2 * b * h * w * cin * cout * 9

  def best(fn):
    fn()
    t = float("inf")
    for _ in range(opts["repeats"]):
      t0 = time.perf_counter()
      fn()
      t = min(t, time.perf_counter() - t0)
    return t

  rates = {}
  for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
    a = torch.randn(n, n, dtype=dtype)
    rates[f"gemm {name}"] = 2 * n ** 3 / best(lambda: a @ a) / 1e9
    x = torch.randn(b, cin, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last)
    k = (torch.randn(cout, cin, 3, 3, dtype=dtype) * 0.05).requires_grad_(True)
    with torch.no_grad():
      rates[f"conv forward {name}"] = conv_flop / best(
          lambda: torch.nn.functional.conv2d(x, k, padding=1)) / 1e9

    def kernel_grad():
      k.grad = None
      torch.nn.functional.conv2d(x, k, padding=1).sum().backward()

    rates[f"conv kernel grad {name}"] = conv_flop / best(kernel_grad) / 1e9
  return rates


def cpu_bf16_flags() -> str:
  """'<model name>; avx512_bf16: yes, amx_bf16: no, ...' from /proc/cpuinfo."""
  import platform
  model, have = platform.processor() or platform.machine(), None
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and have is None:
          have = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  if have is None:
    return f"{model}; instruction-set flags unknown (no /proc/cpuinfo)"
  wanted = ("avx512_bf16", "amx_bf16", "amx_tile")
  return f"{model}; " + ", ".join(f"{w}: {'yes' if w in have else 'no'}" for w in wanted)


def main(argv: list[str]) -> None:
  opts = parse(argv)
  if opts["worker"] is not None:
    print(json.dumps(jax_rates(opts)))
    return
  print(f"CPU: {cpu_bf16_flags()}")
  table: dict[str, dict[str, float]] = {}
  passed = [a for a in argv if not a.lstrip("-").startswith("worker")]
  for name in opts["flag_sets"]:
    flag, label = FLAG_SETS[name]
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), flag) if f)
    out = subprocess.run([sys.executable, __file__, *passed, f"--worker={name}"],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:  # A flag this jaxlib does not know: say so, go on.
      print(f"{label}: failed ({out.stderr.strip().splitlines()[-1][:200]})")
      continue
    table[f"jax, {label}"] = json.loads(out.stdout.strip().splitlines()[-1])
  torch = torch_rates(opts)
  if torch is None:
    print("torch not installed: its column is skipped")
  else:
    table["torch (oneDNN)"] = torch
  ops = ("gemm", "conv forward", "conv kernel grad")
  print(f"\nGFLOP/s (gemm {opts['gemm']}^3; conv 3x3 at N,H,W,Cin,Cout = "
        f"{','.join(map(str, opts['conv']))}); bf16 / f32 in brackets:")
  print("| run | " + " | ".join(f"{op} f32 | {op} bf16" for op in ops) + " |")
  print("|---|" + "---|---|" * len(ops))
  for label, rates in table.items():
    cells = []
    for op in ops:
      f32, bf16 = rates[f"{op} float32"], rates[f"{op} bfloat16"]
      cells += [f"{f32:.3g}", f"{bf16:.3g} ({bf16 / f32:.2f}x)"]
    print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main(sys.argv[1:])
