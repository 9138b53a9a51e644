#!/usr/bin/env bash
# Runs COMMAND as NUM_PROCESSES JAX processes on this machine, each with
# DEVICES_PER_PROCESS simulated CPU devices: the multi-host runtime without a cluster.
#
#   launch/local.sh NUM_PROCESSES DEVICES_PER_PROCESS COMMAND...
#   launch/local.sh 2 2 python -m biggan_jax.main --config=configs/digits32.py --workdir=/tmp/mp
#
# Every process gets JAX_COORDINATOR_ADDRESS=localhost:<free port>, JAX_NUM_PROCESSES,
# JAX_PROCESS_ID and JAX_NUM_CPU_DEVICES (gan_core.parallel starts jax.distributed from
# them; CPU collectives are gloo). Output lines are prefixed with "[i] ". The exit status
# is 0 when all processes succeed; when one fails, the others are stopped and its status is
# returned. SIGTERM / SIGINT are forwarded to every process (a training run then saves a
# checkpoint and exits 0).
set -uo pipefail

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
  echo "$0 needs bash >= 5.1 (wait -n -p); this is bash ${BASH_VERSION}" >&2
  exit 2
fi

if [[ $# -lt 3 || ! $1 =~ ^[1-9][0-9]*$ || ! $2 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS COMMAND..." >&2
  exit 2
fi
num_processes=$1
devices_per_process=$2
shift 2

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
export JAX_COORDINATOR_ADDRESS="localhost:${port}"
export JAX_NUM_PROCESSES="${num_processes}"
export JAX_NUM_CPU_DEVICES="${devices_per_process}"
export JAX_PLATFORMS=cpu
# The simulated device count comes from JAX_NUM_CPU_DEVICES, not an inherited XLA flag.
XLA_FLAGS=$(echo "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g')
export XLA_FLAGS
# CPU collectives (gloo) give a process 30 s to join the first collective of a program.
# JAX's persistent compilation cache is written by process 0 only, so with a cache process 0
# loads a program at once while the others compile it, often for longer than that.
unset JAX_COMPILATION_CACHE_DIR

set -m  # Each process in its own process group (for the last-resort SIGKILL).
declare -A running  # pid -> process index
for ((i = 0; i < num_processes; i++)); do
  (
    trap '' INT  # Ctrl-C reaches the processes through the forwarding below only.
    JAX_PROCESS_ID=$i "$@" 2> >(sed -u "s/^/[$i] /" >&2) > >(sed -u "s/^/[$i] /") &
    child=$!
    trap 'kill -TERM "${child}" 2>/dev/null' TERM
    while kill -0 "${child}" 2>/dev/null; do wait "${child}"; done
    wait "${child}"
  ) &
  running[$!]=$i
done

forward() {  # forward SIGNAL: to every process still running.
  local pid
  for pid in "${!running[@]}"; do
    if [[ $1 == KILL ]]; then kill -KILL -- "-${pid}" 2>/dev/null; else kill "-$1" "${pid}" 2>/dev/null; fi
  done
}
trap 'forward TERM' TERM INT

status=0
killer=
while ((${#running[@]} > 0)); do
  finished=
  wait -n -p finished "${!running[@]}"
  code=$?
  [[ -z "${finished:-}" ]] && continue  # A forwarded signal interrupted the wait.
  process=${running[${finished}]}
  unset "running[${finished}]"
  if ((code != 0)); then
    echo "launch/local.sh: process ${process} exited with status ${code}" >&2
    if ((status == 0)); then
      status=${code}
      # The others would wait for it in their next collective: stop them, then kill
      # whatever has not exited 30 s later.
      forward TERM
      (sleep 30; for pid in "${!running[@]}"; do kill -KILL -- "-${pid}" 2>/dev/null; done) &
      killer=$!
    fi
  fi
done
[[ -n "${killer}" ]] && kill -- "-${killer}" 2>/dev/null
exit "${status}"
