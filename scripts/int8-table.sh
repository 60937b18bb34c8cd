#!/usr/bin/env bash
# The INT8 table of the README: post-training INT8 (kd quantize) of the Fashion-MNIST teacher,
# student and distilled student runs of experiments/fmnist.yaml (every seed; existing INT8 runs
# are kept), the quantization-aware runs of that experiment beside them, and PyTorch Python's
# eager post-training quantization of the same networks (seed 0) measured right after kd's.
# Usage: scripts/int8-table.sh [path/to/kd]   (after `kd run experiments/fmnist.yaml`)
set -euo pipefail
KD=${1:-build/kd}
R=runs/fmnist
for stage in teacher student distilled; do
  for seed in 0 1 2; do
    [ -f "$R/$stage-s$seed-int8/summary.json" ] || "$KD" quantize "$R/$stage-s$seed"
  done
done
"$KD" compare $R/{teacher,student,distilled,student-qat,distilled-qat}-s{0,1,2} \
  $R/{teacher,student,distilled}-s{0,1,2}-int8 | tee $R/int8.md
# Size on disk and the source runs' fp32 numbers, per INT8 run (seed 0).
for stage in teacher student distilled student-qat distilled-qat; do
  run=$R/$stage-s0; [ -d "$R/$stage-s0-int8" ] && run=$R/$stage-s0-int8
  /usr/bin/python3 - "$run" <<'PY'
import json, os, sys
run = sys.argv[1]
s = json.load(open(f"{run}/summary.json"))
fp32 = f"{run}/fp32/model.pt" if os.path.exists(f"{run}/fp32/model.pt") else s.get("source", run) + "/model.pt"
print(f"{run}: model.pt {os.path.getsize(run + '/model.pt') / 1e3:.0f} kB (fp32 {os.path.getsize(fp32) / 1e3:.0f} kB)")
PY
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for stage in teacher student; do
  arch=$([ $stage = teacher ] && echo fmnist-teacher || echo fmnist-student)
  "$KD" export "$R/$stage-s0" --out "$WORK/$stage.pt" >/dev/null
  echo "PyTorch Python, $stage-s0:"
  /usr/bin/python3 "$(dirname "$0")/../bench/quant_baseline.py" "$WORK/$stage.pt" "$arch" 2>/dev/null
done
