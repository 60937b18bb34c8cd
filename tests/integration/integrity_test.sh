#!/usr/bin/env bash
# Issue 14 through the real CLI: kd deletes only what it made, locks a run, refuses damaged files
# and bad options up front, and fails early, in one line, naming what was wrong.
# Usage: integrity_test.sh KD_BINARY WORK_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KD=$(realpath "$1") WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export KD_CACHE_DIR=$WORK/cache
source "$HERE/lib.sh"
PY=/usr/bin/python3
FMNIST=/usr/share/datasets/fashion-mnist

C=(--limit 200 --epochs 1 --warmup 0 --threads 2 --no-latency)
check "a small teacher" "$KD" train --arch fmnist-student --out t "${C[@]}"

echo "-- 1. replace only kd's run directories; never the working directory or the teacher"
mkdir -p home/d && echo mine >home/mine.txt && echo f >home/d/f
(cd home && expect_error 2 "not replacing" "$KD" train --out . --force "${C[@]}")
ok_if "home/mine.txt and home/d/f survive" "open('home/mine.txt').read() == 'mine\n' and open('home/d/f').read() == 'f\n'"
cp -r t trun && (cd trun && expect_error 2 "not replacing the working directory" "$KD" train --out . --force "${C[@]}")
expect_error 2 "would hold the teacher t" "$KD" distill --teacher t --out t --force "${C[@]}"
expect_error 2 "--out t/sub lies inside the run directory" "$KD" distill --teacher t --out t/sub "${C[@]}"
check "the teacher still loads" "$KD" eval t --json
mkdir -p user && echo x >user/notes.txt && echo "mode: train" >user/config.yaml
expect_error 2 "it holds 'notes.txt', which kd did not write" "$KD" train --out user --force "${C[@]}"

cat >exp.yaml <<EOF
out: $WORK/exp
defaults: {data: {limit: 200}, train: {epochs: 1, schedule: {warmup_epochs: 0}}, measure_latency: false}
stages:
  - {name: t, arch: fmnist-student}
EOF
check "an experiment" "$KD" run exp.yaml
echo notes >exp/t-s0/notes.txt
sed -i 's/epochs: 1/epochs: 2/' exp.yaml
expect_error 2 "stage t (seed 0): $WORK/exp/t-s0: not replacing it: it holds 'notes.txt'" "$KD" run exp.yaml
ok_if "the user's notes in a stage folder survive" "open('exp/t-s0/notes.txt').read() == 'notes\n'"
rm exp/compare.json && echo mine >exp/compare.md.mine && cp exp/compare.md.mine exp/compare.md && rm exp/t-s0/notes.txt
expect_error 1 "holds a compare.md or compare.json that kd did not write" "$KD" run exp.yaml
ok_if "the user's compare.md survives" "open('exp/compare.md').read() == 'mine\n'"

echo "-- 2, 3. stage names, duplicate stages, seeds and keys"
for bad in '{name: "../victim"}' '{name: /abs/victim}' '{name: .hidden}'; do
  printf 'out: %s\nstages:\n  - %s\n' "$WORK/exp2" "$bad" >bad.yaml
  expect_error 1 "must start with a letter or digit" "$KD" run bad.yaml
done
printf 'out: exp2\nstages:\n  - {name: t}\n  - {name: t}\n' >bad.yaml
expect_error 1 "stage name 't' is used twice" "$KD" run bad.yaml
printf 'out: exp2\nseeds: [0, 0]\nstages:\n  - {name: t}\n' >bad.yaml
expect_error 1 "seed 0 is listed twice" "$KD" run bad.yaml
printf 'out: exp2\nstages:\n  - {name: t, arch: fmnist-student, arch: fmnist-teacher}\n' >bad.yaml
expect_error 1 "key 'arch' appears twice" "$KD" run bad.yaml
printf 'out: exp2\nstages:\n  - {name: t}\nstages:\n  - {name: u}\n' >bad.yaml
expect_error 1 "key 'stages' appears twice" "$KD" run bad.yaml
ok_if "nothing was written for the refused experiments" "not __import__('os').path.exists('exp2') and not __import__('os').path.exists('victim-s0')"

echo "-- 4. kd export never overwrites its own run"
expect_error 2 "--out t/model.pt: lies inside the kd run directory" "$KD" export t --out t/model.pt
check "kd export t/export/model.pt (the default)" "$KD" export t
expect_error 2 "--out t/export/model.pt: lies inside the kd run directory" "$KD" export t/export/model.pt --out t/export/model.pt
cp t/export/model.pt standalone.pt && cp t/export/model.pt.json standalone.pt.json
expect_error 2 "--out standalone.pt: is or lies inside the model standalone.pt" "$KD" export standalone.pt --out standalone.pt
check "the run still loads after the refused exports" "$KD" eval t --json

echo "-- 5. one process per run directory"
"$KD" train --arch fmnist-student --out conc --limit 20000 --epochs 5 --warmup 0 --threads 1 --no-latency \
  >conc1.out 2>conc1.err &
first=$!
for _ in $(seq 600); do [ -f conc/.lock ] && [ -s conc/.lock ] && break; sleep 0.1; done
expect_error 1 "conc: in use by kd process $first" "$KD" train --arch fmnist-student --out conc --force "${C[@]}"
wait $first && echo "ok   the first run finishes" || { echo "FAIL the first run"; cat conc1.err; fails=$((fails + 1)); }
ok_if "metrics.jsonl holds epochs 1-5 once" "[__import__('json').loads(l)['epoch'] for l in open('conc/metrics.jsonl')] == [1, 2, 3, 4, 5]"

echo "-- 6, 7. damaged teacher cache entries and model files"
check "distill (cache miss)" "$KD" distill --teacher t --out d1 --no-augment "${C[@]}"
entry=$(ls cache/teacher-*.f16 | head -1)
$PY - "$entry" <<'EOF'
import sys
b = bytearray(open(sys.argv[1], 'rb').read())
for i in range(0, len(b), 997): b[i] ^= 0x5A
open(sys.argv[1], 'wb').write(b)
EOF
"$KD" distill --teacher t --out d2 --no-augment "${C[@]}" 2>d2.err >/dev/null
ok_if "a damaged entry is recomputed with a warning" "'recomputing it' in open('d2.err').read() and '\"miss (computed)\"' in open('d2/summary.json').read()"
ok_if "the recomputed run matches the first" "__import__('json').load(open('d1/summary.json'))['test']['top1'] == __import__('json').load(open('d2/summary.json'))['test']['top1']"
cp -r t tflip
$PY - tflip/model.pt <<'EOF'
import sys
b = bytearray(open(sys.argv[1], 'rb').read())
for i in range(100, len(b), 997): b[i] ^= 0x5A
open(sys.argv[1], 'wb').write(b)
EOF
expect_error 1 "tflip/model.pt: CRC-32 mismatch with model.json" "$KD" eval tflip
expect_error 1 "tflip/model.pt: CRC-32 mismatch with model.json" "$KD" distill --teacher tflip --out d3 "${C[@]}"
cp -r t tunfinished && rm tunfinished/summary.json
"$KD" distill --teacher tunfinished --out d4 "${C[@]}" 2>d4.err >/dev/null
ok_if "an unfinished teacher run is warned about" "'no summary.json, the run did not finish' in open('d4.err').read()"

echo "-- 9. files that never end"
mkdir -p fifo && mkfifo fifo/train-images-idx3-ubyte && cp $FMNIST/train-labels-idx1-ubyte.gz fifo/
expect_error 1 "fifo/train-images-idx3-ubyte: not a regular file" timeout 120 "$KD" train --data fifo --out f1 "${C[@]}"
mkdir -p zero && ln -s /dev/zero zero/train-images-idx3-ubyte && cp $FMNIST/train-labels-idx1-ubyte.gz zero/
expect_error 1 "not a regular file" timeout 120 "$KD" train --data zero --out f2 "${C[@]}"
$PY - <<'EOF'
import gzip, struct
with gzip.open('bomb-images.gz', 'wb', compresslevel=9) as f:
    f.write(struct.pack('>IIII', 0x803, 3000, 28, 28))
    z = bytes(1 << 20)
    for _ in range(128): f.write(z)  # 128 MiB of zeros after 2.35 MB of images
EOF
mkdir -p bomb && mv bomb-images.gz bomb/train-images-idx3-ubyte.gz && cp $FMNIST/train-labels-idx1-ubyte.gz bomb/
$PY - "$KD" <<'EOF' && echo "ok   a gzip IDX bomb fails at once, in bounded memory" || { echo "FAIL gzip bomb"; fails=$((fails + 1)); }
import resource, subprocess, sys
r = subprocess.run([sys.argv[1], 'train', '--data', 'bomb', '--out', 'f3', '--epochs', '1'], capture_output=True, text=True)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(r.returncode, r.stderr.strip().splitlines()[-1], f'{rss:.0f} MiB')
# (ASan's shadow memory and quarantine raise every peak; the unfixed reader needed 3.3 GB)
limit = 2500 if __import__('os').environ.get('KD_SANITIZED') else 1000
sys.exit(0 if r.returncode == 1 and 'trailing bytes' in r.stderr and rss < limit else 1)
EOF

echo "-- 10. --limit before resizing"
$PY - "$KD" <<'EOF' && echo "ok   --limit 50 --size 64 in bounded memory" || { echo "FAIL limit memory"; fails=$((fails + 1)); }
import resource, subprocess, sys
r = subprocess.run([sys.argv[1], 'train', '--limit', '50', '--size', '64', '--epochs', '1', '--no-latency',
                    '--out', 'big64'], capture_output=True, text=True)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(r.returncode, f'{rss:.0f} MiB')
limit = 3000 if __import__('os').environ.get('KD_SANITIZED') else 1500  # unfixed: 3.6 GB
sys.exit(0 if r.returncode == 0 and rss < limit else 1)
EOF

echo "-- 11, 12. data that cannot train is refused before the first epoch"
mkdir -p small && $PY - <<'EOF'
import gzip, struct, random
def idx(path, shape, data):
    with gzip.open(path, 'wb') as f:
        f.write(struct.pack('>I', 0x800 + len(shape)) + b''.join(struct.pack('>I', s) for s in shape) + bytes(data))
random.seed(0)
n = 40
idx('small/train-images-idx3-ubyte.gz', (n, 28, 28), [random.randrange(256) for _ in range(n * 784)])
idx('small/train-labels-idx1-ubyte.gz', (n,), [i % 4 for i in range(n)])
idx('small/t10k-images-idx3-ubyte.gz', (8, 14, 14), [0] * (8 * 196))
idx('small/t10k-labels-idx1-ubyte.gz', (8,), [i % 4 for i in range(8)])
import os
os.makedirs('single', exist_ok=True)
idx('single/train-images-idx3-ubyte.gz', (20, 28, 28), [0] * (20 * 784))
idx('single/train-labels-idx1-ubyte.gz', (20,), list(range(20)))
EOF
expect_error 1 "small: its test images are [1, 14, 14] but its training images [1, 28, 28]" "$KD" train --data small \
  --out s1 --epochs 1
ok_if "refused before training (no metrics.jsonl)" "not __import__('os').path.exists('s1/metrics.jsonl')"
expect_error 1 "leaves no eval images (20 images over 20 classes)" "$KD" train --data single --out s2 --epochs 1
expect_error 1 "model fmnist-student cannot" "$KD" train --size 1 --out s3 "${C[@]}"
expect_error 1 "model fmnist-student (width=0) cannot be built" "$KD" train --arch-opt width=0 --out s4 "${C[@]}"
"$KD" data make-detection --out det --images 12 --test-images 4 --seed 0 >/dev/null 2>&1
$PY - <<'EOF'
import json
for part in ('train', 'test'):
    j = json.load(open(f'det/{part}.json'))
    for a in j['annotations']: a['iscrowd'] = 1
    json.dump(j, open(f'det/{part}.json', 'w'))
EOF
expect_error 1 "no boxes to score (none, or only crowd or difficult ones)" "$KD" train --arch effdet-d0 --data det \
  --out det0 --epochs 1 --no-latency

echo "-- 13. every option checked up front (exit 2, the option named, no run directory)"
expect_error 2 "--limit" "$KD" train --limit 0 --out o1
expect_error 2 "--limit" "$KD" train --limit -5 --out o1
expect_error 2 "--channels" "$KD" train --channels 2 --out o1
expect_error 2 "momentum (--momentum) must be a number in [0, 1)" "$KD" train --momentum 2 --out o1
expect_error 2 "--warmup" "$KD" train --warmup -1 --out o1
expect_error 2 "--step-size" "$KD" train --step-size 0 --out o1
expect_error 2 "learning rate (--lr)" "$KD" train --lr inf --out o1
expect_error 2 "learning rate (--lr)" "$KD" train --lr nan --out o1
expect_error 2 "temperature (-T)" "$KD" distill --teacher t -T nan --out o1
expect_error 2 "weight decay (--weight-decay)" "$KD" train --weight-decay -1 --out o1
expect_error 2 "epochs must be >= 1, got 0" "$KD" train --epochs 0 --out o1
expect_error 2 "--crop-padding must be in [0, 64]" "$KD" train --crop-padding 1000 --out o1
expect_error 2 "unknown command 'nosuchcommand'" "$KD" nosuchcommand
ok_if "no run directory for refused options" "not __import__('os').path.exists('o1')"

echo "-- 14. one line, the right words"
mkdir -p folder/a folder/b folder/.git folder/.ipynb_checkpoints
$PY - <<'EOF'
from PIL import Image
for d in ('a', 'b', '.git', '.ipynb_checkpoints'):
    for i in range(6):
        Image.new('L', (8, 8), 40 * i + (100 if d == 'b' else 0)).save(f'folder/{d}/{i}.png')
b = open('folder/a/0.png', 'rb').read()
open('folder/a/0.png', 'wb').write(b[:len(b) - 20])
EOF
# A damaged photo is skipped with a warning naming it (streamed data), or stops a --strict run.
expect_error 1 "folder/a/0.png: truncated PNG" "$KD" train --data folder --size 16 --out i1 --epochs 1 --strict
check "a truncated PNG is skipped" "$KD" train --data folder --size 16 --out i1b --epochs 1 --no-latency
grep -q "skipped folder/a/0.png: truncated PNG" err.txt && echo "ok   the skipped PNG is named" || { echo "FAIL skipped PNG warning"; fails=$((fails + 1)); }
rm folder/a/0.png
check "hidden folders are not classes" "$KD" train --data folder --size 16 --out i2 --epochs 1 --no-latency
ok_if "two classes" "__import__('json').load(open('i2/model.json'))['class_names'] == ['a', 'b']"
# TorchScript compiles from source: the script must be a file.
cat >make_ts.py <<'EOF'
import torch
class Raises(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] > 0:
            raise ValueError("teacher exploded")
        return x
class One(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(1, 10)
import json
names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
for name, m in (('raises', Raises()), ('one', One())):
    torch.jit.save(torch.jit.script(m), name + '.pt')
    json.dump({"task": "classify", "class_names": names, "input_shape": [1, 28, 28]}, open(name + '.json', 'w'))
EOF
$PY make_ts.py
expect_error 1 "TorchScript model raises.pt raised:" "$KD" distill --teacher raises.pt --out r1 "${C[@]}"
expect_error 1 "TorchScript model one.pt: returned shape [1, 10] for a batch of" "$KD" distill --teacher one.pt --out r2 "${C[@]}"

mkdir -p notarun && echo x >notarun/notes.txt
cat >missing.yaml <<EOF
out: $WORK/exp3
defaults: {data: {limit: 200}, train: {epochs: 1}, measure_latency: false}
stages:
  - {name: kd, mode: offline, arch: fmnist-student, distill: {teacher: $WORK/notarun}}
EOF
expect_error 1 "stage kd (seed 0):" "$KD" run missing.yaml

check "a run with 3 checkpoints" "$KD" train --arch fmnist-student --out ck --limit 400 --epochs 3 --warmup 0 --no-latency
$PY - <<'EOF'
import json, zlib
# Damage epoch 3's model.pt and forge its CRC in state.json: the archive is unreadable, the CRC right.
p = 'ck/checkpoints/epoch-0003/'
open(p + 'model.pt', 'wb').write(b'PK\x05\x06' + bytes(18))
s = json.load(open(p + 'state.json'))
b = open(p + 'model.pt', 'rb').read()
s['files']['model.pt'] = {'bytes': len(b), 'crc32': zlib.crc32(b)}
json.dump(s, open(p + 'state.json', 'w'))
import os; os.remove('ck/summary.json')
EOF
"$KD" train --resume ck 2>ck.err >/dev/null && echo "ok   a forged checkpoint falls back to the one before" \
  || { echo "FAIL forged checkpoint"; cat ck.err; fails=$((fails + 1)); }
ok_if "resumed after epoch 2" "'resuming after epoch 2' in open('ck.err').read() and 'epoch-0003 skipped' in open('ck.err').read()"

"$KD" train --arch fmnist-student --out sig --limit 4000 --epochs 20 --warmup 0 --threads 1 --no-latency >sig.out 2>sig.err &
pid=$!
for _ in $(seq 1200); do [ -f sig/metrics.jsonl ] && break; sleep 0.1; done
kill -INT $pid
set +e; wait $pid; rc=$?; set -e
ok_if "SIGINT: exit 130, a message and error.txt (rc $rc)" "$rc == 130 and 'interrupted by SIGINT' in open('sig.err').read() and 'SIGINT' in open('sig/error.txt').read()"
sed -i 's/epochs: 20/epochs: 5/' sig/config.yaml
expect_error 2 "config.yaml was edited since the run started (train.epochs: 20 -> 5)" "$KD" train --resume sig
sed -i 's/epochs: 5/epochs: 20/' sig/config.yaml

echo "-- round 2 (issue 33), 1-3, 14: every writer refuses special files, run directories and users' files"
mkfifo pipe
mkdir -p u && echo mine >u/mine.txt
# Devices of the test's own (the null device's numbers), not the machine's /dev/full and
# /dev/null: a regression must not cost the machine its devices.
devs=""; if mknod devnull c 1 3 2>/dev/null && mknod devfull c 1 7 2>/dev/null; then devs="devnull devfull"; fi
for target in $devs pipe u; do
  expect_error 2 "-o $target: exists and is not a regular file" "$KD" report t -o "$target"
  expect_error 2 "--out $target: exists and is not a regular file" "$KD" data split --out "$target"
done
ok_if "the devices are still devices ($devs), pipe a FIFO" \
  "all(__import__('stat').S_ISCHR(__import__('os').stat(p).st_mode) for p in '$devs'.split()) and \
   __import__('stat').S_ISFIFO(__import__('os').stat('pipe').st_mode)"
# Under /proc nothing can be created, whatever happens.
expect_error 2 "-o /proc/kd-new-report: lies under /proc" "$KD" report t -o /proc/kd-new-report
ln -s u/mine.txt link.html
expect_error 2 "-o link.html: exists and is not a regular file (a symbolic link)" "$KD" report t -o link.html
cp -r t v
for target in t/model.pt v/summary.json t/checkpoints/x.html; do
  expect_error 2 "-o $target: lies inside the kd run directory" "$KD" report v -o "$target"
  expect_error 2 "--out $target: lies inside the kd run directory" "$KD" data split --out "$target"
done
expect_error 2 "--out v/model.pt: lies inside the kd run directory" "$KD" export t --out v/model.pt
expect_error 2 "--save-results v/results.json: lies inside the kd run directory" "$KD" eval t --save-results v/results.json
check "both runs still evaluate" "$KD" eval v --json
check "and teach" "$KD" distill --teacher v --out dv "${C[@]}"
expect_error 2 "--out v/sub lies inside the run directory" "$KD" quantize t --out v/sub --calibration 10
mkdir -p mine && echo '{"mine": 1}' >mine/model.json
check "kd export --out mine/model.pt" "$KD" export t --out mine/model.pt
if has_part onnx; then
  check "kd export --out mine/model.onnx" "$KD" export t --format onnx --out mine/model.onnx
  ok_if "the user's model.json is untouched; the .pt and the .onnx keep a description each" \
    "open('mine/model.json').read() == '{\"mine\": 1}\n' and \
     __import__('json').load(open('mine/model.pt.json'))['format'] == 'torchscript' and \
     __import__('json').load(open('mine/model.onnx.json'))['format'] == 'onnx'"
else
  expect_error 2 "built without ONNX export (KD_WITH_ONNX=OFF)" "$KD" export t --format onnx --out mine/model.onnx
fi
check "the export loads with its description" "$KD" eval mine/model.pt --data fashion-mnist --json
echo '{"mine": 2}' >mine/model.pt.json
expect_error 2 "is not a model description kd export wrote: not replacing it" "$KD" export t --out mine/model.pt

check "kd report exp/* leaves out the files beside the runs (compare.md)" "$KD" report exp/t-s0 exp/compare.md -o exp-report.html
ok_if "... with a word" "'a file, not a run directory' in open('err.txt').read()"

echo "-- kd predict on a classifier (issue 34): top classes per image, nothing written"
$PY -c "from PIL import Image; import numpy as np; Image.fromarray(np.zeros((28, 28), np.uint8)).save('one.png')"
check "kd predict t one.png --top-k 3" "$KD" predict t one.png --top-k 3
ok_if "... three classes of the run's names, as one JSON line" \
  "(lambda d: d['image'] == 'one.png' and len(d['classes']) == 3 and d['classes'][0]['class'] in \
   ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'])\
   (__import__('json').loads(open('out.txt').read()))"
ok_if "... and no predictions folder" "not __import__('os').path.exists('predictions')"

echo "-- round 2, 6: seeds of 2^32 and more; one run named twice"
expect_error 2 "seeds must be below 2^32" "$KD" train --seed 4294967296 --out big-seed "${C[@]}"
printf 'out: exp3\nseeds: [0, 4294967296]\nstages:\n  - {name: t}\n' >bad.yaml
expect_error 1 "seed 4294967296 is too large" "$KD" run bad.yaml --plan
"$KD" compare t t ./t >cmp.txt 2>cmp.err
ok_if "kd compare t t ./t counts one seed" \
  "open('cmp.txt').read().count('| 1 |') == 1 and 'given more than once' in open('cmp.err').read()"

echo "-- round 2, 12: a class folder whose name is not UTF-8"
$PY - <<'PYEOF'
import os, numpy as np
from PIL import Image
for c in (b'ok', b'b\xff'):
    d = os.path.join(b'badnames', c)
    os.makedirs(d, exist_ok=True)
    for i in range(6):
        Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(os.path.join(d, b'%d.png' % i), 'PNG')
PYEOF
expect_error 1 'class folder "b\ufffd": not valid UTF-8' "$KD" train --data badnames --out bn "${C[@]}"
ok_if "refused before training (no metrics.jsonl)" "not __import__('os').path.exists('bn/metrics.jsonl')"

echo "-- round 2, 13: compare says when runs were tested on different images"
check "a student on 400 images (test 100)" "$KD" train --arch fmnist-student --limit 400 --epochs 1 --warmup 0 \
  --threads 2 --no-latency --out s400
check "distilled on 400 images (test 100)" "$KD" distill --teacher t --limit 400 --epochs 1 --warmup 0 \
  --threads 2 --no-latency --out d400
"$KD" compare t s400 d400 >cmp.txt 2>&1
ok_if "no gap closed, and a warning naming both test sets" \
  "'closes' not in open('cmp.txt').read() and 'gap not computed' in open('cmp.txt').read() and \
   '50 images' in open('cmp.txt').read() and '100 images' in open('cmp.txt').read()"

finish
