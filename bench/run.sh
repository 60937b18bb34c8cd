#!/usr/bin/env bash
# `make bench`: one training epoch of the reference teacher and student with kd and with the same
# model and loop in PyTorch Python (bench/train_baseline.py), in the same run; then the cost of a
# distillation epoch relative to a plain student epoch, with and without the teacher cache; bf16;
# serving; data-parallel training; the runs dashboard with 1,020 runs.
# Usage: bench/run.sh path/to/kd
set -euo pipefail
KD=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/kd-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export KD_CACHE_DIR=$WORK/cache
get() { /usr/bin/python3 -c "import json,sys; print(eval(sys.argv[2], {'d': json.load(open(sys.argv[1]))}))" "$@"; }
div() { /usr/bin/python3 -c "import sys; print(float(sys.argv[1]) / float(sys.argv[2]))" "$1" "$2"; }
epoch_s() { /usr/bin/python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['train_seconds'])" "$1/metrics.jsonl"; }

echo "== micro-benchmarks (Google Benchmark)"
[ -x "$(dirname "$KD")/bench/kd_micro" ] && "$(dirname "$KD")/bench/kd_micro" --benchmark_min_time=0.2 2>/dev/null || true

echo "== one epoch, 48,000 images, batch 128, no augmentation, 2 threads"
# kd: the 8:2 split of the 60,000 training images gives the same 48,000-image epoch.
for arch in fmnist-teacher fmnist-student; do
  "$KD" train --arch "$arch" --epochs 1 --no-augment --threads 2 --no-latency --out "$WORK/$arch" >/dev/null 2>"$WORK/$arch.log"
done
# PyTorch Python with the OpenBLAS kernels kd runs with (kd asks for them where OpenBLAS falls
# back to its Prescott kernels: runtime.h, openblas_core_to_force); kd logs the core it got.
core=$(grep -o 'OpenBLAS [0-9.]* [^)]*' "$WORK/fmnist-teacher.log" | head -1 | awk '{print $(NF-1)}')
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$core}
/usr/bin/python3 "$HERE/train_baseline.py" --threads 2 > "$WORK/python.jsonl"
printf "%-16s %14s %14s %8s\n" model "kd img/s" "python img/s" ratio
for arch in fmnist-teacher fmnist-student; do
  k=$(get "$WORK/$arch/summary.json" "d['train_images_per_s']")
  p=$(grep "\"$arch\"" "$WORK/python.jsonl" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['images_per_s'])")
  printf "%-16s %14.0f %14.0f %7.2fx\n" "$arch" "$k" "$p" "$(div "$k" "$p")"
done
echo "(kd: $(grep -o 'threads=.*' "$WORK/fmnist-teacher.log" | head -1); Python: OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE)"

echo "== distillation epoch vs plain student epoch (teacher: the 1-epoch fmnist-teacher above)"
"$KD" distill --teacher "$WORK/fmnist-teacher" --epochs 1 --no-augment --no-teacher-cache --threads 2 --no-latency --out "$WORK/nocache" >/dev/null 2>&1
"$KD" distill --teacher "$WORK/fmnist-teacher" --epochs 1 --no-augment --threads 2 --no-latency --out "$WORK/fill" >/dev/null 2>&1
"$KD" distill --teacher "$WORK/fmnist-teacher" --epochs 1 --no-augment --threads 2 --no-latency --out "$WORK/cached" >/dev/null 2>&1
s=$(epoch_s "$WORK/fmnist-student")
printf "%-40s %8s %8s\n" "epoch" seconds "x plain"
for run in fmnist-student:"plain student" nocache:"distill, teacher run per batch" cached:"distill, teacher cache hit"; do
  dir=${run%%:*} label=${run#*:}
  t=$(epoch_s "$WORK/$dir")
  printf "%-40s %8.2f %7.2fx\n" "$label" "$t" "$(div "$t" "$s")"
done
echo "(filling the cache once: one teacher pass over the 48,000 images, $(get "$WORK/fill/summary.json" "d['strategy']['teacher_cache']"))"

echo "== bf16 autocast vs fp32: teacher training epoch and a distillation epoch with the teacher online"
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
  for p in fp32 bf16; do
    "$KD" train --arch fmnist-teacher --epochs 1 --no-augment --threads 2 --no-latency --precision $p \
      --out "$WORK/teacher-$p" >/dev/null 2>&1
    "$KD" distill --teacher "$WORK/fmnist-teacher" --epochs 1 --no-augment --no-teacher-cache --threads 2 \
      --no-latency --precision $p --out "$WORK/online-$p" >/dev/null 2>&1
    /usr/bin/python3 "$HERE/train_baseline.py" --threads 2 --models fmnist-teacher,distill --precision $p >> "$WORK/python-prec.jsonl"
  done
  py() { grep "\"$1\"" "$WORK/python-prec.jsonl" | grep "\"$2\"" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['images_per_s'])"; }
  printf "%-34s %10s %10s %8s %12s %12s %8s\n" epoch "kd fp32" "kd bf16" "kd x" "python fp32" "python bf16" "py x"
  for row in teacher:fmnist-teacher:"teacher training" online:distill:"distillation, teacher online"; do
    IFS=: read -r dir model label <<<"$row"
    k32=$(get "$WORK/$dir-fp32/summary.json" "d['train_images_per_s']"); k16=$(get "$WORK/$dir-bf16/summary.json" "d['train_images_per_s']")
    p32=$(py "$model" fp32); p16=$(py "$model" bf16)
    printf "%-34s %10.0f %10.0f %7.2fx %12.0f %12.0f %7.2fx\n" "$label" "$k32" "$k16" "$(div "$k16" "$k32")" "$p32" "$p16" "$(div "$p16" "$p32")"
  done
else
  echo "(skipped: this CPU has no avx512_bf16 or amx_bf16)"
fi

echo "== streamed data: loader, memory, a 224 px epoch (bench/data.sh)"
"$HERE/data.sh" "$KD" "$WORK/data"

echo "== torchvision's resnet18 and mobilenet_v2 against PyTorch (bench/arch.sh)"
"$HERE/arch.sh" "$KD" "$WORK/arch"

echo "== serving: the distilled student above, kd serve vs FastAPI + uvicorn + PyTorch (wrk, 10 s each)"
"$HERE/serve.sh" "$KD" "$WORK/cached" 10

echo "== data-parallel training: 1 process vs 2 ranks (kd launch)"
"$HERE/distributed.sh" "$KD"

echo "== runs dashboard: a folder of 1,020 runs (kd serve --runs), index requests and the page in Chromium"
/usr/bin/python3 "$HERE/dashboard.py" "$KD" "$WORK/fmnist-student" 1020
