r"""Times the kernel gradient of one 3x3 convolution: XLA:CPU (jax.vjp) against torch's
`aten.convolution_backward` (oneDNN), at the layer shapes of BigGAN-128 ch 64, batch 8.

  python benchmarks/conv_kernel_grad.py [--threads=2]

The kernel gradient is where the BigGAN iteration loses to BigGAN-PyTorch on CPU
(RESULTS.md, "Where the iteration's time goes"). torch is optional: without it only the
jax column is printed.
"""
from __future__ import annotations

import time

import numpy as np
from absl import app, flags

flags.DEFINE_integer("threads", 2, "torch intra-op threads.")
flags.DEFINE_integer("repeats", 4, "Timed calls per layer (the minimum is printed).")
FLAGS = flags.FLAGS

# (N, H, W, Cin, Cout): D block0 conv2 (real + fake), G block4 conv1, and deeper layers.
SHAPES = ((16, 128, 128, 64, 64), (8, 128, 128, 128, 64), (8, 64, 64, 256, 128),
          (16, 32, 32, 256, 256), (16, 8, 8, 1024, 1024))


def best_ms(fn, repeats):
  fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times) * 1e3


def main(_):
  import jax
  import jax.numpy as jnp
  try:
    import torch
    torch.set_num_threads(FLAGS.threads)
  except ImportError:
    torch = None
  dn = ("NHWC", "HWIO", "NHWC")

  @jax.jit
  def kernel_grad(x, dy, w):
    conv = lambda w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
    return jax.vjp(conv, w)[1](dy)[0]

  rng = np.random.RandomState(0)
  print("| layer (N, H, W, Cin, Cout) | GFLOP | XLA:CPU (ms) | torch (ms) |")
  print("|---|---|---|---|")
  for n, h, w, ci, co in SHAPES:
    x = rng.randn(n, h, w, ci).astype(np.float32)
    dy = rng.randn(n, h, w, co).astype(np.float32)
    xj, dyj, wj = jnp.asarray(x), jnp.asarray(dy), jnp.zeros((3, 3, ci, co), jnp.float32)
    ours = best_ms(lambda: kernel_grad(xj, dyj, wj).block_until_ready(), FLAGS.repeats)
    theirs = "-"
    if torch is not None:
      xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
      dyt = torch.from_numpy(dy.transpose(0, 3, 1, 2).copy())
      wt = torch.zeros(co, ci, 3, 3)
      grad = lambda: torch.ops.aten.convolution_backward(
          dyt, xt, wt, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])
      reference = grad()[1].numpy().transpose(2, 3, 1, 0)
      got = np.asarray(kernel_grad(xj, dyj, wj))
      assert np.abs(got - reference).max() <= 1e-4 * np.abs(reference).max(), "mismatch"
      theirs = f"{best_ms(grad, FLAGS.repeats):.0f}"
    print(f"| ({n}, {h}, {w}, {ci}, {co}) | {2 * n * h * w * ci * co * 9 / 1e9:.1f} | "
          f"{ours:.0f} | {theirs} |", flush=True)


if __name__ == "__main__":
  app.run(main)
