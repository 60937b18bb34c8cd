#!/usr/bin/env bash
# The real CLI on a small slice of Fashion-MNIST: train a teacher and a student, distill, eval,
# compare, run an experiment file, and check that bad input fails with one clear line.
# Usage: cli_test.sh KD_BINARY FIXTURE_DIR WORK_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KD=$1 FIX=$2 WORK=$3
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export KD_CACHE_DIR=$WORK/cache
source "$HERE/lib.sh"

COMMON=(--limit 3000 --epochs 2 --warmup 0 --threads 2 --no-latency)
check "train teacher" "$KD" train --arch fmnist-teacher --arch-opt width=16 --out teacher "${COMMON[@]}"
check "train student" "$KD" train --arch fmnist-student --out student --lr 0.1 "${COMMON[@]}"
# The T^2-scaled soft-target gradient is up to T times a cross-entropy gradient: without warm-up
# the distilled runs take a smaller learning rate than the plain student.
check "distill (augmented, teacher per batch)" "$KD" distill --teacher teacher --student fmnist-student \
  --out distilled --lr 0.02 -T 4 --alpha 0.9 "${COMMON[@]}"
check "distill (no augmentation: teacher cache miss)" "$KD" distill --teacher teacher --out cached1 \
  --no-augment --lr 0.02 "${COMMON[@]}"
check "distill (teacher cache hit)" "$KD" distill --teacher teacher --out cached2 --no-augment --lr 0.02 "${COMMON[@]}"
check "distill from a TorchScript teacher" "$KD" distill --teacher "$FIX/student_ts.pt" --out from_ts \
  --no-augment "${COMMON[@]}"
check "train a TorchScript student" "$KD" train --arch "$FIX/student_ts.pt" --out ts_student "${COMMON[@]}"
expect_error 2 "student_ts.pt is a model file with no run configuration to take its data from: give --data" \
  "$KD" eval "$FIX/student_ts.pt"
check "eval a TorchScript file on data" "$KD" eval "$FIX/student_ts.pt" --data fashion-mnist --json
# A TorchScript teacher is a teacher row of kd compare and kd report: scored as the run distilled
# from it measured it on its test images (teacher_targets_top1), so the gap is computed.
check "compare with a TorchScript teacher" "$KD" compare "$FIX/student_ts.pt" student from_ts --json
ok_if "the .pt leads as the teacher, with from_ts's measure of it; the gap closed is computed" \
  "(lambda c, d: c['rows'][0]['name'] == 'student_ts' and c['rows'][0]['arch'] == 'torchscript' and
    abs(c['rows'][0]['top1']['mean'] - d['teacher_targets_top1']) < 1e-9 and 'from_ts' in c['gap_closed'])(
    __import__('json').load(open('out.txt')), __import__('json').load(open('from_ts/summary.json')))"
expect_error 1 "student_ts.pt: a TorchScript teacher has no results of its own" \
  "$KD" compare "$FIX/student_ts.pt" student
check "report with a TorchScript teacher" "$KD" report "$FIX/student_ts.pt" student from_ts -o ts_report.html
ok_if "the report's .pt row is the teacher" \
  "'\"role\":\"teacher\"' in open('ts_report.html').read() and '\"name\":\"student_ts\"' in open('ts_report.html').read()"

for run in teacher student distilled cached1 cached2 from_ts ts_student; do
  for f in config.yaml metrics.jsonl model.json model.pt summary.json checkpoints/epoch-0002/state.json checkpoints/best.pt; do
    [ -f "$run/$f" ] || { echo "FAIL $run/$f missing"; fails=$((fails + 1)); }
  done
  [ "$(wc -l <"$run/metrics.jsonl")" -eq 2 ] || { echo "FAIL $run: expected 2 epochs of metrics"; fails=$((fails + 1)); }
  top1=$(json "$run/summary.json" 'd["test"]["top1"]')
  # Two epochs on 2,400 images: far above chance (10%), below perfect.
  /usr/bin/python3 -c "import sys; t=float(sys.argv[1]); sys.exit(0 if 0.4 < t < 1.0 else 1)" "$top1" \
    && echo "ok   $run test top-1 $top1" || { echo "FAIL $run top-1 $top1"; fails=$((fails + 1)); }
done
[ "$(json cached1/summary.json 'd["strategy"]["teacher_cache"]')" = "miss (computed)" ] && echo "ok   cache miss" || { echo "FAIL cache miss"; fails=$((fails+1)); }
[ "$(json cached2/summary.json 'd["strategy"]["teacher_cache"]')" = "hit" ] && echo "ok   cache hit" || { echo "FAIL cache hit"; fails=$((fails+1)); }
[ "$(json distilled/summary.json 'd["params"]')" = 9098 ] && echo "ok   distilled params" || { echo "FAIL params"; fails=$((fails+1)); }

check "eval a run" "$KD" eval distilled --json
[ "$(json out.txt 'd["metrics"]["samples"]')" = 10000 ] && echo "ok   eval on the full test set" || { echo "FAIL eval samples"; fails=$((fails+1)); }
check "compare" "$KD" compare teacher student distilled
grep -q "closes" out.txt && echo "ok   compare reports the gap closed" || { echo "FAIL compare"; cat out.txt; fails=$((fails+1)); }
check "compare on the eval split" "$KD" compare --on eval teacher student distilled
grep -q "best eval top-1 %" out.txt && grep -q "closes" out.txt && echo "ok   compare --on eval" || { echo "FAIL compare --on eval"; cat out.txt; fails=$((fails+1)); }
expect_error 2 "--on: eval-ish not in" "$KD" compare --on eval-ish teacher student
check "data split" "$KD" data split --data fashion-mnist --out split.json --seed 3
check "train on a split manifest" "$KD" train --arch fmnist-student --split split.json --out on_split "${COMMON[@]}"
check "models" "$KD" models
check "data info" "$KD" data info --data fashion-mnist

cat > exp.yaml <<YAML
out: $WORK/exp
seeds: [0]
defaults: {data: {limit: 2000}, train: {epochs: 1}, measure_latency: false}
stages:
  - {name: teacher, arch: fmnist-teacher, arch_options: [width=8]}
  - {name: student, arch: fmnist-student}
  - {name: distilled, mode: offline, arch: fmnist-student, distill: {teacher: teacher}}
YAML
check "kd run experiment" "$KD" run exp.yaml
[ -f exp/compare.md ] && [ -f exp/distilled-s0/summary.json ] && echo "ok   experiment outputs" || { echo "FAIL experiment outputs"; fails=$((fails+1)); }
rm -rf exp/student-s0
check "kd run --stages: one stage again, the others kept in the table" "$KD" run exp.yaml --stages student
ok_if "--stages ran only the student" "__import__('os').path.exists('exp/student-s0/summary.json') and \
  'complete, kept' not in open('err.txt').read() and open('exp/compare.md').read().count('| distilled') == 1"
expect_error 2 "--stages: the experiment has no stage 'nope' (stages: distilled, student, teacher)" "$KD" run exp.yaml --stages nope
check "kd run --plan" "$KD" run exp.yaml --plan
ok_if "--plan: every stage complete is kept" "open('out.txt').read().count('keep ') == 3"
ok_if "--plan says what each run trains" "'train fmnist-teacher (width=8), 1 epoch on fashion-mnist' in open('out.txt').read() \
  and 'offline fmnist-student from $WORK/exp/teacher-s0, 1 epoch on' in open('out.txt').read()"
rm -rf exp/distilled-s0/summary.json
check "kd run --plan, one stage incomplete" "$KD" run exp.yaml --plan
ok_if "--plan names the incomplete stage and writes nothing" "'resume $WORK/exp/distilled-s0  (interrupted, from its last checkpoint)' in open('out.txt').read() \
  and not __import__('os').path.exists('exp/distilled-s0/summary.json')"
check "kd run after --plan resumes that stage" "$KD" run exp.yaml
# Every experiment the repository ships parses and validates, from a folder where none has run:
# a typo in a key or a value fails here, not an hour into `make reproduce`.
mkdir -p shipped && cd shipped
for f in "$HERE"/../../experiments/*.yaml; do
  check "kd run --plan $(basename "$f")" "$KD" run --plan "$f"
done
cd "$WORK"
ok_if "--plan ran nothing" "__import__('os').listdir('shipped') == []"

# A 4-class IDX set and a PNG image folder, written here.
/usr/bin/python3 - <<'PY'
import os, struct, zlib, random
random.seed(0)
os.makedirs("fourclass", exist_ok=True)
n = 200
with open("fourclass/train-images-idx3-ubyte", "wb") as f:
    f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + bytes(random.randrange(256) for _ in range(n * 784)))
with open("fourclass/train-labels-idx1-ubyte", "wb") as f:
    f.write(struct.pack(">BBBBI", 0, 0, 8, 1, n) + bytes(i % 4 for i in range(n)))
def png(path, w, h, rows):
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    raw = b"".join(b"\0" + bytes(r) for r in rows)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for c, name in enumerate(["dark", "mid", "bright"]):
    os.makedirs(f"folder/{name}", exist_ok=True)
    for i in range(12):
        png(f"folder/{name}/{i}.png", 20, 20, [[min(255, 40 + 90 * c + random.randrange(30))] * 20 for _ in range(20)])
os.makedirs("folder/empty_class_is_fine", exist_ok=True)
open("folder/bright/broken.png", "wb").write(b"not a png")
os.makedirs("unlabeled/batch1", exist_ok=True)
for i in range(30):
    png(f"unlabeled/batch1/{i}.png", 28, 28, [[random.randrange(256) for _ in range(28)] for _ in range(28)])
os.makedirs("no_images", exist_ok=True)
open("no_images/readme.txt", "w").write("no images here")
PY
expect_error 1 "broken.png: not a PNG or JPEG image" "$KD" train --data folder --size 28 --channels 1 --strict --out bad0 "${COMMON[@]}"
rm folder/bright/broken.png; rmdir folder/empty_class_is_fine
check "train on a PNG image folder" "$KD" train --data folder --size 28 --channels 1 --arch fmnist-student \
  --out from_folder --epochs 3 --lr 0.1 --no-latency
[ "$(json from_folder/model.json 'd["class_names"]')" = "['bright', 'dark', 'mid']" ] && echo "ok   folder classes" || { echo "FAIL folder classes"; fails=$((fails+1)); }

# Every distillation mode on the slice (issue 3).
KDC=(--no-augment --lr 0.02 "${COMMON[@]}")
check "semi: 10% labels, soft targets, 2-view ensemble" "$KD" distill --mode semi --teacher teacher \
  --labeled-fraction 0.1 --ensemble 2 --out semi "${KDC[@]}"
check "semi: hard pseudo-labels above a threshold" "$KD" distill --mode semi --teacher teacher \
  --labeled-fraction 0.1 --targets hard --threshold 0.5 --out semi_hard "${KDC[@]}"
check "semi: an ensemble of two teachers" "$KD" distill --mode semi --teacher teacher --teacher student \
  --labeled-fraction 0.1 --out semi_ens "${KDC[@]}"
/usr/bin/python3 -c "import json, sys; s = json.load(open('semi_ens/summary.json'));
e = s['strategy']['ensemble_of_teachers']; assert e['teachers'] == ['teacher', 'student'], e
assert s['teachers'] == ['teacher', 'student'] and 'teacher' not in s, s.keys()" \
  || { echo "FAIL: semi_ens/summary.json does not name the ensemble"; exit 1; }
expect_error 2 "--hint needs a single teacher" "$KD" distill --teacher teacher --teacher student \
  --hint 7:5 --out bad_ens "${KDC[@]}"
check "semi: augmented student, teacher on the clean images" "$KD" distill --mode semi --teacher teacher \
  --labeled-fraction 0.1 --teacher-view clean --out semi_clean --lr 0.02 "${COMMON[@]}"
/usr/bin/python3 -c "import json; s = json.load(open('semi_clean/summary.json'))['strategy']
assert s['teacher_view'] == 'clean images, each labeled once', s" || { echo "FAIL: semi_clean/summary.json does not say the teacher saw clean images"; exit 1; }
expect_error 2 "--teacher-view 'sideways': expected augmented or clean" "$KD" distill --teacher teacher \
  --teacher-view sideways --out bad_view "${COMMON[@]}"
expect_error 2 "--teacher-view clean and --mixup/--cutmix: a mixed image has no clean view" "$KD" distill \
  --teacher teacher --teacher-view clean --mixup 0.2 --out bad_view "${COMMON[@]}"
check "semi: an unlabeled image folder" "$KD" distill --mode semi --teacher teacher --unlabeled unlabeled \
  --out semi_folder "${KDC[@]}"
check "self: born-again generations" "$KD" distill --mode self --generations 2 --out ban "${KDC[@]}"
check "self: snapshot teaches the last epoch" "$KD" distill --mode self --teach-last 1 --out snap "${KDC[@]}"
check "teacher for classes 0-6" "$KD" train --arch fmnist-student --classes 0-6 --out t07 --lr 0.1 "${COMMON[@]}"
check "teacher for classes 3-9, by name and range" "$KD" train --arch fmnist-student \
  --classes Dress,Coat,Sandal,Shirt,7-9 --out t39 --lr 0.1 "${COMMON[@]}"
check "merge two teachers with shared classes" "$KD" distill --mode merge --teacher t07 --teacher t39 \
  --out merged "${KDC[@]}"
# Disjoint halves with "not mine" teachers (--others: the other half's images as one class).
check "teacher for classes 0-4 and the others" "$KD" train --arch fmnist-student --classes 0-4 --others \
  --out t04o --lr 0.1 "${COMMON[@]}"
check "teacher for classes 5-9 and the others" "$KD" train --arch fmnist-student --classes 5-9 --others \
  --out t59o --lr 0.1 "${COMMON[@]}"
[ "$(json t04o/model.json 'd["class_names"][-1]')" = "(others)" ] && echo "ok   t04o: the sixth class is (others)" || { echo "FAIL t04o classes"; fails=$((fails+1)); }
check "merge the two" "$KD" distill --mode merge --teacher t04o --teacher t59o --out merged_others "${KDC[@]}"
expect_error 2 "--others goes with --classes" "$KD" train --arch fmnist-student --others --out bad_others "${COMMON[@]}"
# Two datasets pooled (the article's merge): Fashion-MNIST and a small IDX set of three made-up
# "digit" classes (a bright bar at one of three heights), one teacher each, one 13-class student.
/usr/bin/python3 - <<'PY'
import gzip, os, struct
import numpy as np
rng = np.random.default_rng(0)
os.makedirs("digits", exist_ok=True)
for part, n in (("train", 300), ("t10k", 60)):
    y = np.arange(n) % 3
    x = (rng.random((n, 28, 28)) * 40).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 4 + 8 * c:10 + 8 * c, 4:24] = 230
    for name, a in ((f"{part}-images-idx3-ubyte.gz", x), (f"{part}-labels-idx1-ubyte.gz", y.astype(np.uint8))):
        with gzip.open(f"digits/{name}", "wb") as f:
            f.write(struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())
open("digits/classes.txt", "w").write("digit 0\ndigit 1\ndigit 2\n")
PY
check "teacher of the made-up digits" "$KD" train --arch fmnist-student --data digits --out tdig --lr 0.1 \
  --epochs 3 --warmup 0 --threads 2 --no-latency
check "merge by source on fashion-mnist+digits" "$KD" distill --mode merge --teacher teacher --teacher tdig \
  --data fashion-mnist+digits --merge-by-source --out merged_src "${KDC[@]}"
check "eval the 13-class student on the digits alone" "$KD" eval merged_src --data digits --json
ok_if "... scored on the digits' 60 test images, matched by name" "(lambda d: d['metrics']['samples'] == 60 and \
  len(d['metrics']['per_class']) == 13)(__import__('json').load(open('out.txt')))"
check "hint with soft targets (1x1-conv adapter)" "$KD" distill --teacher teacher --hint 7:5 --out hinted "${KDC[@]}"
check "hint alone, mse, teacher per batch" "$KD" distill --teacher teacher --alpha 0 --hint 7:5:0.5 \
  --hint-loss mse --out hinted_alone --lr 0.02 "${COMMON[@]}"
check "hint from a TorchScript teacher's submodule" "$KD" distill --teacher "$FIX/student_ts.pt" \
  --hint features.5:5 --out ts_hint "${KDC[@]}"
# Combinations that learn in 2 epochs on this slice (dkd + at + rkd together collapse to one class
# here: a finding of the combination's scale, not of the plumbing).
check "registry losses: dkd, rkd" "$KD" distill --teacher teacher --loss dkd:beta=2,warmup=2 \
  --loss rkd:teacher=11,student=5 --out zoo1 "${KDC[@]}"
check "registry losses: at, pkd alone with CE; teacher per batch" "$KD" distill --teacher teacher --alpha 0 \
  --loss at:teacher=7,student=5 --loss pkd:teacher=7,student=5 --out zoo2 --lr 0.02 "${COMMON[@]}"
check "registry losses: kd with standardization, mlkd; semi" "$KD" distill --mode semi --teacher teacher \
  --labeled-fraction 0.1 --loss kd:std=1,T=2,weight=9 --loss mlkd --ce-weight 0.1 --out zoo3 "${KDC[@]}"
check "registry losses: dist + standardization, sp, pkt" "$KD" distill --teacher teacher --loss dist:std=1 \
  --loss sp:teacher=11,student=7 --loss pkt:teacher=11,student=7 --ce-weight 0.5 --out zoo4 "${KDC[@]}"
check "registry losses: crd (memory bank) + kd" "$KD" distill --teacher teacher --loss kd \
  --loss crd:teacher=11,student=6,negatives=256 --out zoo5 "${KDC[@]}"
# OpenBLAS's Prescott fallback on a CPU it does not recognise: kd asks for the kernels the CPU has.
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  check "train with OPENBLAS_CORETYPE unset" env -u OPENBLAS_CORETYPE "$KD" train --arch fmnist-student --limit 500 \
    --epochs 1 --out blas --no-latency
  ok_if "OpenBLAS runs AVX2 or AVX-512 kernels, not its Prescott fallback" \
    "'blas=OpenBLAS' in open('err.txt').read() and 'Prescott' not in open('err.txt').read()"
fi
check "kd losses" "$KD" losses
grep -q "^dkd  *logit .*(needs labels)" out.txt && grep -q "Zhao et al. 2022" out.txt && echo "ok   kd losses lists dkd" \
  || { echo "FAIL kd losses"; cat out.txt; fails=$((fails+1)); }
check "layers of a run, with shapes" "$KD" models --layers teacher
grep -q "^7  *MaxPool2d  *\[32, 7, 7\]" out.txt && echo "ok   layer shapes" || { echo "FAIL layer shapes"; cat out.txt; fails=$((fails+1)); }
for run in semi semi_hard semi_folder ban snap merged hinted hinted_alone ts_hint zoo1 zoo2 zoo3 zoo4 zoo5; do
  [ -f "$run/summary.json" ] && [ -f "$run/model.pt" ] || { echo "FAIL $run incomplete"; fails=$((fails + 1)); continue; }
  top1=$(json "$run/summary.json" 'd["test"]["top1"]')
  /usr/bin/python3 -c "import sys; t=float(sys.argv[1]); sys.exit(0 if 0.3 < t < 1.0 else 1)" "$top1" \
    && echo "ok   $run test top-1 $top1" || { echo "FAIL $run top-1 $top1"; fails=$((fails + 1)); }
done
expect_json() {  # expect_json RUN EXPRESSION VALUE
  local v; v=$(json "$1/summary.json" "$2")
  [ "$v" = "$3" ] && echo "ok   $1: $2 = $3" || { echo "FAIL $1: $2 = $v, expected $3"; fails=$((fails+1)); }
}
expect_json semi 'd["train_unlabeled"]' 2700
expect_json semi 'd["strategy"]["ensemble"]' 2
expect_json semi_folder 'd["train_unlabeled"]' 30
expect_json semi_hard '0 <= d["strategy"]["pseudo_label_coverage"] <= 1' True
expect_json ban 'len(d["generations"])' 2
expect_json ban 'len(open("ban/metrics.jsonl").readlines())' 4
expect_json snap 'd["strategy"]["snapshot_epoch"]' 2
expect_json merged 'd["train_unlabeled"]' 3000
expect_json merged 'round(sum(d["strategy"]["merge"]["pool_class_marginals"]), 6)' 1.0
expect_json merged 'len(d["test"]["per_class"])' 10
expect_json merged_src 'len(d["test"]["per_class"])' 13
expect_json merged_others 'len(d["test"]["per_class"])' 10
expect_json merged_src 'd["strategy"]["merge"]["rule"].startswith("by source")' True
expect_json hinted 'd["strategy"]["feature_losses"][0]["adapter"]' conv1x1
expect_json hinted_alone 'd["strategy"]["teacher_features"] if "teacher_features" in d["strategy"] else "per batch"' "per batch"
expect_json zoo1 '[f["adapter"] for f in d["strategy"]["feature_losses"]]' "['none']"
expect_json zoo1 'd["strategy"]["losses"][0]' "dkd:T=4,alpha=1,beta=2,std=0,warmup=2,weight=1"
expect_json zoo1 '"temperature" in d["strategy"]' False
expect_json zoo2 '[f["adapter"] for f in d["strategy"]["feature_losses"]]' "['none', 'conv1x1']"
expect_json zoo2 'd["strategy"]["teacher_cache"]' "off (augmentation on)"
expect_json zoo4 'd["strategy"]["ce_weight"]' 0.5
expect_json zoo4 'len(d["strategy"]["feature_losses"])' 2
expect_json zoo3 'd["train_unlabeled"]' 2700
expect_json zoo5 'd["strategy"]["feature_losses"][0]["adapter"].endswith("memory bank of 3000 x 2 rows")' True
ok_if "zoo5: the checkpoint holds CRD's memory bank" "__import__('os').path.getsize(sorted(__import__('glob').glob('zoo5/checkpoints/epoch-*'))[-1] + '/crd_memory0.pt') >= 3000 * 128 * 8"
expect_json t39 'len(d["test"]["per_class"])' 7

# Bad input for the modes.
expect_error 1 "teacher from_folder: class 'bright' matches no class of the data" "$KD" distill \
  --teacher from_folder --out bad10 "${KDC[@]}"
expect_error 1 "knows 7 of the data's 10 classes; teachers of part of the classes are combined with --mode merge" \
  "$KD" distill --teacher t07 --out bad11 "${KDC[@]}"
expect_error 2 "labeled fraction must be in (0, 1], got 0" "$KD" distill --mode semi --teacher teacher \
  --labeled-fraction 0 --out bad12 "${KDC[@]}"
expect_error 2 "labeled fraction must be in (0, 1], got 1.5" "$KD" train --labeled-fraction 1.5 --out bad13 "${COMMON[@]}"
expect_error 1 "unlabeled data no_images: no PNG/JPEG images in the folder" "$KD" distill --mode semi \
  --teacher teacher --unlabeled no_images --out bad14 "${KDC[@]}"
expect_error 1 "has no layer 'conv9' (layers: 0, 1, 2" "$KD" distill --teacher teacher --hint conv9:5 --out bad15 "${KDC[@]}"
expect_error 1 "hint 7:2: no adapter maps the student's 2 output [8, 14, 14] to the teacher's 7 output [32, 7, 7]" \
  "$KD" distill --teacher teacher --hint 7:2 --out bad16 "${KDC[@]}"
expect_error 2 "unknown loss 'dkdd' (losses: kd, dkd, dist, mlkd, fitnet, at, pkd, cwd, rkd, sp, pkt, crd; see kd losses)" \
  "$KD" distill --teacher teacher --loss dkdd --out bad20 "${KDC[@]}"
expect_error 2 "loss dist has no option 'alpha' (options: beta, gamma, T, std, weight, warmup)" \
  "$KD" distill --teacher teacher --loss dist:alpha=1 --out bad21 "${KDC[@]}"
expect_error 2 "--loss dkd needs a label for every image and mode semi trains on images without one" \
  "$KD" distill --mode semi --labeled-fraction 0.1 --teacher teacher --loss dkd --out bad22 "${KDC[@]}"
expect_error 2 "--loss sp is a feature loss and 2 teachers are given: feature losses need one" "$KD" distill --mode merge \
  --teacher t07 --teacher t39 --loss sp:teacher=7,student=5 --out bad23 "${KDC[@]}"
expect_error 1 "has no layer '99' (layers: 0, 1, 2" "$KD" distill --teacher teacher --loss at:teacher=7,student=99 \
  --out bad24 "${KDC[@]}"
expect_error 1 "at 7:6: attention transfer needs [C, H, W] feature maps; the student's 6 output is [784]" \
  "$KD" distill --teacher teacher --loss at:teacher=7,student=6 --out bad25 "${KDC[@]}"
expect_error 1 "--merge-by-source needs --mode merge on pooled data" "$KD" distill --mode merge \
  --teacher t07 --teacher t39 --merge-by-source --out bad26 "${KDC[@]}"
expect_error 2 "--merge-by-source is for --mode merge, not offline" "$KD" distill --teacher teacher \
  --merge-by-source --out bad27 "${KDC[@]}"
expect_error 1 "give --size and --channels to pool them" "$KD" train --data fashion-mnist+folder \
  --out bad28 "${COMMON[@]}"
expect_error 1 "class 'digit 0' is not one of [T-shirt/top" "$KD" eval teacher --data digits
expect_error 2 "mode merge needs two or more teachers" "$KD" distill --mode merge --teacher t07 --out bad17 "${KDC[@]}"
expect_error 2 "exactly one of --generations N (N >= 2) or --teach-last M" "$KD" distill --mode self \
  --generations 2 --teach-last 1 --out bad18 "${KDC[@]}"
expect_error 1 "'Cat' is neither a class of" "$KD" train --classes Cat --out bad19 "${COMMON[@]}"

# Bad input: one line, exit 2 for usage errors and 1 for bad files or data, no complete-looking run.
mkdir -p badidx && printf '\x12\x34\x08\x03' > badidx/train-images-idx3-ubyte && cp badidx/train-images-idx3-ubyte badidx/train-labels-idx1-ubyte
expect_error 1 "bad IDX magic number" "$KD" train --data badidx --out bad1 "${COMMON[@]}"
[ ! -f bad1/summary.json ] && [ -f bad1/error.txt ] && echo "ok   failed run marked" || { echo "FAIL failed run marker"; fails=$((fails+1)); }
expect_error 2 "unknown architecture 'resnet9000'" "$KD" train --arch resnet9000 --out bad2 "${COMMON[@]}"
expect_error 1 "no such file or directory" "$KD" train --data /nonexistent --out bad3 "${COMMON[@]}"
expect_error 1 "teacher teacher: class 'T-shirt/top' matches no class of the data (classes: 0, 1, 2, 3)" \
  "$KD" distill --teacher teacher --out bad4 --data fourclass "${COMMON[@]}"
expect_error 2 "run directory exists" "$KD" train --out teacher "${COMMON[@]}"
printf 'out: x\nstages:\n  - {name: a, train: {epoch: 3}}\n' > bad.yaml
expect_error 1 "unknown key 'train.epoch'" "$KD" run bad.yaml
expect_error 2 "--lr = fast" "$KD" train --out bad5 --lr fast
expect_error 1 "bad1: run failed: badidx/train-images-idx3-ubyte: bad IDX magic" "$KD" compare bad1
mkdir -p half && cp teacher/config.yaml half/
expect_error 1 "half: incomplete run (no summary.json)" "$KD" compare half
expect_error 2 "learning rate (--lr) must be a number in (0, 10], got 1e+30" "$KD" train --arch fmnist-student --lr 1e30 --out bad6 "${COMMON[@]}"

finish
