"""Test setup: 8 simulated CPU devices, TensorFlow kept quiet and off accelerators."""
import atexit
import os
import shutil
import tempfile

# LLVM's optimisation level 0: the suite is mostly compilation of tiny programs, which this
# makes about 35% faster (the same HLO, so the same semantics; only the generated loops are
# less optimised). Subprocesses inherit it.
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE_FLAG}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Inception weight caches go to a fresh folder, never the user's ~/.cache.
os.environ["GAN_CORE_CACHE"] = tempfile.mkdtemp(prefix="gan_core_cache_")
atexit.register(shutil.rmtree, os.environ["GAN_CORE_CACHE"], ignore_errors=True)
os.environ.pop("GAN_CORE_INCEPTION_WEIGHTS", None)
# Many tests (and their subprocesses, which inherit this) compile the same tiny models; a
# persistent compilation cache shared by the whole session compiles each program once.
# With pytest-xdist the workers inherit the controller's folder; only its creator removes it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gan_jax_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

import importlib.util  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent


def load_config(name: str, arg=None):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def tiny_config():
  """A BigGAN small enough to compile and train in seconds (32x32, digits)."""
  from biggan_jax.config import base_config
  c = base_config()
  c.dataset = "digits"
  c.random_flip = False
  c.batch_size = 8
  c.num_d_steps = 2
  c.num_train_steps = 4
  c.checkpoint_every_steps = 2
  c.log_every_steps = 2
  c.sample_every_steps = 0
  c.num_grid_samples = 4
  c.ema_start = 2
  c.ema_decay = 0.9
  m = c.model
  m.resolution = 32
  m.ch = 4
  m.dim_z = 16
  m.shared_dim = 8
  m.g_attention = (16,)
  m.d_attention = (16,)
  m.num_classes = 10
  return c


@pytest.fixture
def tiny():
  return tiny_config()


@pytest.fixture(scope="session")
def fid_weights_path(tmp_path_factory):
  """A `.pth` file of random FID-Inception weights (written without torch)."""
  from gan_core.eval.torch_pickle import save_state_dict
  from gan_core.eval.weights import random_state_dict
  path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
  save_state_dict(path, random_state_dict())
  return str(path)



# --- the training command line of either model, tiny (for process-level tests) ---------------
CLI_MODELS = {
    "biggan": ("biggan_jax.main", [
        "--config=configs/digits32.py", "--config.model.ch=4", "--config.model.dim_z=16",
        "--config.model.shared_dim=8", "--config.batch_size=8", "--config.sample_every_steps=0",
        "--config.ema_start=2"]),
    # One 4x4 phase of 8 images per iteration: compiles in seconds; the state is still a few
    # hundred KB (the digits widths), which the full-disk test needs.
    "pggan": ("pggan_jax.main", [
        "--config=configs/pggan_digits32.py", "--config.model.resolution=4",
        "--config.initial_resolution=4", "--config.batch_size.r4=8",
        "--config.minibatch_repeats=1", "--config.sample_every_kimg=0"]),
}


def cli_command(model: str, workdir, iterations: int, every: int = 1, extra=()) -> list[str]:
  """`python -m <model>.main` training `iterations` iterations, logging and saving every
  `every` iterations."""
  import sys
  module, args = CLI_MODELS[model]
  if model == "biggan":
    length = [f"--config.num_train_steps={iterations}",
              f"--config.checkpoint_every_steps={every}", f"--config.log_every_steps={every}"]
  else:  # 8 real images per iteration.
    length = [f"--config.total_kimg={iterations * 0.008:g}",
              f"--config.checkpoint_every_kimg={every * 0.008:g}",
              f"--config.log_every_kimg={every * 0.008:g}"]
  return [sys.executable, "-m", module, f"--workdir={workdir}", *args, *length, *extra]


def restore_latest(workdir):
  """(step, state as numpy arrays, meta) of a training workdir's newest checkpoint, for
  either model (the task is rebuilt from the checkpoint's own config)."""
  import os

  import jax
  import ml_collections
  import numpy as np

  from gan_core import parallel
  from gan_core.checkpointing import Checkpointer
  checkpoints = Checkpointer(os.path.join(str(workdir), "checkpoints"))
  step = checkpoints.latest_step()
  meta = checkpoints.restore_meta(step)
  config = ml_collections.ConfigDict(meta["config"])
  if meta["model"] == "biggan":
    from biggan_jax.train import BigGANTask as Task
  else:
    from pggan_jax.train import PGGANTask as Task
  task = Task(config)
  task.build(meta["num_classes"], parallel.make_mesh())
  state = checkpoints.restore_state(step, task.abstract_state())
  checkpoints.close()
  return step, jax.tree.map(np.asarray, state), meta
