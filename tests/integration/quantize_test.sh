#!/usr/bin/env bash
# kd quantize on a small Fashion-MNIST run: the INT8 run directory, its accuracy against fp32,
# INT8 kernels really running, and the INT8 model everywhere a model goes (eval, compare, serve,
# predict, export loaded by PyTorch Python with the same outputs); bad input fails with one line.
# Usage: quantize_test.sh KD_BINARY FIXTURE_DIR WORK_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KD=$1 FIX=$2 WORK=$3
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export KD_CACHE_DIR=$WORK/cache
source "$HERE/lib.sh"

COMMON=(--limit 4000 --epochs 2 --warmup 0 --threads 2 --no-latency)
check "train a teacher" "$KD" train --arch fmnist-teacher --arch-opt width=16 --out teacher "${COMMON[@]}"
check "quantize it" "$KD" quantize teacher --calibration 256 --no-latency
for f in config.yaml model.json model.pt summary.json; do
  [ -f "teacher-int8/$f" ] && echo "ok   teacher-int8/$f" || { echo "FAIL teacher-int8/$f missing"; fails=$((fails + 1)); }
done
ok_if "model.json: int8, onednn, minmax, BN folded" "(lambda d: d['precision'] == 'int8' and \
  d['kind'] == 'torchscript' and d['quantization']['engine'] == 'onednn' and \
  d['quantization']['observer'] == 'minmax' and d['quantization']['batch_norms_folded'] == 3)(__import__('json').load(open('teacher-int8/model.json')))"
# INT8 kernels, not dequantize-compute-quantize: every convolution and linear layer is a quantized
# kernel, and no compute op ran on float tensors.
ok_if "ops: quantized conv and linear kernels, nothing in fp32" "(lambda s: \
  s['ops']['int8'].get('quantized::conv2d_relu', 0) == 3 and \
  s['ops']['int8'].get('quantized::linear_relu', 0) + s['ops']['int8'].get('quantized::linear', 0) == 2 \
  and s['ops']['fp32'] == {})(__import__('json').load(open('teacher-int8/summary.json')))"
ok_if "INT8 top-1 within 1 point of fp32" "(lambda s: abs(s['test']['top1'] - s['source_test']['top1']) < 0.01)(__import__('json').load(open('teacher-int8/summary.json')))"
ok_if "model.pt smaller than fp32's" "(lambda s: s['model_bytes'] < 0.5 * s['source_model_bytes'])(__import__('json').load(open('teacher-int8/summary.json')))"

check "eval the fp32 run" "$KD" eval teacher --json
mv out.txt eval-fp32.json
check "eval the INT8 run" "$KD" eval teacher-int8 --json
ok_if "eval on the whole test set: INT8 within 1 point of fp32" "(lambda a, b: a['metrics']['samples'] == 10000 and \
  abs(a['metrics']['top1'] - b['metrics']['top1']) < 0.01)(*(__import__('json').load(open(f)) for f in ('out.txt', 'eval-fp32.json')))"
check "compare fp32 and INT8" "$KD" compare teacher teacher-int8
grep -q "int8" out.txt && echo "ok   compare shows the precision" || { echo "FAIL compare precision"; cat out.txt; fails=$((fails + 1)); }

# PyTorch Python loads the exported INT8 module and computes what kd serve answers.
check "export the INT8 run" "$KD" export teacher-int8 --out t8.pt
if has_part serve; then
"$KD" serve "t8=teacher-int8" --port 0 >serve.json 2>serve.log &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s serve.json ] && break; sleep 0.1; done
check "kd serve answers with the INT8 model; PyTorch Python gets the same logits" /usr/bin/python3 - <<'PY'
import json, urllib.request
import numpy as np, torch
info = json.load(open("serve.json"))
assert info["models"][0]["optimized"] is False, info
desc = json.load(open("t8.pt.json"))
assert desc["precision"] == "int8", desc
torch.backends.quantized.engine = desc["quantization"]["engine"]
x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                               "data": x.ravel().tolist()}], "outputs": [{"name": "logits"}]})
req = urllib.request.Request(info["listening"] + "/v2/models/t8/infer", body.encode(),
                             {"Content-Type": "application/json"})
kd = np.array(json.load(urllib.request.urlopen(req))["outputs"][0]["data"], np.float32).reshape(4, -1)
m = torch.jit.load("t8.pt")
mean, std = np.array(desc["mean"], np.float32), np.array(desc["std"], np.float32)
with torch.no_grad():
    py = m(torch.from_numpy((x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1))).numpy()
diff = np.abs(py - kd).max()
print("max |python - kd serve|", diff)
assert diff < 1e-4, diff
PY
cat out.txt
kill $SERVE; wait $SERVE 2>/dev/null || true
trap - EXIT
else
  expect_error 2 "built without serving (KD_WITH_SERVE=OFF)" "$KD" serve "t8=teacher-int8" --port 0
fi

check "quantize with the percentile observer" "$KD" quantize teacher --out teacher-pct --calibration 256 --observer percentile --no-latency
ok_if "percentile: within 1 point of fp32" "(lambda s: s['quantization']['observer'] == 'percentile' and abs(s['test']['top1'] - s['source_test']['top1']) < 0.01)(__import__('json').load(open('teacher-pct/summary.json')))"

# Quantization-aware training: the run's epochs in fp32, then fake-quantized epochs under the same
# objective (the teacher's too), then the INT8 model; the fp32 model stays in fp32/.
check "kd distill --qat int8" "$KD" distill --teacher teacher --student fmnist-student --out qat-distilled \
  --lr 0.05 --qat int8 --qat-epochs 2 "${COMMON[@]}"
check "kd train --qat int8" "$KD" train --arch fmnist-student --out qat-student --lr 0.1 --qat int8 --qat-epochs 2 "${COMMON[@]}"
for run in qat-distilled qat-student; do
  ok_if "$run: an INT8 model on quantized kernels, its fp32 model kept, accuracy near fp32" "(lambda s, m: \
    s['precision'] == 'int8' and m['precision'] == 'int8' and s['ops']['fp32'] == {} and \
    s['ops']['int8'].get('quantized::conv2d_relu', 0) == 2 and s['qat']['epochs'] == 2 and \
    abs(s['test']['top1'] - s['fp32_test']['top1']) < 0.05 and \
    __import__('os').path.exists('$run/fp32/model.pt'))(*(__import__('json').load(open(f'$run/{f}')) for f in ('summary.json', 'model.json')))"
done
expect_error 2 "--qat: the student" "$KD" train --arch "$WORK/t8.pt" --qat int8 --out bad1 "${COMMON[@]}"
expect_error 2 "feature losses and --hint cannot reach it" "$KD" distill --teacher teacher --out bad2 \
  --qat int8 --loss at:teacher=8,student=3 "${COMMON[@]}"
expect_error 2 "--qat: int4 not in" "$KD" train --qat int4 --out bad3 "${COMMON[@]}"

# An op with no INT8 kernel (SiLU, in a TorchScript student from PyTorch) is named, and kept in
# fp32 only when --allow-fp32-layers says so.
check "train a TorchScript student with SiLU" "$KD" train --arch "$FIX/student_silu_ts.pt" --out silu \
  --limit 1000 --epochs 1 --warmup 0 --threads 2 --no-latency
expect_error 1 "have no INT8 kernel on the onednn engine and would run in fp32 between a dequantize and a quantize: aten::max_pool2d (x2), aten::silu (x2)" \
  "$KD" quantize silu --calibration 64 --no-latency
check "quantize it keeping SiLU in fp32" "$KD" quantize silu --allow-fp32-layers --calibration 64 --no-latency
ok_if "silu-int8: INT8 convolutions, SiLU named among the fp32 ops" "(lambda d: \
  d['quantization']['fp32_ops'].get('aten::silu', 0) == 2)(__import__('json').load(open('silu-int8/model.json')))"

expect_error 1 "teacher-int8 already exists: give another --out" "$KD" quantize teacher
expect_error 1 "is already int8" "$KD" quantize teacher-int8 --out again
expect_error 1 "no summary.json" "$KD" quantize nothing-here
expect_error 2 "--observer: mean not in" "$KD" quantize teacher --out x --observer mean
mkdir -p mine.partial && echo keep >mine.partial/notes.txt
expect_error 1 "holds 'notes.txt', which kd quantize did not write" "$KD" quantize teacher --out mine --no-latency
[ "$(cat mine.partial/notes.txt)" = keep ] && [ ! -e mine ] && echo "ok   a user's OUT.partial is left as it was" || { echo "FAIL mine.partial"; fails=$((fails + 1)); }
[ ! -e again ] && [ ! -e x ] && [ ! -e bad1 ] && [ ! -e bad2 ] && echo "ok   refused runs leave nothing behind" || { echo "FAIL leftovers"; fails=$((fails + 1)); }
finish
