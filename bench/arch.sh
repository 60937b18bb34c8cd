#!/usr/bin/env bash
# The networks people distill (issue 36), kd against PyTorch Python in the same run on the same
# in-memory 224 px images (generated photos, bench/photos.py; their accuracy means nothing):
#   1. one training epoch of 512 images, batch 64, 2 threads, no augmentation (kd train vs the same
#      torchvision model and SGD loop, bench/arch_baseline.py);
#      PyTorch twice: as written (NCHW, glibc malloc) and tuned (channels-last, tcmalloc preloaded:
#      what kd does), for training and fp32 inference;
#   2. inference: batch-1 median latency and batch-256 throughput, fp32 and INT8 (kd eval
#      --latency on the run and on its `kd quantize`d copy; torchvision's quantizable network,
#      fused, calibrated and converted).
# Usage: bench/arch.sh path/to/kd [WORK] [ARCHS]
set -euo pipefail
KD=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${2:-$(mktemp -d /tmp/kd-arch.XXXXXX)}
ARCHS=${3:-resnet18 mobilenet_v2}
mkdir -p "$WORK" && cd "$WORK"
export KD_CACHE_DIR=$WORK/cache
[ -d photos ] || /usr/bin/python3 "$HERE/photos.py" photos --images 800 --size 256 >/dev/null
[ -f photos-800.csv ] || /usr/bin/python3 "$HERE/photos.py" photos --list 800 >/dev/null
[ -d idx224 ] || /usr/bin/python3 "$HERE/photos_idx.py" photos-800.csv 800 idx224
get() { /usr/bin/python3 -c "import json,sys; print(eval(sys.argv[2], {'d': json.load(open(sys.argv[1]))}))" "$@"; }
r() { /usr/bin/python3 -c "print(f'{$1:.2f}x')"; }

TCMALLOC=$(ls /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 2>/dev/null || true)
printf "%-14s %-28s %10s %10s %8s %10s %8s\n" model measure kd PyTorch ratio "PT tuned" ratio
for arch in $ARCHS; do
  rm -rf "run-$arch" "run-$arch-int8"
  # --limit 640: the 8:2 split leaves 512 training images.
  "$KD" train --arch "$arch" --data idx224 --limit 640 --epochs 1 --batch-size 64 --lr 0.01 --no-augment \
    --threads 2 --no-latency --out "run-$arch" >/dev/null 2>"train-$arch.log"
  # PyTorch Python with the OpenBLAS kernels kd runs with (bench/run.sh says why).
  core=$(grep -o 'OpenBLAS [0-9.]* [^)]*' "train-$arch.log" | head -1 | awk '{print $(NF-1)}')
  export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$core}
  "$KD" eval "run-$arch" --latency --json > "eval-$arch.json" 2>/dev/null
  "$KD" quantize "run-$arch" --out "run-$arch-int8" --no-latency >"quantize-$arch.log" 2>&1 || true
  rm -f "eval-$arch-int8.json"
  [ -d "run-$arch-int8" ] && { "$KD" eval "run-$arch-int8" --latency --json > "eval-$arch-int8.json" 2>"eval-$arch-int8.log" || rm -f "eval-$arch-int8.json"; }
  /usr/bin/python3 "$HERE/arch_baseline.py" "$arch" idx224 --images 512 --threads 2 --int8 > "py-$arch.json"
  LD_PRELOAD=$TCMALLOC /usr/bin/python3 "$HERE/arch_baseline.py" "$arch" idx224 --images 512 --threads 2 \
    --channels-last > "pyt-$arch.json"
  k=$(get "run-$arch/summary.json" "d['train_images_per_s']"); p=$(get "py-$arch.json" "d['train_images_per_s']")
  t=$(get "pyt-$arch.json" "d['train_images_per_s']")
  printf "%-14s %-28s %10.1f %10.1f %8s %10.1f %8s\n" "$arch" "train img/s (batch 64)" "$k" "$p" "$(r "$k / $p")" "$t" "$(r "$k / $t")"
  k=$(get "eval-$arch.json" "d['latency']['batch1_median_ms']"); p=$(get "py-$arch.json" "d['fp32_batch1_ms']")
  t=$(get "pyt-$arch.json" "d['fp32_batch1_ms']")
  printf "%-14s %-28s %10.2f %10.2f %8s %10.2f %8s\n" "$arch" "fp32 batch-1 ms" "$k" "$p" "$(r "$p / $k")" "$t" "$(r "$t / $k")"
  k=$(get "eval-$arch.json" "d['latency']['throughput_per_s']"); p=$(get "py-$arch.json" "d['fp32_batch256_per_s']")
  t=$(get "pyt-$arch.json" "d['fp32_batch256_per_s']")
  printf "%-14s %-28s %10.1f %10.1f %8s %10.1f %8s\n" "$arch" "fp32 batch-256 img/s" "$k" "$p" "$(r "$k / $p")" "$t" "$(r "$k / $t")"
  if [ -f "eval-$arch-int8.json" ]; then
    k=$(get "eval-$arch-int8.json" "d['latency']['batch1_median_ms']"); p=$(get "py-$arch.json" "d.get('int8_batch1_ms', float('nan'))")
    printf "%-14s %-28s %10.2f %10.2f %8s\n" "$arch" "INT8 batch-1 ms" "$k" "$p" "$(r "$p / $k")"
    k=$(get "eval-$arch-int8.json" "d['latency']['throughput_per_s']"); p=$(get "py-$arch.json" "d.get('int8_batch256_per_s', float('nan'))")
    printf "%-14s %-28s %10.1f %10.1f %8s\n" "$arch" "INT8 batch-256 img/s" "$k" "$p" "$(r "$k / $p")"
  else
    echo "$arch: kd INT8 failed: $(tail -1 "eval-$arch-int8.log" 2>/dev/null || tail -1 "quantize-$arch.log")"
  fi
done
# TorchScript taps: a scripted torchvision resnet18 (as a user brings a teacher), three hint layers.
/usr/bin/python3 - <<'PY'
import json, torch, torchvision
m = torch.jit.script(torchvision.models.resnet18(num_classes=10).eval())
torch.jit.save(m, "resnet18_ts.pt")
json.dump({"class_names": [str(i) for i in range(10)], "input_shape": [3, 224, 224],
           "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, open("resnet18_ts.pt.json", "w"))
PY
echo "== TorchScript teacher taps (layer2, layer3, layer4; batch 8, 224 px): 0 forward alone, 1 one forward with the taps, 2 the layers before each tap run again (kd before)"
KD_BENCH_TORCHSCRIPT=$WORK/resnet18_ts.pt "$(dirname "$KD")/bench/kd_micro" --benchmark_filter=TorchScriptTaps 2>/dev/null
for arch in $ARCHS; do
  echo "($arch: PyTorch INT8 engine $(get "py-$arch.json" "d.get('int8_engine')"), failures: $(get "py-$arch.json" "d.get('int8_errors', 'none')"))"
done
echo "(ratios > 1: kd faster; PyTorch with OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE)"
