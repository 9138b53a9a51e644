r"""Minimal reproduction: a convolution inside `lax.scan` (an XLA while loop) on XLA:CPU.

  python benchmarks/cpu_scan_repro.py [--size=32] [--channels=32] [--batch=32] [--length=2]

Times four programs that compute the same thing, compiled once each, on the CPU:
`unrolled` (the body written `length` times), `scan` (`lax.scan` over the body),
`scan_unroll` (`lax.scan(..., unroll=True)`) and `fori` (`lax.fori_loop`), for a body
that is (a) one 3x3 convolution forward, (b) its gradient (what a D step contains),
(c) a matmul of the same FLOPs. Prints ms per call and the ratio to `unrolled`.
Self-contained (jax only), so that it can be attached to an upstream report as is.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags

flags.DEFINE_integer("size", 32, "Image side.")
flags.DEFINE_integer("channels", 32, "Input and output channels.")
flags.DEFINE_integer("batch", 32, "Batch size.")
flags.DEFINE_integer("length", 2, "Loop trip count.")
flags.DEFINE_integer("repeats", 10, "Timed calls (best of).")
FLAGS = flags.FLAGS


def conv(w, x):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def bodies(x, w):
  def forward(w, x):
    return jnp.tanh(conv(w, x))

  def grad(w, x):
    return jax.grad(lambda w: jnp.sum(forward(w, x) ** 2))(w)

  n, h, _, c = x.shape
  a = jnp.ones((n * h * h // 8, 9 * c), x.dtype)
  b = jnp.ones((9 * c, c * 8), x.dtype)

  def matmul(w, x):
    return w + jnp.sum(jnp.tanh(a @ b)) * 1e-9
  return {"conv forward": forward, "conv gradient": grad, "matmul": matmul}


def programs(body, length):
  def unrolled(w, x):
    acc = jnp.zeros_like(w) if body.__name__ != "forward" else jnp.zeros_like(x)
    for _ in range(length):
      acc = acc + body(w, x)
    return acc

  def scanned(unroll):
    def f(w, x):
      init = jnp.zeros_like(w) if body.__name__ != "forward" else jnp.zeros_like(x)
      out, _ = jax.lax.scan(lambda acc, _: (acc + body(w, x), None), init, None,
                            length=length, unroll=unroll)
      return out
    return f

  def fori(w, x):
    init = jnp.zeros_like(w) if body.__name__ != "forward" else jnp.zeros_like(x)
    return jax.lax.fori_loop(0, length, lambda i, acc: acc + body(w, x), init)
  return {"unrolled": unrolled, "scan": scanned(1), "scan_unroll": scanned(True),
          "fori": fori}


def best_ms(f, *args) -> float:
  jax.block_until_ready(f(*args))
  best = float("inf")
  for _ in range(FLAGS.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    best = min(best, time.perf_counter() - t0)
  return best * 1000


def main(_):
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (FLAGS.batch, FLAGS.size, FLAGS.size, FLAGS.channels))
  w = jax.random.normal(key, (3, 3, FLAGS.channels, FLAGS.channels)) * 0.1
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, x {x.shape}, w {w.shape}, "
        f"length {FLAGS.length}")
  for name, body in bodies(x, w).items():
    times = {kind: best_ms(jax.jit(f), w, x)
             for kind, f in programs(body, FLAGS.length).items()}
    base = times["unrolled"]
    print(f"{name:14s} " + "  ".join(f"{k} {t:8.2f} ms ({t / base:5.2f}x)"
                                     for k, t in times.items()), flush=True)


if __name__ == "__main__":
  app.run(main)
