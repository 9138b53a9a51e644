"""The one training loop of both GANs: `train(task, config, workdir)`.

A model package supplies a `Task` (its paper's method: state, losses, the jitted
iteration, its schedule as a `Plan`); everything else about a run lives here.

The life of a run:

 1. **Lock** `WORKDIR/run.lock` (`gan_core.workdir_lock`): a second run on the same
    workdir stops before writing anything.
 2. **Data**: the input pipeline of `config.dataset` (`gan_core.data`); the task sees
    the dataset's class count and builds its models.
 3. **Resume** from the newest readable checkpoint of `WORKDIR/checkpoints`
    (`gan_core.checkpointing`): a checkpoint of another model is refused with every
    mismatch named; a damaged newer one is moved aside. Its meta gives the plan
    position and the rollback count. Without a checkpoint: the task's initial state.
 4. **Artefacts**: `WORKDIR/config.json` (the resolved config), TensorBoard hparams,
    parameter counts.
 5. **Iterations** until the task is finished or a preemption (SIGTERM) arrives:
    a. every `task.plan_interval` iterations, the plan at the current position: the
       real batch's shape and downscaling, static phase (compiled once per phase) and
       traced scalars. A changed plan may change the state (PGGAN resets Adam when
       the level of detail changes) and restarts the input at the new shape; a
       finished resolution gets its last sample grid.
    b. the jitted iteration on the next batch (prefetched to the devices).
    c. at every log step and before every save: host scalars and the divergence
       guard (`gan_core.guard`). A problem is never kept: the newest good checkpoint
       is restored with a re-seeded random stream and the input rewound; else one
       short console line, TensorBoard and `WORKDIR/train_log.jsonl` get the scalars.
    d. sample grids of G-EMA (fixed latents) to TensorBoard and `WORKDIR/samples/`.
    e. evaluation: `gan_core.eval.evaluator` measures G-EMA (FID, IS, KID, SWD,
       MS-SSIM: `config.eval.metrics`); the loop logs it (console, TensorBoard,
       `WORKDIR/metrics.jsonl`) and keeps the best-FID checkpoint in `WORKDIR/best_fid`.
    f. checkpoints at the checkpoint cadence, at the end and on preemption.
 6. **Shutdown**: pending saves finish, everything closes, the lock is released.
    A preempted run exits cleanly; rerunning the same command continues exactly.
 7. **Afterwards**: `python -m <model>.sample` / `python -m <model>.evaluate`
    (`gan_core.sampling`) read only G-EMA from a checkpoint, to draw samples (or render
    given latents) and to measure them over every device.

Cadences (`log`, `checkpoint`, `sample`, `eval`) are read by `Cadence` from one
vocabulary: `<name>_every_steps` (iterations), `<name>_every_examples` (real images
shown to D) or `<name>_every_kimg` (thousands of them, PGGAN's unit); 0 is never.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import sys
import time
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from gan_core import checkpointing, files, monitoring, parallel
from gan_core.data import build_pipeline
from gan_core.errors import ConfigError, UserError
from gan_core.eval.evaluator import Evaluator
from gan_core.guard import Guard, rollback_key
from gan_core.images import make_grid, save_png
from gan_core.preemption import PreemptionFlag
from gan_core.workdir_lock import hold

TRAIN_LOG = "train_log.jsonl"
METRICS_FILE = "metrics.jsonl"  # One JSON line per evaluation.
BEST_DIR = "best_fid"  # The checkpoint with the best FID so far.


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the iterations at a position of the run need besides the state."""
  leading_shape: tuple[int, ...]  # Real batch axes before the image axes; batch axis last.
  resolution: int  # Of the images D sees (and G generates) in this plan.
  downscale: int = 1  # Box-downsampling factor from the dataset's resolution to `resolution`.
  static: tuple[tuple[str, Any], ...] = ()  # Compile-time arguments (one program per value).
  scalars: tuple[float, ...] = ()  # Traced float32 arguments (alpha, learning rate).
  info: tuple[tuple[str, float], ...] = ()  # Logged, and recorded in checkpoint meta.
  phase: Any = None  # The task's own description of the position (hashable), if any.

  @property
  def examples_per_iteration(self) -> int:
    count = 1
    for n in self.leading_shape:
      count *= n
    return count


class Task(Protocol):
  """A GAN method as the loop sees it."""

  kind: str  # Checkpoint meta 'model'; the sampling and evaluation tools check it.
  plan_interval: int  # Iterations between plan evaluations (PGGAN's minibatch_repeats).
  random_flip: bool

  def build(self, dataset_classes: int, mesh) -> None:
    """Builds models and compiled functions for the dataset's class count (0: none)."""

  @property
  def num_classes(self) -> int: ...

  def init_state(self, seed: int) -> Any: ...

  def abstract_state(self) -> Any: ...

  def fingerprint(self) -> dict[str, Any]:
    """Meta entries that must match to resume: model kind, classes, parameter shapes."""

  def position(self, state: Any) -> tuple[int, int]:
    """(iterations, real examples consumed) of a state."""

  def plan(self, position: int) -> Plan:
    """The plan at `position` real examples (a pure function of the position)."""

  def on_plan_change(self, state: Any, old: Plan | None, new: Plan) -> Any:
    """The state to continue with when the plan changes (`old` None: the first plan)."""

  def iteration(self, state: Any, batch: dict[str, jax.Array], plan: Plan
                ) -> tuple[Any, dict[str, jax.Array]]: ...

  def guard_scalars(self, metrics: Any, state: Any, step: int
                    ) -> tuple[dict[str, float], dict[str, float]]:
    """(every host scalar to log, the scalars the guard watches)."""

  def reset_guard(self, state: Any, step: int) -> None:
    """Forgets what `guard_scalars` tracks between checks (after a resume or rollback)."""

  def latents(self, key: jax.Array, num: int, truncation: float | None = None
              ) -> tuple[jax.Array, jax.Array]:
    """(z, y) for `num` samples; `truncation` T draws z_i conditioned on |z_i| <= T."""

  def generate(self, state: Any, z: jax.Array, y: jax.Array, plan: Plan,
               truncation: float | None = None) -> jax.Array:
    """uint8 G-EMA samples. `truncation` matters only where the model itself depends on
    it (`truncation_in_model`: the TF-Hub BigGAN-deep generators' BN statistics)."""

  truncation_in_model = False
  # Config fields added after checkpoints were first written -> the value such a checkpoint
  # was trained with (flattened keys, e.g. 'model.output_bn_eps').
  absent_config_means: dict[str, Any] = {}

  def finished(self, step: int, examples: int) -> bool: ...

  def remaining(self, step: int, examples: int) -> tuple[float, str]:
    """How much is left, in 'steps' or 'examples' (for the ETA)."""


class TrainerTask:
  """What the two tasks share: a `trainer` (built by `build`) holding the compiled
  functions and the state layout, and the defaults of the optional hooks."""

  kind = ""
  generator_fields: tuple[str, ...] = ("ema_params",)  # All that sampling restores.
  # The model's base config (a function), whose defaults fill the fields a checkpoint's saved
  # config lacks when sampling from it; None: the saved config is used as it is.
  default_config: Callable[[], Any] | None = None
  truncation_in_model = False
  absent_config_means: dict[str, Any] = {}

  @staticmethod
  def sampling_config(config: ml_collections.ConfigDict,
                      num_devices: int) -> ml_collections.ConfigDict:
    """The training config adapted to sample on `num_devices` (batch sizes that split)."""
    return config

  def standing_stats(self, state: Any, key: jax.Array, num_batches: int,
                     batch_size: int) -> Any:
    raise UserError(f"--standing_stats: the {self.kind} generator has no batch norm")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.random_flip = config.random_flip
    self.trainer: Any = None

  @property
  def num_classes(self) -> int:
    return self.trainer.num_classes

  def init_state(self, seed: int) -> Any:
    return self.trainer.init_state(seed)

  def abstract_state(self) -> Any:
    return self.trainer.abstract_state()

  def fingerprint(self) -> dict[str, Any]:
    return {"model": self.kind, "num_classes": self.num_classes,
            "parameter_shapes": self.trainer.parameter_shapes}

  def on_plan_change(self, state: Any, old: Plan | None, new: Plan) -> Any:
    return state

  def reset_guard(self, state: Any, step: int) -> None:
    pass


class Cadence:
  """`<name>_every_steps`, `<name>_every_examples` or `<name>_every_kimg` of a config."""

  UNITS = {"steps": ("steps", 1), "examples": ("examples", 1), "kimg": ("examples", 1000)}

  def __init__(self, config: ml_collections.ConfigDict, name: str):
    set_fields = [(suffix, config[f"{name}_every_{suffix}"]) for suffix in self.UNITS
                  if f"{name}_every_{suffix}" in config and config[f"{name}_every_{suffix}"]]
    if len(set_fields) > 1:
      raise ConfigError(f"set only one of {', '.join(f'{name}_every_{s}' for s, _ in set_fields)}")
    self.unit, self.interval = "steps", 0
    if set_fields:
      suffix, value = set_fields[0]
      self.unit, scale = self.UNITS[suffix]
      self.interval = int(round(value * scale))
      if self.interval < 0:
        raise ConfigError(f"{name}_every_{suffix} must be >= 0")

  def crossed(self, steps: tuple[int, int], examples: tuple[int, int]) -> bool:
    """Whether an interval boundary lies in (before, after] of this unit."""
    if not self.interval:
      return False
    before, after = steps if self.unit == "steps" else examples
    return before // self.interval != after // self.interval


def _peak_memory_gb() -> dict[str, float]:
  """Peak host RSS and, where the backend reports it, peak device memory (GB)."""
  peak = {"host_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
  try:
    stats = jax.local_devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - not every backend implements it.
    stats = {}
  if "peak_bytes_in_use" in stats:
    peak["device_peak_gb"] = stats["peak_bytes_in_use"] / 2**30
  return peak


class _Throughput:
  """Rates between log steps."""

  def __init__(self, step: int, examples: int):
    self.reset(step, examples)

  def reset(self, step: int, examples: int) -> None:
    self.step, self.examples, self.time = step, examples, time.perf_counter()

  def report(self, step: int, examples: int, remaining: tuple[float, str]) -> dict[str, float]:
    now = time.perf_counter()
    elapsed = max(now - self.time, 1e-9)
    steps, images = step - self.step, examples - self.examples
    self.reset(step, examples)
    left, unit = remaining
    done = step if unit == "steps" else examples
    rate = (steps if unit == "steps" else images) / elapsed
    return {"kimg": examples / 1000, "progress": done / max(done + left, 1),
            "sec_per_iteration": elapsed / max(steps, 1),
            "images_per_sec": images / elapsed,
            "eta_hours": left / rate / 3600 if rate > 0 else float("inf")}


def console_line(step: int, scalars: dict[str, float], bar: bool = False) -> str:
  """The short line a person reads: position, losses, D margin, speed, ETA, memory; with
  `bar` (a terminal is attached) it starts with a progress bar."""
  parts = [f"step {step}", f"kimg {scalars['kimg']:.1f}"]
  if bar and "progress" in scalars:
    filled = int(round(20 * min(max(scalars["progress"], 0.0), 1.0)))
    parts.insert(0, f"[{'#' * filled}{'.' * (20 - filled)}] {100 * scalars['progress']:3.0f}%")
  for key in ("resolution", "alpha"):
    if key in scalars:
      parts.append(f"{key} {scalars[key]:g}")
  for key in ("d_loss", "g_loss", "d_margin"):
    if key in scalars:
      parts.append(f"{key} {scalars[key]:.4g}")
  parts.append(f"{scalars['sec_per_iteration']:.3g} s/it")
  parts.append(f"{scalars['images_per_sec']:.0f} img/s")
  eta = scalars["eta_hours"]
  parts.append(f"ETA {eta:.2f} h" if np.isfinite(eta) else "ETA -")
  parts.append(f"host {scalars['host_peak_gb']:.1f} GB")
  if "device_peak_gb" in scalars:
    parts.append(f"device {scalars['device_peak_gb']:.1f} GB")
  return " | ".join(parts)


def write_config(resolved: dict[str, Any], workdir: str) -> None:
  """WORKDIR/config.json: the resolved config, human-readable (process 0)."""
  if jax.process_index() == 0:
    files.makedirs(workdir)
    text = json.dumps(resolved, indent=2, sort_keys=True)
    files.write_bytes(os.path.join(workdir, "config.json"), (text + "\n").encode())


def real_batches_of(config: ml_collections.ConfigDict):
  """`real_batches(resolution, batch)` for the evaluator: unflipped reals of the config's
  dataset from position 0, box-downsampled to `resolution` (as D sees them). The whole
  dataset even when training uses a `dataset_fraction` of it: the measure of a small-data
  run is how well it reproduces the distribution, not its few training images."""
  reals = build_pipeline(config.dataset, config.model.resolution, config.seed + 7,
                         random_flip=False, data_dir=config.data_dir or None,
                         download=config.download_dataset, num_workers=config.data_workers)
  return lambda resolution, batch: (b["images"] for b in reals.iterate(
      0, (batch,), downscale=config.model.resolution // resolution))


def make_evaluator(config: ml_collections.ConfigDict, mesh) -> Evaluator | None:
  """The metrics of `config.eval.metrics` for G-EMA at the eval cadence (off when it is 0)."""
  if not Cadence(config, "eval").interval:
    return None
  return Evaluator(config.eval, mesh, dataset_id=config.dataset,
                   real_batches=real_batches_of(config))


def best_logged(workdir: str, metric: str = "fid") -> float:
  """The best (lowest) `metric` in WORKDIR/metrics.jsonl (a resumed run keeps its best)."""
  best = float("inf")
  path = os.path.join(workdir, METRICS_FILE)
  if files.exists(path):
    for line in files.read_text(path).splitlines():
      try:
        value = json.loads(line).get(metric)
      except json.JSONDecodeError:
        continue  # A line cut by a crash.
      if isinstance(value, (int, float)) and np.isfinite(value):
        best = min(best, float(value))
  return best


def checkpoint_meta(task: Task, resolved_config: dict[str, Any], step: int, examples: int,
                    plan_position: int, rollbacks: int = 0) -> dict[str, Any]:
  """The `meta` item saved beside a train state: what resuming, sampling and the
  compatibility check read (also written by tools that create checkpoints, e.g. imports)."""
  plan = task.plan(plan_position)
  return {"step": step, "config": resolved_config,
          **task.fingerprint(), "data_position": examples, "images_seen": examples,
          "plan_position": plan_position, "resolution": plan.resolution,
          **dict(plan.info), "rollbacks": rollbacks}


def train(task: Task, config: ml_collections.ConfigDict, workdir: str,
          max_iterations: int | None = None) -> Any:
  """Trains `task` until it is finished, resuming from `workdir`; returns the final state.

  `max_iterations` stops this call early (with a checkpoint, exactly as a preemption
  would) after that many iterations; rerunning continues.
  """
  with hold(workdir):
    return _train(task, config, workdir, max_iterations)


def _train(task: Task, config, workdir: str, max_iterations: int | None) -> Any:
  mesh = parallel.make_mesh()
  pipeline = build_pipeline(config.dataset, config.model.resolution, config.seed,
                            task.random_flip, data_dir=config.data_dir or None,
                            download=config.download_dataset, num_workers=config.data_workers,
                            fraction=config.get("dataset_fraction", 1.0),
                            subset_seed=config.get("dataset_subset_seed", 0))
  task.build(pipeline.num_classes, mesh)
  cadence = {name: Cadence(config, name) for name in ("log", "checkpoint", "sample", "eval")}
  checkpoints = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                           config.max_to_keep,
                                           keep_every_steps=config.keep_checkpoint_every_steps)
  guard = Guard(config.guard)
  resolved_config = json.loads(config.to_json_best_effort())

  def meta(step: int, examples: int, plan_position: int) -> dict[str, Any]:
    return checkpoint_meta(task, resolved_config, step, examples, plan_position,
                           guard.rollbacks)

  def restore(at_step: int | None) -> tuple[Any, int | None]:
    """The state of checkpoint `at_step` (None: the initial state) and its plan position."""
    if at_step is None:
      return task.init_state(config.seed), None
    saved = checkpoints.restore_meta(at_step)
    state = checkpoints.restore_state(at_step, task.abstract_state())
    return state, plan_position_of(saved)

  resumed = checkpoints.restore_newest_readable(
      task.abstract_state(), lambda saved, at: checkpointing.check_compatible(
          saved, {"config": resolved_config, **task.fingerprint()},
          checkpoints.directory, at, absent_means=task.absent_config_means))
  if resumed is not None:
    latest, state, saved_meta = resumed
    plan_position = plan_position_of(saved_meta)
    guard.rollbacks = int(saved_meta.get("rollbacks", 0))
    logging.info("Resumed from %s at step %d (%.1f kimg).", checkpoints.directory, latest,
                 task.position(state)[1] / 1000)
  else:
    state, plan_position = task.init_state(config.seed), None
  step, examples = task.position(state)

  write_config(resolved_config, workdir)
  writer = monitoring.create_writer(workdir)
  if step == 0:
    writer.write_hparams({k: v for k, v in config.items() if not hasattr(v, "items")})
  counts = {name: int(sum(np.prod(shape) for shape in table.values()))
            for name, table in task.fingerprint()["parameter_shapes"].items()}
  logging.info("G parameters: %d, D parameters: %d, devices: %d, processes: %d",
               counts["generator"], counts["discriminator"], mesh.devices.size,
               jax.process_count())

  grid_z, _ = task.latents(jax.random.PRNGKey(config.seed + 1), config.num_grid_samples)
  grid_y = jnp.arange(config.num_grid_samples, dtype=jnp.int32) % max(task.num_classes, 1)
  evaluator = make_evaluator(config, mesh)
  best = checkpointing.BestCheckpoint(os.path.join(workdir, BEST_DIR),
                                      best_logged(workdir, "fid")) if evaluator else None
  eval_latents = jax.jit(lambda key: task.latents(key, evaluator.batch_size),
                         out_shardings=parallel.batch_sharding(mesh)) if evaluator else None
  reseed = jax.jit(rollback_key, static_argnums=1, out_shardings=parallel.replicated(mesh))

  def write_samples(at_plan: Plan) -> None:
    images = monitoring.to_host(task.generate(state, grid_z, grid_y, at_plan))
    grid = make_grid(images, int(np.ceil(np.sqrt(len(images)))))
    size = f"{at_plan.resolution}x{at_plan.resolution}"
    writer.write_images(step, {f"samples_ema/{size}": grid[None]})
    if jax.process_index() == 0:
      sample_dir = os.path.join(workdir, "samples")
      with _best_effort("the sample grid"):
        files.makedirs(sample_dir)
        save_png(os.path.join(sample_dir, f"{step:08d}_kimg{examples // 1000:06d}_{size}.png"),
                 grid)

  def evaluate(at_plan: Plan) -> None:
    start = time.time()
    results = evaluator.measure(lambda key: task.generate(state, *eval_latents(key), at_plan),
                                resolution=at_plan.resolution)
    if not results:
      return
    writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
    record = {"step": step, "kimg": examples / 1000, **dict(at_plan.info),
              "resolution": at_plan.resolution, "num_samples": config.eval.num_samples,
              **results, "seconds": round(time.time() - start, 1)}
    if jax.process_index() == 0:
      print(f"eval step {step} | " + " | ".join(f"{k} {v:.4g}" for k, v in results.items()),
            flush=True)
      with _best_effort(METRICS_FILE):
        files.append_text(os.path.join(workdir, METRICS_FILE), json.dumps(record) + "\n")
    # Only FIDs at the final resolution rank checkpoints.
    if (config.eval.keep_best and "fid" in results
        and at_plan.resolution == config.model.resolution):
      best.offer(step, results["fid"], state, {**meta(step, examples, plan_position),
                                               "fid": results["fid"]})

  log_file = os.path.join(workdir, TRAIN_LOG)

  def log(scalars: dict[str, float], console: bool = True) -> None:
    writer.write_scalars(step, scalars)
    if jax.process_index() == 0:
      if console:
        print(console_line(step, scalars, bar=sys.stdout.isatty()), flush=True)
      with _best_effort(TRAIN_LOG):
        files.append_text(log_file, json.dumps({"step": step, **{
            k: (v if np.isfinite(v) else str(v)) for k, v in scalars.items()}}) + "\n")

  plan: Plan | None = None if plan_position is None else task.plan(plan_position)
  data, data_key = None, None
  throughput = _Throughput(step, examples)
  task.reset_guard(state, step)
  preemption = PreemptionFlag()
  stop_at = None if max_iterations is None else step + max_iterations
  try:
    while not preemption.requested:
      if step % task.plan_interval == 0:
        if task.finished(step, examples):
          break
        new_plan = task.plan(examples)
        if new_plan != plan:
          state = task.on_plan_change(state, plan, new_plan)
          if plan is not None and new_plan.resolution != plan.resolution:
            write_samples(plan)  # The last samples of the finished resolution.
            logging.info("Growing to %dx%d at %.1f kimg.", new_plan.resolution,
                         new_plan.resolution, examples / 1000)
        plan, plan_position = new_plan, examples
      if data_key != (plan.leading_shape, plan.downscale):
        if data is not None:
          data.close()
        data = parallel.prefetch_to_devices(
            pipeline.iterate(examples, plan.leading_shape, downscale=plan.downscale), mesh,
            leading_unsharded_dims=len(plan.leading_shape) - 1)
        data_key = (plan.leading_shape, plan.downscale)
      state, metrics = task.iteration(state, next(data), plan)
      steps = (step, step + 1)
      spans = (examples, examples + plan.examples_per_iteration)
      step, examples = steps[1], spans[1]
      last = step % task.plan_interval == 0 and task.finished(step, examples)
      preemption.check(step)
      if step == stop_at:
        preemption.requested = True
      save = checkpointing.save_due(cadence["checkpoint"].crossed(steps, spans), last,
                                    preemption.requested)
      if save or cadence["log"].crossed(steps, spans):
        scalars, watched = task.guard_scalars(metrics, state, step)
        problem = guard.check(watched)
        if problem:  # Not kept: back to the last good checkpoint, on another random path.
          good_step = guard.start_rollback(step, problem, checkpoints)
          state, plan_position = restore(good_step)
          state = state.replace(rng=reseed(state.rng, guard.rollbacks))
          step, examples = task.position(state)
          plan = None if plan_position is None else task.plan(plan_position)
          data.close()
          data, data_key = None, None
          throughput.reset(step, examples)
          task.reset_guard(state, step)
          log({"guard/rollbacks": guard.rollbacks}, console=False)
          continue
        scalars.update(throughput.report(step, examples, task.remaining(step, examples)),
                       resolution=plan.resolution, **dict(plan.info), **_peak_memory_gb())
        log(scalars)
      if last or cadence["sample"].crossed(steps, spans):
        write_samples(plan)
      if evaluator and (last or cadence["eval"].crossed(steps, spans)):
        evaluate(plan)
      if save:
        checkpoints.save(step, state, meta(step, examples, plan_position))
    if preemption.requested and checkpoints.latest_step() != step:
      checkpoints.save(step, state, meta(step, examples, plan_position))  # SIGTERM at start.
    writer.flush()
  finally:
    if data is not None:
      data.close()
    preemption.restore()
    checkpoints.close()
    if best:
      best.close()
    writer.close()
  if not task.finished(step, examples):
    logging.warning("Stopped at step %d (%.1f kimg) on request; rerun the same command to "
                    "continue.", step, examples / 1000)
  return state


@contextlib.contextmanager
def _best_effort(what: str):
  """Writes a run can live without (samples, logs): a full or failing disk is a warning
  here; the next checkpoint save reports it as an error, keeping the earlier checkpoints."""
  try:
    yield
  except OSError as e:
    logging.warning("Could not write %s: %s", what, e)


def plan_position_of(meta: dict[str, Any]) -> int:
  """Where the checkpoint's plan was taken (older PGGAN checkpoints: schedule_images_seen)."""
  for key in ("plan_position", "schedule_images_seen", "data_position"):
    if key in meta:
      return int(meta[key])
  raise checkpointing.CheckpointError("the checkpoint's meta has no data position")
