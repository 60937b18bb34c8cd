#!/usr/bin/env bash
# An INT8 table of docs/results/int8.md: post-training INT8 (kd quantize) of an experiment's teacher,
# student and distilled student runs (every seed; existing INT8 runs are kept), the quantization-
# aware runs STUDENT-qat and DISTILLED-qat of that experiment beside them, and PyTorch Python's
# eager post-training quantization of the same networks (seed 0) measured right after kd's
# (Fashion-MNIST's reference networks, bench/quant_baseline.py; a detector has no eager twin, and
# PyTorch's graph mode quantizes kd's TorchScript export instead, bench/quant_jit_baseline.py).
# Usage: [SEEDS="0 1 2"] scripts/int8-table.sh [path/to/kd [DIR TEACHER STUDENT DISTILLED]]
#   default: build/kd runs/fmnist teacher student distilled   (after `kd run experiments/fmnist.yaml`)
#   second pair: build/kd runs/scarce teacher10 student10 semi-dist   (experiments/fmnist-scarce.yaml)
#   detection:   build/kd runs/detect d3 d0 d0-distilled              (experiments/detect.yaml)
set -euo pipefail
KD=${1:-build/kd} R=${2:-runs/fmnist} TEACHER=${3:-teacher} STUDENT=${4:-student}
DISTILLED=${5:-distilled}
read -ra SEEDS <<<"${SEEDS:-0 1 2}"
for stage in "$TEACHER" "$STUDENT" "$DISTILLED"; do
  for seed in "${SEEDS[@]}"; do
    run=$R/$stage-s$seed
    [ -f "$run-int8/summary.json" ] || "$KD" quantize "$run"
  done
done
runs=()
for stage in "$TEACHER" "$STUDENT" "$DISTILLED" "$STUDENT-qat" "$DISTILLED-qat"; do
  for seed in "${SEEDS[@]}"; do runs+=("$R/$stage-s$seed"); done
done
for stage in "$TEACHER" "$STUDENT" "$DISTILLED"; do
  for seed in "${SEEDS[@]}"; do runs+=("$R/$stage-s$seed-int8"); done
done
"$KD" compare "${runs[@]}" | tee "$R/int8.md"
# Size on disk and the source runs' fp32 numbers, per INT8 run (seed 0).
for stage in "$TEACHER" "$STUDENT" "$DISTILLED" "$STUDENT-qat" "$DISTILLED-qat"; do
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
for stage in "$TEACHER" "$STUDENT" "$DISTILLED"; do
  arch=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['arch'])" "$R/$stage-s0/model.json")
  "$KD" export "$R/$stage-s0" --out "$WORK/$stage.pt" >/dev/null
  case $arch in
    fmnist-teacher | fmnist-student)
      [ "$stage" = "$DISTILLED" ] && continue
      echo "PyTorch Python, $stage-s0:"
      /usr/bin/python3 "$(dirname "$0")/../bench/quant_baseline.py" "$WORK/$stage.pt" "$arch" 2>/dev/null ;;
    effdet-*)
      # Graph mode on kd's TorchScript export, scored by kd eval.
      echo "PyTorch Python, $stage-s0:"
      data=$(/usr/bin/python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['data']['source'])" "$R/$stage-s0/config.yaml")
      /usr/bin/python3 "$(dirname "$0")/../bench/quant_jit_baseline.py" "$WORK/$stage.pt" "$data" "$WORK/$stage-int8.pt" 2>/dev/null
      "$KD" eval "$WORK/$stage-int8.pt" --data "$data" --json 2>/dev/null |
        /usr/bin/python3 -c "import json,sys; print(json.dumps({'python': 'int8 graph-mode PTQ, kd eval', 'map': json.load(sys.stdin)['metrics']['map']}))" ;;
  esac
done
