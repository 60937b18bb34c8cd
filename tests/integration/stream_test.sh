#!/usr/bin/env bash
# Streamed data through the real CLI: a folder of JPEG photos, the same photos as a file list and
# as tar shards (kd data pack), trained, distilled (clean teacher view, semi-supervised with an
# unlabeled folder), evaluated and predicted; the same results with 0 and 2 workers; a run killed
# mid-way resumes to the same result; bad files are skipped and counted (or stop a --strict run);
# a list with missing files is reported up front.
# Usage: stream_test.sh KD_BINARY WORK_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KD=$1 WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export KD_CACHE_DIR=$WORK/cache
source "$HERE/lib.sh"

# 3 classes x 40 photos of 48-80 px (colour and stripes tell the classes apart), and 20 unlabeled.
/usr/bin/python3 - <<'EOF'
import os, random
from PIL import Image
random.seed(0)
colours = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 210)}
def photo(path, rgb, stripe):
    w, h = random.randint(48, 80), random.randint(48, 80)
    img = Image.new("RGB", (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            on = (x // 4 + y // 4 * stripe) % 2
            px[x, y] = tuple(max(0, min(255, c + (40 if on else -40) + random.randint(-30, 30))) for c in rgb)
    img.save(path, quality=90)
for k, (name, rgb) in enumerate(colours.items()):
    os.makedirs(f"photos/{name}", exist_ok=True)
    for i in range(40):
        photo(f"photos/{name}/{i:02d}.jpg", rgb, k)
os.makedirs("unlabeled", exist_ok=True)
for i in range(20):
    photo(f"unlabeled/{i}.jpg", list(colours.values())[i % 3], i % 3)
with open("list.csv", "w") as f:
    f.write("path,label\n")
    for name in sorted(colours):  # the folder's order, so the same ids: the same split and draws
        for i in range(40):
            f.write(f"photos/{name}/{i:02d}.jpg,{name}\n")
EOF

C=(--size 32 --lr 0.05 --warmup 0 --threads 1 --no-latency --deterministic)
S=(--arch fmnist-student "${C[@]}" --epochs 3)
check "train on a photo folder, streamed" "$KD" train --data photos "${S[@]}" --workers 2 --out folder
grep -q "input 3x32x32 (training: random-resized crop" err.txt && echo "ok   the input and its transforms are logged" || { echo "FAIL input line"; fails=$((fails+1)); }
expect_json() { ok_if "$1: $2 == $3" "__import__('json').load(open('$1/summary.json'))$2 == $3"; }
ok_if "config.yaml records the size and the eval resize" "'height: 32' in open('folder/config.yaml').read() and 'resize: 37' in open('folder/config.yaml').read()"
ok_if "model.json records the eval resize" "__import__('json').load(open('folder/model.json'))['resize'] == 37"
ok_if "the photo run learns (test top-1 > 0.6)" "__import__('json').load(open('folder/summary.json'))['test']['top1'] > 0.6"

check "the same run with 0 workers" "$KD" train --data photos "${S[@]}" --workers 0 --out folder0
same_test() { ok_if "$2 = $1 (metrics of every epoch, test)" \
  "[{k: v for k, v in __import__('json').loads(l).items() if 'seconds' not in k and 'per_s' not in k} for l in open('$1/metrics.jsonl')] == \
   [{k: v for k, v in __import__('json').loads(l).items() if 'seconds' not in k and 'per_s' not in k} for l in open('$2/metrics.jsonl')] and \
   __import__('json').load(open('$1/summary.json'))['test'] == __import__('json').load(open('$2/summary.json'))['test']"; }
same_test folder folder0

check "the same photos as a file list" "$KD" train --data list.csv "${S[@]}" --out listed
same_test folder listed
check "kd data info on the list" "$KD" data info --data list.csv --size 32
grep -q "list.csv \[train\]: 120 images (streamed), input 3x32x32" out.txt && echo "ok   info reads the list" || { echo "FAIL info: $(cat out.txt)"; fails=$((fails+1)); }
check "kd data pack" "$KD" data pack --data photos --out shards --shard-size 1
grep -q "120 images in 1 shards" out.txt && echo "ok   pack counts 120 images" || { echo "FAIL pack: $(cat out.txt)"; fails=$((fails+1)); }
check "train on the tar shards" "$KD" train --data 'shards/train-{000000..000000}.tar' "${S[@]}" --out sharded
same_test folder sharded

check "kd eval on the photo run" "$KD" eval folder
check "kd predict a photo (eval transform: resize 37, centre crop 32)" "$KD" predict folder photos/red/00.jpg photos/blue/05.jpg
grep -qF '{"classes":[{"class":"red"' out.txt && echo "ok   predicts red" || { echo "FAIL predict: $(cat out.txt)"; fails=$((fails+1)); }

check "distill from the photo teacher, teacher on clean images (cached)" "$KD" distill --teacher folder --data photos \
  --student fmnist-student "${C[@]}" --epochs 3 --teacher-view clean --out clean
grep -q "teacher cache miss" err.txt && echo "ok   the teacher labels the clean photos once" || { echo "FAIL teacher cache line"; fails=$((fails+1)); }
check "semi-supervised with an unlabeled photo folder" "$KD" distill --mode semi --teacher folder --data photos \
  --unlabeled unlabeled --student fmnist-student "${C[@]}" --epochs 3 --out semi
expect_json semi "['train_unlabeled']" 20

# Killed after its second epoch, resumed: the same as uninterrupted.
R=(--arch fmnist-student --data photos --size 32 --epochs 30 --warmup 0 --threads 1 --no-latency --deterministic)
check "uninterrupted 30-epoch run" "$KD" train "${R[@]}" --out whole
"$KD" train "${R[@]}" --out killed >/dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do [ "$(cat killed/metrics.jsonl 2>/dev/null | wc -l)" -ge 2 ] && break; sleep 0.05; done
kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
ok_if "the killed run is incomplete" "not __import__('os').path.exists('killed/summary.json')"
check "resume the killed photo run" "$KD" train --resume killed
same_test whole killed

# Multi-teacher merge on streamed photos: a teacher of red and green ("not mine" for blue) and one
# of blue; a teacher ensemble's views (flips) through the loader; cutmix after the per-image pipeline.
check "teacher of red, green and the others" "$KD" train --data photos --classes green,red --others --out trg "${S[@]}"
check "teacher of blue and the others" "$KD" train --data photos --classes blue --others --out tb "${S[@]}"
check "merge the two on the photos" "$KD" distill --mode merge --teacher trg --teacher tb --data photos \
  --student fmnist-student "${C[@]}" --epochs 2 --out merged
check "a 2-view teacher ensemble on clean photos" "$KD" distill --teacher folder --data photos --ensemble 2 \
  --teacher-view clean --student fmnist-student "${C[@]}" --epochs 2 --out ens
check "cutmix on streamed photos" "$KD" train --data photos --cutmix 1.0 --out cutmix "${S[@]}"

# Two data-parallel ranks read only their share; draws depend on (seed, epoch, index), not on the
# rank, so the 2-rank run matches the 1-process run.
D=(--arch fmnist-student --data photos --size 32 --epochs 2 --warmup 0 --lr 0.05 --no-latency --deterministic)
check "1 process" "$KD" train "${D[@]}" --threads 1 --batch-size 32 --out one
check "2 ranks (kd launch)" "$KD" launch --nproc 2 -- kd train "${D[@]}" --batch-size 32 --out two
ok_if "2 ranks = 1 process (train loss, eval top-1)" \
  "(lambda a, b: abs(a['train_loss'] - b['train_loss']) < 1e-4 and a['eval_top1'] == b['eval_top1'])(*[__import__('json').loads(open(f'{r}/metrics.jsonl').readlines()[-1]) for r in ('one', 'two')])"

# The default input of photos is 224 (torchvision's), said in the log and the config.
check "no --size: 224 x 224" "$KD" train --data photos --arch fmnist-student --epochs 1 --limit 12 --no-latency --out default
grep -q "input 3x224x224" err.txt && grep -q "height: 224" default/config.yaml && echo "ok   default 224" || { echo "FAIL default size"; fails=$((fails+1)); }

# Bad files: a damaged photo is skipped with a warning naming it, or stops a --strict run.
cp -r photos bad && printf 'not a jpeg' > bad/green/03.jpg
check "a damaged photo is skipped" "$KD" train --data bad --arch fmnist-student "${C[@]}" --epochs 1 --out skipped
grep -q "skipped bad/green/03.jpg: not a PNG or JPEG image" err.txt && echo "ok   the skipped photo is named" || { echo "FAIL skipped warning"; fails=$((fails+1)); }
expect_error 1 "bad/green/03.jpg: not a PNG or JPEG image (10 bytes) (data.strict" "$KD" train --data bad --arch fmnist-student "${C[@]}" --epochs 1 --strict --out strict
# A list naming files that are not there: counted up front.
{ cat list.csv; echo "photos/red/gone.jpg,red"; echo "photos/red/gone2.jpg,red"; } > missing.csv
expect_error 1 "missing.csv: 2 of 122 files missing, first: photos/red/gone.jpg (line 122)" "$KD" train --data missing.csv "${S[@]}" --out m
check "--max-missing 0.05 trains without them" "$KD" train --data missing.csv --arch fmnist-student "${C[@]}" --epochs 1 --max-missing 0.05 --out m2
head -c 5000 shards/train-000000.tar > cut-000000.tar
expect_error 1 "cut-000000.tar: truncated tar shard" "$KD" train --data 'cut-{000000..000000}.tar' "${S[@]}" --out cut
finish
