#!/usr/bin/env bash
# Throughput cost of D-input augmentation: the BigGAN iteration (benchmarks/train_step.py)
# without augmentation, with DiffAugment (color,translation,cutout) and with ADA at p = 1
# (every op drawn for every image: its most expensive setting), at the same config,
# run one after another on an otherwise idle machine.
#
#   bash benchmarks/augment_cost.sh            # digits32 (batch 16) and imagenet128 ch 64 batch 8
#   STEPS=20 bash benchmarks/augment_cost.sh
#   DIGITS_ONLY=1 bash benchmarks/augment_cost.sh   # a minute or two instead of ~15
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-10}
run() {  # name, then train_step.py arguments
  local name=$1; shift
  for kind in none diffaugment ada; do
    extra=(--config.augment.kind=$kind)
    if [ "$kind" = ada ]; then extra+=(--config.augment.p=1.0 --config.augment.adaptive=false); fi
    line=$(python benchmarks/train_step.py "$@" "${extra[@]}" --steps="$STEPS" 2>/dev/null \
           | grep -E "ms/iteration" | tail -1)
    echo "$name | $kind | $line"
  done
}
run digits32 --config=configs/digits32.py
[ "${DIGITS_ONLY:-0}" = 1 ] && exit 0
run "imagenet128 ch64 b8 1D" --config=configs/imagenet128.py --batch_size=8 \
    --config.num_d_steps=1 --config.ortho_reg=0 --config.model.ch=64
