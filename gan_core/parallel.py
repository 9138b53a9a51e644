"""Device mesh, batch sharding and multi-host initialisation.

Everything is `jax.jit` over global arrays. The mesh has one axis, `data`, with
`AxisType.Auto`, so XLA may insert the collectives a batch-sharded computation
needs (batch-norm statistics over a batch-sharded array are therefore the
global batch's statistics: cross-replica batch norm by construction).
"""
from __future__ import annotations

import collections
import itertools
import os
from typing import Any, Iterator

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from gan_core.errors import ConfigError

DATA_AXIS = "data"


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError as e:
    raise ConfigError(f"environment variable {name}={value!r} must be an integer") from e


def detect_cluster() -> str | None:
  """'slurm' or 'tpu' when this process is one of several in a SLURM job / TPU pod slice."""
  # SLURM_PROCID is set for processes started by srun; inside `salloc -n 8` a plain
  # `python ...` is one process although SLURM_NTASKS says 8.
  if "SLURM_JOB_ID" in os.environ and "SLURM_PROCID" in os.environ:
    tasks = _env_int("SLURM_STEP_NUM_TASKS") or _env_int("SLURM_NTASKS") or 1
    if tasks > 1:
      return "slurm"
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
    return "tpu"
  return None


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
  """Starts the JAX multi-controller runtime when this is a multi-process run.

  In order of precedence:
  - explicit arguments (the `--coordinator_address/--num_processes/--process_id`
    flags); `coordinator_address='auto'` lets `jax.distributed.initialize()`
    detect a TPU VM slice or SLURM job;
  - the environment `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
    `JAX_PROCESS_ID` (what `launch/local.sh` exports; JAX itself reads
    `JAX_NUM_CPU_DEVICES`, the simulated CPU devices per process);
  - a SLURM job with more than one task, or a multi-worker TPU VM slice;
  - otherwise nothing: a single process.

  Returns True when the runtime was started (or already running).
  """
  from jax._src import distributed
  if distributed.global_state.client is not None:
    return True
  if coordinator_address is None and num_processes in (None, 1):
    env_address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    env_processes = _env_int("JAX_NUM_PROCESSES")
    if env_address and env_processes and env_processes > 1:
      coordinator_address, num_processes = env_address, env_processes
      process_id = _env_int("JAX_PROCESS_ID")
      if process_id is None:
        raise ConfigError("JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES are set but "
                         "JAX_PROCESS_ID is not: set it to this process's index "
                         f"(0..{num_processes - 1}).")
    elif detect_cluster():
      coordinator_address = "auto"
    else:
      return False
  if coordinator_address != "auto" and None in (coordinator_address, num_processes, process_id):
    raise ConfigError("a multi-process run needs all of --coordinator_address=HOST:PORT, "
                     "--num_processes=N and --process_id=I (or --coordinator_address=auto "
                     "on a TPU VM slice or in a SLURM job).")
  if coordinator_address == "auto":
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  logging.info("JAX distributed: process %d of %d, %d local / %d global devices.",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def make_mesh(devices: list[Any] | None = None) -> Mesh:
  """A 1-D mesh over all (global) devices with an Auto `data` axis."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def sampling_mesh() -> Mesh:
  """Where sampling tools run: one device in a single process; in a multi-process run every
  device of every process (all processes must take part in restoring and generating)."""
  return make_mesh(jax.devices()[:1] if jax.process_count() == 1 else None)


def put_replicated(x: np.ndarray, mesh: Mesh) -> jax.Array:
  """The same host array (on every process) as a global array replicated over `mesh`."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, replicated(mesh), lambda index: x[index])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, leading_unsharded_dims: int = 0) -> NamedSharding:
  """Sharding for arrays whose batch axis follows `leading_unsharded_dims` axes."""
  spec = (None,) * leading_unsharded_dims + (DATA_AXIS,)
  return NamedSharding(mesh, P(*spec))


def check_batch_divisible(global_batch: int, mesh: Mesh, what: str = "batch_size") -> None:
  """Raises a ValueError explaining the divisibility rule if it is broken."""
  num_devices = mesh.devices.size
  num_processes = jax.process_count()
  if global_batch <= 0 or global_batch % num_devices:
    raise ConfigError(
        f"{what}={global_batch} cannot be split over {num_devices} devices: the global batch must "
        f"be a positive multiple of the number of devices ({num_devices}). Choose e.g. "
        f"{what}={max(1, global_batch // num_devices + 1) * num_devices}.")
  if global_batch % num_processes:
    raise ConfigError(f"{what}={global_batch} must be a multiple of the number of processes "
                     f"({num_processes}).")


def local_batch_size(global_batch: int) -> int:
  """The number of examples of a global batch this process feeds."""
  return global_batch // jax.process_count()


def global_array_from_local(local: np.ndarray, mesh: Mesh,
                            leading_unsharded_dims: int = 0) -> jax.Array:
  """Assembles per-process batch slices into one global array sharded on `data`.

  `local` holds this process's contiguous part of the batch axis; the process
  with index i holds rows [i*n, (i+1)*n) of the global batch.
  """
  sharding = batch_sharding(mesh, leading_unsharded_dims)
  shape = list(local.shape)
  shape[leading_unsharded_dims] *= jax.process_count()
  return jax.make_array_from_process_local_data(sharding, local, tuple(shape))


def prefetch_to_devices(local_batches: Iterator[dict[str, np.ndarray]], mesh: Mesh,
                        leading_unsharded_dims: int = 0, size: int = 2
                        ) -> Iterator[dict[str, jax.Array]]:
  """Global batch arrays of `local_batches`, `size` of them already sent to the devices.

  The training step is dispatched asynchronously, so while it runs the loop asks for
  the next batch: that is when this sends batch n+size on its way, and the batch it
  returns was transferred during an earlier step. Closing this generator closes
  `local_batches`.
  """
  queue: collections.deque = collections.deque()

  def enqueue(count: int) -> None:
    for local in itertools.islice(local_batches, count):
      queue.append({k: global_array_from_local(v, mesh, leading_unsharded_dims)
                    for k, v in local.items()})

  try:
    enqueue(size)
    while queue:
      yield queue.popleft()
      enqueue(1)
  finally:
    close = getattr(local_batches, "close", None)
    if close:
      close()


def fetch_to_host(tree: Any) -> Any:
  """Gathers (possibly sharded, possibly multi-host) arrays to numpy on every process."""
  from jax.experimental import multihost_utils
  if jax.process_count() > 1:
    tree = multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)
