"""Which environments start the multi-process runtime (without starting it)."""
import pytest

from gan_core import parallel
from gan_core.errors import ConfigError

CLUSTER_VARS = ["SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS",
                "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                "JAX_PROCESS_ID"]


@pytest.fixture
def clean_env(monkeypatch):
  for name in CLUSTER_VARS:
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


def test_cluster_detection(clean_env):
  assert parallel.detect_cluster() is None
  clean_env.setenv("SLURM_JOB_ID", "7")
  clean_env.setenv("SLURM_NTASKS", "8")
  assert parallel.detect_cluster() is None  # `python` inside salloc: one process, no srun.
  clean_env.setenv("SLURM_PROCID", "3")
  assert parallel.detect_cluster() == "slurm"
  clean_env.setenv("SLURM_STEP_NUM_TASKS", "1")  # An srun step of one task.
  assert parallel.detect_cluster() is None
  for name in CLUSTER_VARS:
    clean_env.delenv(name, raising=False)
  clean_env.setenv("TPU_WORKER_HOSTNAMES", "t1k-w-0")
  assert parallel.detect_cluster() is None  # A single-host TPU VM.
  clean_env.setenv("TPU_WORKER_HOSTNAMES", "t1k-w-0,t1k-w-1")
  assert parallel.detect_cluster() == "tpu"


def test_single_process_starts_nothing_and_bad_environments_are_explained(clean_env):
  assert parallel.maybe_initialize_distributed() is False
  clean_env.setenv("JAX_NUM_PROCESSES", "1")
  clean_env.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
  assert parallel.maybe_initialize_distributed() is False  # One process: nothing to start.
  clean_env.setenv("JAX_NUM_PROCESSES", "2")
  with pytest.raises(ConfigError, match="JAX_PROCESS_ID is not"):
    parallel.maybe_initialize_distributed()
  clean_env.setenv("JAX_PROCESS_ID", "first")
  with pytest.raises(ConfigError, match="JAX_PROCESS_ID='first' must be an integer"):
    parallel.maybe_initialize_distributed()
  with pytest.raises(ConfigError, match="needs all of --coordinator_address"):
    parallel.maybe_initialize_distributed("localhost:1234", 2, None)
