#!/usr/bin/env bash
# Train on a Cloud TPU VM slice (one host or a multi-host pod slice) from your own machine.
#
# Usage (from the repository root, with gcloud installed and authenticated):
#   launch/tpu_pod.sh create                        create the TPU VM, then `install`
#   launch/tpu_pod.sh install                       (re)install the code on every worker
#   launch/tpu_pod.sh run CONFIG WORKDIR [FLAGS...]  start training on all workers, detached
#   launch/tpu_pod.sh tail [WORKER]                 follow a worker's log (default: worker 0)
#   launch/tpu_pod.sh status                        TPU state; is training alive on each worker?
#   launch/tpu_pod.sh stop                          SIGTERM: checkpoint at the current step, exit
#   launch/tpu_pod.sh delete                        delete the TPU VM (asks first unless YES=1)
#
# Example:
#   export TPU_NAME=gan-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32
#   launch/tpu_pod.sh create
#   launch/tpu_pod.sh run configs/imagenet128.py gs://MY_BUCKET/runs/biggan128
#   MODULE=pggan_jax.main launch/tpu_pod.sh run configs/pggan_celebahq1024.py gs://MY_BUCKET/pg
#
# WORKDIR should be gs://BUCKET/PATH: every worker takes part in checkpoint saves, so it must be
# storage that all workers share. `run` again with the same WORKDIR resumes from its latest
# checkpoint (after `stop`, a Spot preemption, or on a slice of another size). docs/scaling.md
# explains the details.
#
# Settings are environment variables (defaults below):
#   TPU_NAME, ZONE, ACCELERATOR_TYPE, RUNTIME_VERSION  the TPU VM
#   PROJECT          Google Cloud project (default: gcloud's configured project)
#   SPOT=1           create a Spot TPU VM (PREEMPTIBLE=1: the older preemptible kind)
#   REPO_URL         git URL to clone on every worker at REPO_REF (branch, tag or commit);
#                    unset: copy this checkout instead (without .git, workdirs and caches)
#   MODULE           biggan_jax.main or pggan_jax.main
#   PYTHON_VERSION   Python of the workers' virtualenv (current JAX needs a newer Python than
#                    the TPU images ship; uv downloads it)
#   EXTRA_ENV        more NAME=VALUE words for the training processes, e.g.
#                    EXTRA_ENV="JAX_COMPILATION_CACHE_DIR=gs://MY_BUCKET/jax_cache"
set -euo pipefail

TPU_NAME=${TPU_NAME:-gan-tpu}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
PROJECT=${PROJECT:-}
SPOT=${SPOT:-0}
PREEMPTIBLE=${PREEMPTIBLE:-0}
REPO_URL=${REPO_URL:-}
REPO_REF=${REPO_REF:-main}
MODULE=${MODULE:-biggan_jax.main}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
EXTRA_ENV=${EXTRA_ENV:-}
# Paths on the workers, relative to the home directory.
REMOTE_DIR=gan            # the code
VENV_DIR=gan_venv         # the virtualenv
LOG_FILE=gan_run.log      # training output (every `run` appends to it)
PID_FILE=gan_run.pid      # the training process id

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC_TARBALL=""

die() { echo "error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set /p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2; }
cleanup() { if [[ -n $SRC_TARBALL ]]; then rm -f -- "$SRC_TARBALL"; fi; }
trap cleanup EXIT

# gcloud compute tpus tpu-vm SUBCOMMAND ... in the zone and project.
tpu_vm() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}; }

# on_workers WORKERS SCRIPT: runs the bash SCRIPT on the given workers ("all", "0", "1,3", ...)
# in the home directory, with $dir $venv $log $pidfile set and a function `alive` that tells
# whether the training process started by `run` is still running.
on_workers() {
  local preamble
  preamble=$(printf 'cd ~ || exit 1; dir=%q; venv=%q; log=%q; pidfile=%q' \
    "$REMOTE_DIR" "$VENV_DIR" "$LOG_FILE" "$PID_FILE")
  preamble+='; alive() { [ -f ~/"$pidfile" ] && kill -0 "$(cat ~/"$pidfile")" 2>/dev/null; }'
  tpu_vm ssh "$TPU_NAME" --worker="$1" --command="bash -c $(printf %q "$preamble
$2")"
}

cmd_create() {
  local extra=()
  if [[ $SPOT == 1 ]]; then extra+=(--spot); fi
  if [[ $PREEMPTIBLE == 1 ]]; then extra+=(--preemptible); fi
  tpu_vm create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" ${extra[@]+"${extra[@]}"}
  cmd_install
}

cmd_install() {
  if [[ -n $REPO_URL ]]; then
    echo "Cloning $REPO_URL at $REPO_REF on every worker..."
    on_workers all "$(printf 'url=%q; ref=%q' "$REPO_URL" "$REPO_REF")"'
      set -e
      if [ ! -d "$dir/.git" ]; then rm -rf "$dir"; git clone -q "$url" "$dir"; fi
      git -C "$dir" fetch -q origin "$ref"
      git -C "$dir" checkout -q --detach FETCH_HEAD
      git -C "$dir" rev-parse --short HEAD > "$dir/CODE_VERSION"'
  else
    echo "Copying this checkout ($ROOT) to every worker..."
    local version
    version=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "unknown")
    SRC_TARBALL=$(mktemp "${TMPDIR:-/tmp}/gan_src.XXXXXX")
    tar -C "$ROOT" -czf "$SRC_TARBALL" --exclude=./.git --exclude='./workdir*' \
      --exclude=./runs --exclude=./build --exclude=./dist --exclude=.venv \
      --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache --exclude='*.npz' .
    tpu_vm scp "$SRC_TARBALL" "$TPU_NAME:gan_src.tar.gz" --worker=all
    on_workers all "$(printf 'version=%q' "$version (copied)")"'
      set -e
      rm -rf "$dir"; mkdir -p "$dir"; tar -xzf gan_src.tar.gz -C "$dir"; rm gan_src.tar.gz
      echo "$version" > "$dir/CODE_VERSION"'
  fi
  echo "Installing the project and jax[tpu] in a Python $PYTHON_VERSION virtualenv..."
  on_workers all "$(printf 'python_version=%q' "$PYTHON_VERSION")"'
    set -e
    uv=~/.local/bin/uv
    if [ ! -x "$uv" ]; then
      python3 -m pip install -q --user uv || curl -LsSf https://astral.sh/uv/install.sh | sh
    fi
    if [ ! -x "$venv/bin/python" ]; then "$uv" venv -q --python "$python_version" "$venv"; fi
    "$uv" pip install -q --python "$venv/bin/python" -e "$dir" "jax[tpu]"
    jax_version=$("$venv/bin/python" -c "import jax; print(jax.__version__)")
    echo "$(hostname): code $(cat "$dir/CODE_VERSION"), jax $jax_version"'
}

cmd_run() {
  [[ $# -ge 2 ]] || usage
  local config=$1 workdir=$2
  shift 2
  if [[ $workdir != gs://* ]]; then
    echo "warning: WORKDIR $workdir is not gs://...: unless it is a filesystem shared by all" \
      "workers, each worker's local disk gets a different, partial checkpoint." >&2
  fi
  local settings word
  settings="args=($(printf '%q ' "$MODULE" "--config=$config" "--workdir=$workdir" \
    --coordinator_address=auto "$@")); extra_env=("
  for word in $EXTRA_ENV; do settings+="$(printf '%q ' "$word")"; done
  settings+=")"
  # TensorFlow is imported (tfds, TensorBoard) but computes nothing; TF_CPP_MIN_LOG_LEVEL=2 hides
  # its info logs.
  on_workers all "$settings"'
    if alive; then
      echo "$(hostname): training already runs (pid $(cat "$pidfile")); stop it first" >&2
      exit 1
    fi
    cd "$dir" || exit 1
    export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1 ${extra_env[@]+"${extra_env[@]}"}
    echo "=== $(date -u +%FT%TZ) python -m ${args[*]}" >> ~/"$log"
    nohup ~/"$venv"/bin/python -m "${args[@]}" >> ~/"$log" 2>&1 < /dev/null &
    echo $! > ~/"$pidfile"
    echo "$(hostname): started pid $!, log ~/$log"'
  echo "Follow it with: $0 tail   (the first iteration compiles: minutes for large models)"
}

cmd_tail() {
  on_workers "${1:-0}" 'tail -n 100 -F "$log"'
}

cmd_status() {
  tpu_vm describe "$TPU_NAME" --format='yaml(acceleratorType,state,health,runtimeVersion)'
  on_workers all '
    if alive; then state="running (pid $(cat "$pidfile"))"; else state="not running"; fi
    echo "$(hostname): $state; code $(cat "$dir/CODE_VERSION" 2>/dev/null)"
    echo "  last log line: $(tail -n 1 "$log" 2>/dev/null)"'
}

cmd_stop() {
  # Every process saves the checkpoint of the same step and exits 0, normally within 60 s.
  on_workers all '
    if ! alive; then echo "$(hostname): not running"; exit 0; fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    echo "$(hostname): SIGTERM sent to $pid; waiting for its checkpoint..."
    for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$(hostname): still running after 120 s; see ~/$log" >&2
      exit 1
    fi
    echo "$(hostname): stopped. Last log line: $(tail -n 1 "$log")"'
}

cmd_delete() {
  if [[ ${YES:-0} != 1 ]]; then
    local answer=""
    read -r -p "Delete TPU VM $TPU_NAME in $ZONE (its local disks are lost)? [y/N] " answer \
      || true
    [[ $answer == [yY]* ]] || die "not deleted"
  fi
  tpu_vm delete "$TPU_NAME" --quiet
}

[[ $# -ge 1 ]] || usage
command=$1
shift
case $command in
  create) cmd_create ;;
  install) cmd_install ;;
  run) cmd_run "$@" ;;
  tail) cmd_tail "$@" ;;
  status) cmd_status ;;
  stop) cmd_stop ;;
  delete) cmd_delete ;;
  -h|--help|help) usage ;;
  *) usage ;;
esac
