"""Multi-host behaviour through `launch/local.sh` (several JAX processes on this machine,
simulated CPU devices, gloo collectives): 2 processes x 2 devices train the same model
as 1 process x 4 devices; checkpoints move between process counts for resuming and
sampling; SIGTERM stops every process at one common step with a checkpoint."""
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import ml_collections
import numpy as np
import pytest

from biggan_jax.train import BigGANTrainer, sample_latents
from gan_core import parallel
from gan_core.checkpointing import Checkpointer
from conftest import FAST_COMPILE_FLAG, REPO

LOCAL = str(REPO / "launch" / "local.sh")
TINY = ["--config=configs/digits32.py", "--config.model.ch=4", "--config.model.dim_z=16",
        "--config.model.shared_dim=8", "--config.batch_size=8", "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=2", "--config.sample_every_steps=0",
        "--config.ema_start=1"]


def train_command(workdir, steps, processes):
  """(argv, env) of a BigGAN digits run on 4 CPU devices in `processes` processes."""
  main = [sys.executable, "-m", "biggan_jax.main", f"--workdir={workdir}", *TINY,
          f"--config.num_train_steps={steps}"]
  env = {k: v for k, v in os.environ.items()
         if not k.startswith("JAX_") or k == "JAX_COMPILATION_CACHE_DIR"}
  env["XLA_FLAGS"] = FAST_COMPILE_FLAG  # As conftest, less the device count.
  if processes == 1:
    return main, dict(env, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4")
  return [LOCAL, str(processes), str(4 // processes), *main], env


def start(command_env, **kwargs):
  command, env = command_env
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(process):
  out, _ = process.communicate(timeout=900)
  assert process.returncode == 0, out[-4000:]
  return out


def restore(workdir, step):
  checkpoints = Checkpointer(os.path.join(workdir, "checkpoints"))
  meta = checkpoints.restore_meta(step)
  trainer = BigGANTrainer(ml_collections.ConfigDict(meta["config"]), meta["num_classes"],
                          parallel.make_mesh(jax.devices()[:1]))
  state = checkpoints.restore_state(step, trainer.abstract_state())
  checkpoints.close()
  return trainer, state, meta


def samples(trainer, state):
  """G-EMA images in [-1, 1] for fixed latents (before uint8 quantisation)."""
  z, y = sample_latents(jax.random.PRNGKey(5), 32, trainer.models.dim_z, 10)
  return np.asarray(trainer.models.generator.apply(
      {"params": state.ema_params, **state.ema_state}, z, y, train=False))


def assert_same_model(a, b):
  """Equal up to floating-point reduction order: the batch is summed in another order."""
  (trainer, state_a, _), (_, state_b, _) = a, b
  assert int(state_a.step) == int(state_b.step)
  np.testing.assert_allclose(samples(trainer, state_a), samples(trainer, state_b), atol=2e-3)
  for name in ("g_params", "d_params", "ema_params", "g_state", "d_state"):
    for x, y in zip(jax.tree.leaves(getattr(state_a, name)), jax.tree.leaves(getattr(state_b, name))):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-3, rtol=1e-3, err_msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Step 2 by 1 process and by 2 processes; then each resumed to step 3 by the other count."""
  root = tmp_path_factory.mktemp("multiprocess")
  one, two = str(root / "one_process"), str(root / "two_processes")
  logs = {}
  first = [start(train_command(one, 2, 1)), start(train_command(two, 2, 2))]
  logs["one"], logs["two"] = finish(first[0]), finish(first[1])
  events_after_two = [f for f in os.listdir(os.path.join(two, "tensorboard"))
                      if f.startswith("events")]
  step2 = {"one": restore(one, 2), "two": restore(two, 2)}
  second = [start(train_command(one, 3, 2)), start(train_command(two, 3, 1))]
  logs["one_resumed_by_two"], logs["two_resumed_by_one"] = finish(second[0]), finish(second[1])
  step3 = {"one": restore(one, 3), "two": restore(two, 3)}
  return dict(logs=logs, step2=step2, step3=step3, events_after_two=events_after_two,
              workdirs={"one": one, "two": two})


def test_two_processes_train_the_same_model_as_one(runs):
  assert_same_model(runs["step2"]["one"], runs["step2"]["two"])
  two = runs["logs"]["two"]
  assert "devices: 4, processes: 2" in two and "devices: 4, processes: 1" in runs["logs"]["one"]
  assert "[0] " in two and "[1] " in two  # local.sh prefixes each process's lines.
  # Only process 0 writes TensorBoard and console metrics.
  assert len(runs["events_after_two"]) == 1
  metric_lines = [l for l in two.splitlines() if "] step 2 | kimg" in l]
  assert metric_lines and all(l.startswith("[0] ") for l in metric_lines)


def test_checkpoints_resume_across_process_counts(runs):
  logs = runs["logs"]
  assert "Resumed from" in logs["one_resumed_by_two"] and "at step 2" in logs["one_resumed_by_two"]
  assert "Resumed from" in logs["two_resumed_by_one"] and "at step 2" in logs["two_resumed_by_one"]
  assert_same_model(runs["step3"]["one"], runs["step3"]["two"])


def test_checkpoint_written_by_two_processes_samples_in_one(runs):
  """The sampling tool's loader (one process, one device) on step 2 of both runs."""
  from biggan_jax.train import BigGANTask
  from gan_core import sampling
  images = {}
  for name in ("one", "two"):
    generator = sampling.load(BigGANTask, runs["workdirs"][name], step=2)
    assert generator.step == 2
    z, y = sample_latents(jax.random.PRNGKey(3), 16, generator.task.latent_size, 10)
    images[name] = sampling.generate_images(generator, np.asarray(z), np.asarray(y), 16)
  assert images["two"].dtype == np.uint8 and images["two"].std() > 0
  difference = np.abs(images["one"].astype(int) - images["two"].astype(int))
  assert difference.max() <= 1 and difference.mean() < 0.01  # uint8 rounding only.


def test_sampling_tool_in_two_processes_reads_a_one_process_checkpoint(runs, tmp_path):
  """`biggan_jax.sample` under local.sh 2 2 on the 1-process run's step 2 writes (from process 0
  only) the samples that one process writes from the 2-process run's step 2."""
  outputs = {}
  for name, processes in (("one", 2), ("two", 1)):
    out = tmp_path / f"{name}.npz"
    command = [sys.executable, "-m", "biggan_jax.sample", f"--workdir={runs['workdirs'][name]}",
               "--step=2", f"--out={out}", "--num_samples=12", "--batch_size=8",
               "--standing_stats=2"]
    _, env = train_command("unused", 1, processes)
    if processes > 1:
      command = [LOCAL, "2", "2", *command]
    else:
      env["JAX_NUM_CPU_DEVICES"] = "1"
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    wrote = [l for l in result.stdout.splitlines()
             if "wrote 12 samples" in l and "from step 2" in l]
    assert len(wrote) == 1 and (processes == 1 or wrote[0].startswith("[0] "))
    outputs[name] = np.load(out)
  np.testing.assert_array_equal(outputs["one"]["labels"], outputs["two"]["labels"])
  difference = np.abs(outputs["one"]["images"].astype(int) - outputs["two"]["images"].astype(int))
  assert difference.max() <= 1 and difference.mean() < 0.01


@pytest.mark.slow  # ~90 s; the one-process SIGTERM test (test_checkpoint.py) stays default.
def test_sigterm_stops_every_process_at_one_step_with_a_checkpoint(tmp_path):
  command, env = train_command(str(tmp_path), 100000, 2)
  command += ["--config.checkpoint_every_steps=100000"]
  process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  lines, training = [], threading.Event()

  def read():
    for line in process.stdout:
      lines.append(line)
      if line.startswith("[0] step ") and " img/s " in line:  # a console metrics line
        training.set()
  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  assert training.wait(600), "".join(lines[-60:])
  started = time.time()
  process.send_signal(signal.SIGTERM)  # To local.sh, which forwards it to both processes.
  process.wait(timeout=180)
  reader.join(timeout=10)
  elapsed = time.time() - started
  text = "".join(lines)
  assert process.returncode == 0, text[-4000:]
  assert elapsed < 60, elapsed
  stops = [l for l in lines if "all processes save a checkpoint at step" in l]
  assert {l[:4] for l in stops} == {"[0] ", "[1] "}, text[-4000:]
  steps = {int(l.split("at step ")[1].split()[0]) for l in stops}
  assert len(steps) == 1
  saved = Checkpointer(str(tmp_path / "checkpoints")).latest_step()
  assert saved == steps.pop()
