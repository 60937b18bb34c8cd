#!/usr/bin/env bash
# Detection through the real CLI on a small generated dataset: make-detection (COCO + VOC),
# train d0 and a teacher, distill, eval (a run, and a COCO results file against COCO ground
# truth), compare, predict; and bad input failing with one clear line.
# Usage: detect_test.sh KD_BINARY WORK_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KD=$1 WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
source "$HERE/lib.sh"

check "make-detection" "$KD" data make-detection --out det --images 200 --test-images 40 --canvas 64 \
  --min-size 14 --max-size 36 --voc --seed 1
ok_if "240 canvases written" "$(ls det/images | wc -l) == 240"
ok_if "VOC annotations for every canvas" "$(ls det/voc/Annotations | wc -l) == 240"
check "data info (COCO)" "$KD" data info --data det
grep -q "det \[test\]: 40 images" out.txt && echo "ok   info sees the test part" || { echo "FAIL info"; cat out.txt; fails=$((fails+1)); }
check "data split by image" "$KD" data split --data det --out split.json --seed 2
ok_if "split is 8:2" "$(json split.json 'len(d["train"])') == 160"

COMMON=(--data det --size 64 --epochs 2 --batch-size 16 --lr 0.05 --threads 2 --no-latency)
check "train d0" "$KD" train --arch effdet-d0 --out d0 "${COMMON[@]}"
check "train a teacher (d1)" "$KD" train --arch effdet-d1 --out d1 "${COMMON[@]}"
check "distill d0 from d1 (channel-wise pyramid loss)" "$KD" distill --teacher d1 --student effdet-d0 --out d0kd -T 2 \
  --kd-levels P3,P4 --kd-feature-loss cwd "${COMMON[@]}"
check "train on VOC annotations" "$KD" train --arch effdet-d0 --data det/voc --size 64 --epochs 1 --no-latency --out d0voc
for run in d0 d1 d0kd; do
  for f in config.yaml metrics.jsonl model.json model.pt summary.json checkpoints/epoch-0002/state.json checkpoints/best.pt; do
    [ -f "$run/$f" ] || { echo "FAIL $run/$f missing"; fails=$((fails + 1)); }
  done
  ok_if "$run: 2 epochs of metrics" "$(wc -l <"$run/metrics.jsonl") == 2"
  ok_if "$run: test mAP is a number in [0, 1]" "0 <= $(json $run/summary.json 'd["test"]["map"]') <= 1"
done
ok_if "distilled run records its pyramid loss" "'$(json d0kd/summary.json 'd["strategy"]["kd_feature_loss"]')'.startswith('cwd:')"
ok_if "distilled run records its teacher at the student's size" \
  "'$(json d0kd/summary.json 'd["teacher_name"]')' == 'd1' and $(json d0kd/summary.json '"map" in d["teacher_at_student_size"]')"

check "eval a detector run, saving COCO results" "$KD" eval d0kd --json --save-results d0kd-results.json
# The saved detections, scored as an outside tool's would be, give the run's own test mAP.
check "eval a COCO results file" "$KD" eval --gt det/test.json --results d0kd-results.json --json
ok_if "results file scores as the run" \
  "abs($(json out.txt 'd["metrics"]["map"]') - $(json d0kd/summary.json 'd["test"]["map"]')) < 1e-9"
# Scoring needs the two JSON files only, as pycocotools does: not the images.
mkdir -p gt_only && cp det/test.json gt_only/
check "eval a COCO results file without the images beside it" "$KD" eval --gt gt_only/test.json \
  --results d0kd-results.json --json
ok_if "... the same score" \
  "abs($(json out.txt 'd["metrics"]["map"]') - $(json d0kd/summary.json 'd["test"]["map"]')) < 1e-9"
check "compare detectors" "$KD" compare d1 d0 d0kd
grep -q "mAP" out.txt && echo "ok   compare shows mAP" || { echo "FAIL compare"; cat out.txt; fails=$((fails+1)); }
check "predict" "$KD" predict d0kd det/images/test_000001.png det/images/test_000002.png --score 0 --out-dir pred
ok_if "one JSON line per image, boxes drawn" \
  "$(wc -l <out.txt) == 2 and $(ls pred/*.boxes.png | wc -l) == 2"
ok_if "predictions have class, score, bbox" \
  "$(head -1 out.txt | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin)["detections"]; print(len(d) > 0 and set(d[0]) == {"class","score","bbox"})')"
# INT8 detectors: post-training and quantization-aware (with the teacher's class and box terms),
# every op on an INT8 kernel (the BiFPN's weighted sums as quantized scalar products and adds).
check "quantize a detector" "$KD" quantize d0kd --calibration 64 --no-latency
check "distill a detector with --qat int8" "$KD" distill --teacher d1 --student effdet-d0 --out d0qat \
  --qat int8 --qat-epochs 2 "${COMMON[@]}"
for run in d0kd-int8 d0qat; do
  ok_if "$run: every op INT8 (convolutions, scalar products, adds), mAP in [0, 1]" "(lambda s, m: m['precision'] == 'int8' and \
    s['ops']['int8'].get('quantized::conv2d', 0) + s['ops']['int8'].get('quantized::conv2d_relu', 0) > 0 and \
    s['ops']['int8'].get('quantized::mul_scalar', 0) > 0 and s['ops']['int8'].get('quantized::add', 0) > 0 and \
    s['ops']['fp32'] == {} and 0 <= s['test']['map'] <= 1)(*(__import__('json').load(open(f'$run/{f}')) for f in ('summary.json', 'model.json')))"
done
ok_if "d0qat: fp32 model kept and scored, QAT records" "(lambda s: 'map' in s['fp32_test'] and s['qat']['epochs'] == 2 and \
  __import__('os').path.exists('d0qat/fp32/model.pt') and __import__('os').path.exists('d0qat/qat-frozen/metrics.jsonl'))(__import__('json').load(open('d0qat/summary.json')))"
check "eval the INT8 detector" "$KD" eval d0qat --json
check "predict with the INT8 detector" "$KD" predict d0qat det/images/test_000001.png --score 0 --out-dir pred8
check "models lists the detector family" "$KD" models
ok_if "d0..d3 listed" "$(grep -c 'effdet-d[0-3]' out.txt) == 4"

# Bad input: one line, the file and the annotation named.
/usr/bin/python3 - <<'PY'
import json
d = json.load(open("det/train.json"))
del d["annotations"][3]["bbox"]
json.dump(d, open("bad.json", "w"))
d = json.load(open("det/train.json"))
d["annotations"][0]["category_id"] = 99
json.dump(d, open("badcat.json", "w"))
PY
cp -r det/images images
expect_error 1 "annotation id 4: missing 'bbox'" "$KD" train --arch effdet-d0 --data bad.json --out bad1 --epochs 1
expect_error 1 "unknown category_id 99" "$KD" train --arch effdet-d0 --data badcat.json --out bad2 --epochs 1
[ -f bad1/error.txt ] && [ ! -f bad1/summary.json ] && echo "ok   failed run is visibly incomplete" || { echo "FAIL bad1 state"; fails=$((fails+1)); }
expect_error 1 "/etc/hostname: not a PNG or JPEG image" "$KD" predict d0 /etc/hostname
expect_error 2 "--kd-feature-loss 'at': expected fitnet, pkd or cwd" "$KD" distill --teacher d1 --student effdet-d0 \
  --kd-feature-loss at --out bad5 "${COMMON[@]}"
expect_error 2 "detection runs support modes train and offline" "$KD" distill --mode semi --teacher d1 --student effdet-d0 --labeled-fraction 0.5 --out bad3 "${COMMON[@]}"
expect_error 1 "teacher d0 detects" "$KD" distill --teacher d0 --student effdet-d0 --data det/voc --size 64 --out bad4 --epochs 1
mkdir -p not-a-dataset  # a folder with neither COCO nor VOC files (not /tmp: the work folder may lie inside it)
expect_error 1 "not a detection dataset" "$KD" train --arch effdet-d0 --data not-a-dataset --out bad5 --epochs 1
expect_error 2 "--gt and --results go together" "$KD" eval --gt det/test.json

finish
