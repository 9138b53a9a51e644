#!/usr/bin/env bash
# One-script accelerator check (GPU/TPU): BigGAN-128 f32 and bf16, BigGAN-deep-128, at
# per-device batch 32/64/128 (and bf16 at 64 with the attention in query chunks); PGGAN at
# 256 and 1024; Inception features at 299. Prints one table (ms/iteration, images/s, model
# TFLOP/s, MFU, peak memory, kernels per iteration) and appends it, with the device and
# software versions, to benchmarks/RESULTS.md. Target: under 8 minutes on one
# H100/H200 (each row has its own time limit; a row that fails or runs out of memory is
# recorded as such and the script goes on).
#
#   bash benchmarks/accelerator_check.sh                 # all rows
#   QUICK=1 bash benchmarks/accelerator_check.sh         # batch 32 only, no deep/PGGAN 1024
#   NO_APPEND=1 bash benchmarks/accelerator_check.sh     # print only
#   PROFILE=DIR bash benchmarks/accelerator_check.sh     # + a jax.profiler trace per row
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-5}
ROW_LIMIT=${ROW_LIMIT:-150}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-${TMPDIR:-/tmp}/gan_accel_cache}
out=$(mktemp)
platform=$(python -c "import jax; d = jax.devices()[0]; print(d.platform)")
kind=$(python -c "import jax; d = jax.devices(); print(f'{len(d)} x {d[0].device_kind}')")
ndev=$(python -c "import jax; print(jax.device_count())")
if [ "$platform" = cpu ] && [ "${ALLOW_CPU:-0}" != 1 ]; then
  echo "accelerator_check.sh: no accelerator (jax sees only the CPU); ALLOW_CPU=1 runs it anyway" >&2
  exit 2
fi
field() { grep -E "^$1: " "$2" | tail -1 | sed -E "s/^$1: //"; }
profile_flag() { [ -n "${PROFILE:-}" ] && echo "--profile=$PROFILE/$1"; }

biggan_row() {  # label, per-device batch, train_step.py arguments
  local label=$1 per_device=$2; shift 2
  local log; log=$(mktemp)
  timeout "$ROW_LIMIT" python benchmarks/train_step.py --batch_size=$((per_device * ndev)) \
      --steps="$STEPS" --warmup=1 $(profile_flag "$label-b$per_device") "$@" > "$log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    local why="failed (rc $rc)"
    [ $rc -eq 124 ] && why="over ${ROW_LIMIT} s"
    grep -qiE "resource.?exhausted|out of memory" "$log" && why="out of memory"
    echo "| $label | $per_device | $why | | | | | | |" >> "$out"
  else
    echo "| $label | $per_device | $(field 'ms/iteration' "$log") | $(field 'images/s' "$log") |" \
         "$(field 'achieved TFLOP/s' "$log") | $(field 'MFU' "$log" | cut -d' ' -f1) |" \
         "$(field 'peak memory' "$log" | cut -d' ' -f1-2) | $(field 'compile' "$log" | cut -d' ' -f1-2) |" \
         "$(field 'kernels per iteration' "$log" | sed -E 's/ small:.*/ small)/') |" >> "$out"
  fi
  tail -3 "$log" >&2
  rm -f "$log"
}

pggan_row() {  # resolution
  local res=$1 log; log=$(mktemp)
  timeout "$ROW_LIMIT" python benchmarks/pggan_phases.py --config=configs/pggan_celebahq1024.py \
      --resolutions="$res" --steps="$STEPS" $(profile_flag "pggan$res") > "$log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "| PGGAN r$res | config | failed or over ${ROW_LIMIT} s (rc $rc) | | | | | | |" >> "$out"
  else
    grep -E "^res=" "$log" | while read -r line; do
      get() { echo "$line" | tr ' ' '\n' | grep -E "^$1=" | cut -d= -f2; }
      echo "| PGGAN r$res fading=$(get fading) | $(( $(get batch) / ndev )) | $(get ms/iteration) |" \
           "$(get images/s) | $(get tflops) | $(get mfu) | $(get peak_mem_gib) GiB | $(get compile_s) s |" \
           "$(get kernels) ($(get small_kernels) small) |" >> "$out"
    done
  fi
  tail -3 "$log" >&2
  rm -f "$log"
}

inception_row() {
  local log; log=$(mktemp)
  timeout "$ROW_LIMIT" python benchmarks/inception_throughput.py --torch=false --cpu_ynnpack=false \
      --image_size=299 --batch_size=$((256 * ndev)) --num_images=$((4096 * ndev)) "$@" \
      $(profile_flag inception) > "$log" 2>&1
  local rc=$? dtype=f32
  case " $* " in *--bf16*) dtype=bf16;; esac
  if [ $rc -ne 0 ]; then
    echo "| Inception 299 $dtype | 256 | failed or over ${ROW_LIMIT} s (rc $rc) | | | | | | |" >> "$out"
  else
    local ms; ms=$(python -c "print(f'{256 * $ndev / float(\"$(field 'images/s' "$log")\") * 1000:.1f}')")
    echo "| Inception 299 $dtype | 256 | $ms (per batch) | $(field 'images/s' "$log") |" \
         "$(field 'achieved TFLOP/s' "$log") | $(field 'MFU' "$log" | cut -d' ' -f1) |" \
         "$(field 'peak memory' "$log" | cut -d' ' -f1-2) | |" \
         "$(field 'kernels per batch' "$log" | sed -E 's/ small:.*/ small)/') |" >> "$out"
  fi
  tail -3 "$log" >&2
  rm -f "$log"
}

start=$(date +%s)
batches="32 64 128"
[ "${QUICK:-0}" = 1 ] && batches="32"
for b in $batches; do
  biggan_row "BigGAN-128 f32" "$b" --config=configs/imagenet128.py
  biggan_row "BigGAN-128 bf16" "$b" --config=configs/imagenet128.py --config.model.compute_dtype=bfloat16
done
# The time cost of computing the attention in query chunks (model.attention_query_chunk, a
# memory knob for large per-device batches; README "Memory"): pair with the bf16 row at 64.
[ "${QUICK:-0}" = 1 ] || biggan_row "BigGAN-128 bf16 attention chunks of 1024" 64 \
    --config=configs/imagenet128.py --config.model.compute_dtype=bfloat16 \
    --config.model.attention_query_chunk=1024
for b in $batches; do
  [ "${QUICK:-0}" = 1 ] && [ "$b" != 32 ] && continue
  biggan_row "BigGAN-deep-128 bf16" "$b" --config=configs/imagenet128_deep.py \
      --config.model.compute_dtype=bfloat16
done
pggan_row 256
[ "${QUICK:-0}" = 1 ] || pggan_row 1024
inception_row
inception_row --bf16
elapsed=$(( $(date +%s) - start ))

{
  echo
  echo "## Accelerator check ($(date -u +%Y-%m-%d), ${kind})"
  echo
  echo "\`bash benchmarks/accelerator_check.sh\`, ${STEPS} timed iterations per row after 1 warm-up;"
  echo "jax $(python -c 'import jax; print(jax.__version__)'), $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 | sed 's/^/driver /')."
  echo "MFU: model FLOPs (XLA cost analysis) / time / the device's data-sheet peak for the row's dtype."
  echo "Whole script: ${elapsed} s."
  echo
  echo "Kernels: launched per iteration (per batch for the Inception), loop bodies counted per"
  echo "iteration, and how many are small (no operand or output over 4096 elements), from the"
  echo "compiled HLO (gan_core.perf.kernel_census)."
  echo
  echo "| row | per-device batch | ms/iteration | images/s | TFLOP/s | MFU | peak memory | compile | kernels |"
  echo "|---|---|---|---|---|---|---|---|---|"
  cat "$out"
} > "$out.md"
cat "$out.md"
[ "${NO_APPEND:-0}" = 1 ] || cat "$out.md" >> benchmarks/RESULTS.md
rm -f "$out" "$out.md"
