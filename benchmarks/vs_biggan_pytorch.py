r"""Our BigGAN iteration side by side with BigGAN-PyTorch's own, on this machine's CPU.

  python benchmarks/vs_biggan_pytorch.py [--ch=64] [--batch_size=8] [--rounds=3] [--bf16]
      [--attention_query_chunk=0]

The same model (128x128, hierarchical z 120, shared embedding 128, attention at 64, 1000
classes, channel width --ch), the same work per iteration (1 D step on batch reals +
batch fakes, 1 G step on batch fakes, G-EMA update, no orthogonal regularisation),
on the CPU (torch with --threads threads, default all cores; XLA:CPU always uses all cores). BigGAN-PyTorch
runs unmodified: its `BigGAN.Generator/Discriminator/G_D`, `utils.ema` and
`train_fns.GAN_training_function`, imported from `../shared/reference/biggan_pytorch/src`
(MIT licence); ours is `biggan_jax.train.BigGANTrainer.train_iteration`, compiled once.

The two alternate, `--rounds` times, each timing `--steps` iterations after one
untimed warm-up iteration, and the script prints every round and the ratio of the
medians (ours / theirs: below 1 means ours is faster; with `--attention_query_chunk=N`, ours
is also timed with `model.attention_query_chunk=N`, in the same alternation: 0 is the whole
attention map, against the default's chunks of 1024 on CPU). `--bf16`: ours with
`compute_dtype=bfloat16`, theirs under `torch.autocast('cpu', torch.bfloat16)`.
Exits 0 with a message, not an error, where torch or the reference code is absent.
"""
from __future__ import annotations

import os
import pathlib
import platform
import statistics
import sys
import time
import types

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parent.parent
REFERENCE_SRC = REPO.parent / "shared" / "reference" / "biggan_pytorch" / "src"

flags.DEFINE_integer("ch", 64, "Channel width of G and D.")
flags.DEFINE_integer("batch_size", 8, "Reals per D step and fakes per G step.")
flags.DEFINE_integer("steps", 2, "Timed iterations per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds (ours, theirs).")
flags.DEFINE_integer("threads", 0, "Threads for both (0: os.cpu_count()).")
flags.DEFINE_bool("bf16", False, "bfloat16 compute for both.")
flags.DEFINE_integer("attention_query_chunk", None, "Also time ours with this "
                     "model.attention_query_chunk, in the same alternation (ours uses the "
                     "default, -1: auto, chunks of 1024 on CPU; 0 is the whole map).")
FLAGS = flags.FLAGS


def reference_modules():
  """(torch, BigGAN, train_fns, utils) from the reference code, or None where absent."""
  try:
    import torch
  except ImportError:
    return None
  if not REFERENCE_SRC.is_dir():
    return None

  class Stub(types.ModuleType):  # utils.py imports these for data loading only.
    def __getattr__(self, name):
      return Stub(name)

  stubs = [name for name in ("torchvision", "torchvision.transforms", "torchvision.datasets",
                              "h5py", "animal_hash", "datasets") if name not in sys.modules]
  sys.modules.update({name: Stub(name) for name in stubs})
  sys.path.insert(0, str(REFERENCE_SRC))
  try:
    import BigGAN
    import train_fns
    import utils
  finally:  # Stubs left in sys.modules break `inspect` (used by JAX's tracing).
    sys.path.remove(str(REFERENCE_SRC))
    for name in stubs:
      sys.modules.pop(name, None)
  return torch, BigGAN, train_fns, utils


def theirs(modules):
  """A closure running one BigGAN-PyTorch training iteration."""
  torch, BigGAN, train_fns, utils = modules
  torch.manual_seed(0)
  kw = dict(resolution=128, G_ch=FLAGS.ch, D_ch=FLAGS.ch, dim_z=120, shared_dim=128,
            hier=True, G_shared=True, G_attn="64", D_attn="64", n_classes=1000,
            BN_eps=1e-5, SN_eps=1e-6, adam_eps=1e-6, G_lr=1e-4, D_lr=4e-4,
            G_init="N02", D_init="N02")
  G, D = BigGAN.Generator(**kw), BigGAN.Discriminator(**kw)
  G_ema = BigGAN.Generator(**{**kw, "skip_init": True, "no_optim": True})
  ema = utils.ema(G, G_ema, 0.9999, 0)
  GD = BigGAN.G_D(G, D)
  b = FLAGS.batch_size
  z_, y_ = utils.prepare_z_y(b, 120, 1000, device="cpu")
  config = {"batch_size": b, "num_D_steps": 1, "num_D_accumulations": 1,
            "num_G_accumulations": 1, "toggle_grads": True, "split_D": False,
            "D_ortho": 0.0, "G_ortho": 0.0, "ema": True}
  state = {"itr": 0}
  train = train_fns.GAN_training_function(G, D, GD, z_, y_, ema, state, config)
  x = torch.rand(b, 3, 128, 128) * 2 - 1
  y = torch.randint(0, 1000, (b,))

  def step():
    state["itr"] += 1
    if FLAGS.bf16:
      with torch.autocast("cpu", dtype=torch.bfloat16):
        train(x, y)
    else:
      train(x, y)
  return step


def ours(attention_query_chunk: int | None = None):
  """A closure running one of our compiled iterations (and blocking on its result)."""
  import jax
  import numpy as np
  from biggan_jax.config import base_config
  from biggan_jax.train import BigGANTrainer
  from gan_core import parallel
  c = base_config()
  c.batch_size, c.num_d_steps, c.ortho_reg = FLAGS.batch_size, 1, 0.0
  c.ema_start = 0
  m = c.model
  m.resolution, m.ch, m.dim_z, m.shared_dim, m.num_classes = 128, FLAGS.ch, 120, 128, 1000
  m.g_attention = m.d_attention = (64,)
  m.compute_dtype = "bfloat16" if FLAGS.bf16 else "float32"
  if attention_query_chunk is not None:
    m.attention_query_chunk = attention_query_chunk
  mesh = parallel.make_mesh(jax.devices()[:1])
  trainer = BigGANTrainer(c, 1000, mesh)
  holder = {"state": trainer.init_state(0)}
  rng = np.random.default_rng(0)
  shape = trainer.batch_leading_shape
  batch = {"images": parallel.global_array_from_local(
               rng.integers(0, 256, shape + (128, 128, 3), dtype=np.uint8), mesh, 2),
           "labels": parallel.global_array_from_local(
               rng.integers(0, 1000, shape).astype(np.int32), mesh, 2)}

  def step():
    holder["state"], metrics = trainer.train_iteration(holder["state"], batch)
    jax.block_until_ready(metrics)
  return step


def timed(step) -> float:
  step()  # Warm-up (and, for ours, compilation on the first round).
  t0 = time.perf_counter()
  for _ in range(FLAGS.steps):
    step()
  return (time.perf_counter() - t0) / FLAGS.steps


def main(_):
  from gan_core.xla_flags import prefer_eigen_convolutions
  prefer_eigen_convolutions()  # As the training entry points do (gan_core/xla_flags.py).
  modules = reference_modules()
  if modules is None:
    print(f"skipped: needs torch (pip install torch) and BigGAN-PyTorch's code at "
          f"{REFERENCE_SRC}")
    return
  torch = modules[0]
  threads = FLAGS.threads or os.cpu_count()
  torch.set_num_threads(threads)
  import jax
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"threads {threads}; jax {jax.__version__}, torch {torch.__version__}")
  print(f"config: 128x128, ch {FLAGS.ch}, batch {FLAGS.batch_size}, 1 D step + 1 G step, "
        f"EMA, no ortho reg, {'bfloat16' if FLAGS.bf16 else 'float32'}")
  runs = {"ours": ours()}
  if FLAGS.attention_query_chunk is not None:
    chunk = FLAGS.attention_query_chunk
    runs[f"ours (attention_query_chunk={chunk})"] = ours(chunk)
  runs["BigGAN-PyTorch"] = theirs(modules)
  times = {name: [] for name in runs}
  for r in range(FLAGS.rounds):
    for name, step in runs.items():
      times[name].append(timed(step))
      print(f"round {r + 1}: {name} {times[name][-1]:.2f} s/iteration", flush=True)
  med = {name: statistics.median(t) for name, t in times.items()}
  for name, t in med.items():
    print(f"{name} median: {t:.2f} s/iteration")
  for name in runs:
    if name != "BigGAN-PyTorch":
      print(f"ratio {name}/theirs: {med[name] / med['BigGAN-PyTorch']:.2f}")


if __name__ == "__main__":
  app.run(main)
