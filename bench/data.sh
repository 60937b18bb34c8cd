#!/usr/bin/env bash
# Streamed data (issue 35), against PyTorch in the same run: generated photos (Fashion-MNIST
# upscaled to 256 px and tinted, JPEG; their accuracy means little), then
#   1. the loader alone: kd's pipeline vs torchvision ImageFolder + DataLoader, both decoding,
#      RandomResizedCrop 224, flip and normalizing into batches of 128, at 0, 1 and 2 workers;
#   2. memory: peak RSS of the loader alone and of `kd train` over lists of 10^4, 10^5, 10^6
#      entries (repeating the photos);
#   3. training not starved: a 224 px epoch streamed vs the same model on in-memory batches;
#   4. detection: peak RSS of `kd train --arch effdet-d0 --size 512` over generated COCO sets of
#      500 and 4,000 canvases of 512 px (kd data make-detection).
# Usage: bench/data.sh path/to/kd [WORK] [SECTIONS: loader memory epoch detect]
set -euo pipefail
KD=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=$(dirname "$KD")/bench/kd_loader_bench
WORK=${2:-$(mktemp -d /tmp/kd-data.XXXXXX)}
mkdir -p "$WORK" && cd "$WORK"
SECTIONS=${3:-loader memory epoch detect}
if [[ " $SECTIONS " == *" loader "* || " $SECTIONS " == *" memory "* || " $SECTIONS " == *" epoch "* ]]; then
  [ -d photos ] || /usr/bin/python3 "$HERE/photos.py" photos --images 12000 --size 256
  for n in 10000 100000 1000000; do [ -f "photos-$n.csv" ] || /usr/bin/python3 "$HERE/photos.py" photos --list "$n" >/dev/null; done
fi
get() { /usr/bin/python3 -c "import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])" "$1"; }

if [[ " $SECTIONS " == *" loader "* ]]; then
echo "== loader alone: 40 batches of 128 (5,120 photos of 256 px), RandomResizedCrop 224 + flip + normalize"
printf "%-8s %12s %16s %8s\n" workers "kd img/s" "torchvision img/s" ratio
for w in 0 1 2; do
  k=$("$BENCH" photos --workers "$w" --batches 40 2>/dev/null | get images_per_s)
  p=$(/usr/bin/python3 "$HERE/loader_baseline.py" photos --workers "$w" --batches 40 | get images_per_s)
  printf "%-8s %12.0f %16.0f %7.2fx\n" "$w" "$k" "$p" "$(/usr/bin/python3 -c "print($k / $p)")"
done

fi

if [[ " $SECTIONS " == *" memory "* ]]; then
echo "== peak RSS over file lists (the loader alone: 10 batches; kd train: fmnist-student, 224 px, batch 128, --limit 512, 1 epoch)"
printf "%-10s %14s %14s %10s\n" entries "loader MB" "kd train MB" "train s"
for n in 10000 100000 1000000; do
  /usr/bin/time -o rss.txt -f "%M" "$BENCH" "photos-$n.csv" --workers 2 --batches 10 >/dev/null 2>&1
  l=$(tail -1 rss.txt)
  rm -rf "mem-$n"
  /usr/bin/time -o rss.txt -f "%M %e" "$KD" train --data "photos-$n.csv" --arch fmnist-student --limit 512 --epochs 1 --no-latency --out "mem-$n" >/dev/null 2>&1
  t=$(tail -1 rss.txt)
  printf "%-10s %14.0f %14.0f %10s\n" "$n" "$(/usr/bin/python3 -c "print($l / 1024)")" "$(/usr/bin/python3 -c "print(${t% *} / 1024)")" "${t#* }"
done

fi

if [[ " $SECTIONS " == *" epoch "* ]]; then
echo "== a 224 px training epoch (2,048 photos, batch 128): streamed (decode + RandomResizedCrop + flip) vs in-memory batches"
[ -f photos-2560.csv ] || head -2561 photos-10000.csv > photos-2560.csv
[ -d idx224 ] || /usr/bin/python3 "$HERE/photos_idx.py" photos-2560.csv 2560 idx224
printf "%-16s %14s %14s %8s\n" model "in-memory img/s" "streamed img/s" ratio
for arch in fmnist-student fmnist-teacher; do
  rm -rf "mem-$arch" "str-$arch"
  "$KD" train --data idx224 --arch "$arch" --epochs 1 --no-augment --no-latency --out "mem-$arch" >/dev/null 2>&1
  "$KD" train --data photos-2560.csv --arch "$arch" --epochs 1 --no-latency --out "str-$arch" >/dev/null 2>&1
  m=$(get train_images_per_s < "mem-$arch/summary.json")
  s=$(get train_images_per_s < "str-$arch/summary.json")
  printf "%-16s %14.1f %14.1f %7.3fx\n" "$arch" "$m" "$s" "$(/usr/bin/python3 -c "print($s / $m)")"
done
fi

if [[ " $SECTIONS " == *" detect "* ]]; then
echo "== detection, streamed: peak RSS of kd train (effdet-d0, 512 px, batch 8, --limit 64, 1 epoch) over COCO sets of 512 px canvases"
echo "   (in memory, the letterboxed images alone were N x 3 x 512 x 512 bytes: 0.39 GB for 500, 3.1 GB for 4,000)"
printf "%-10s %14s\n" images "kd train MB"
for n in 500 4000; do
  [ -d "det512-$n" ] || "$KD" data make-detection --out "det512-$n" --images "$n" --test-images 100 --canvas 512 \
    --min-size 48 --max-size 192 --seed 0 >/dev/null 2>&1
  rm -rf "detmem-$n"
  /usr/bin/time -o rss.txt -f "%M" "$KD" train --arch effdet-d0 --data "det512-$n" --size 512 --batch-size 8 \
    --limit 64 --epochs 1 --no-latency --out "detmem-$n" >/dev/null 2>&1
  printf "%-10s %14.0f\n" "$n" "$(/usr/bin/python3 -c "print($(tail -1 rss.txt) / 1024)")"
done
fi
