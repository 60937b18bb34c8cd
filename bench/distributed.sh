#!/usr/bin/env bash
# Data-parallel throughput on this machine: one epoch of the reference teacher and student
# (48,000 images, batch 128, no augmentation) as 1 process with 2 threads, 1 process with 1
# thread, and 2 ranks of 1 thread each (`kd launch --nproc 2`, Gloo over loopback); then the
# teacher pass of a distillation (teacher cache miss) on 1 and 2 ranks.
# Usage: bench/distributed.sh path/to/kd
set -euo pipefail
KD=$(realpath "$1")
WORK=$(mktemp -d /tmp/kd-bench-dist.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
rate() { /usr/bin/python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['train_images_per_s']))" "$1/summary.json"; }
E=(--epochs 1 --no-augment --no-latency)

printf "%-16s %16s %16s %16s %10s\n" model "1 proc x 2 thr" "1 proc x 1 thr" "2 ranks x 1 thr" "2r / 1p2t"
for arch in fmnist-teacher fmnist-student; do
  "$KD" train --arch "$arch" "${E[@]}" --threads 2 --out "$WORK/$arch-1p2t" >/dev/null 2>&1
  "$KD" train --arch "$arch" "${E[@]}" --threads 1 --out "$WORK/$arch-1p1t" >/dev/null 2>&1
  "$KD" launch --nproc 2 -- kd train --arch "$arch" "${E[@]}" --out "$WORK/$arch-2r" >/dev/null 2>&1
  a=$(rate "$WORK/$arch-1p2t") b=$(rate "$WORK/$arch-1p1t") c=$(rate "$WORK/$arch-2r")
  printf "%-16s %16s %16s %16s %9.2fx\n" "$arch" "$a img/s" "$b img/s" "$c img/s" "$(echo "$c / $a" | bc -l)"
done

echo "distillation, 1 epoch, teacher cache miss (the teacher pass over 48,000 images is sharded over the ranks too):"
for setup in 1p2t 2r; do
  export KD_CACHE_DIR=$WORK/cache-$setup
  cmd=("$KD" distill --teacher "$WORK/fmnist-teacher-1p2t" "${E[@]}" --out "$WORK/kd-$setup")
  start=$(date +%s.%N)
  if [ $setup = 1p2t ]; then "${cmd[@]}" --threads 2 >/dev/null 2>"$WORK/kd-$setup.log"
  else "$KD" launch --nproc 2 -- kd "${cmd[@]:1}" >/dev/null 2>"$WORK/kd-$setup.log"; fi
  end=$(date +%s.%N)
  printf "  %-5s whole distillation epoch run %.1f s, student epoch %.0f img/s\n" "$setup" \
    "$(echo "$end - $start" | bc -l)" "$(rate "$WORK/kd-$setup")"
done
