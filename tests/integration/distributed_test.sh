#!/usr/bin/env bash
# Data-parallel training on loopback through the real CLI (c10d/Gloo, `kd launch`):
# 2 ranks with the same global batch end with the same weights as 1 rank; distillation (with a
# learned hint adapter) and detection train on 2 ranks; a rank that dies or hangs makes the
# other exit with one clear error instead of waiting forever; bad variables are refused; a
# 2-rank run killed mid-way resumes on 2 ranks to the same result.
# Usage: distributed_test.sh KD_BINARY WORK_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KD=$1 WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export KD_CACHE_DIR=$WORK/cache
source "$HERE/lib.sh"

# same_weights A B TOL: every parameter of A/model.pt within TOL of B's (read by PyTorch Python).
same_weights() {
  ok_if "$1 and $2: the same weights (max difference < $3)" \
    "(lambda a, b: max((a[k] - b[k]).abs().max().item() for k in a) < $3)(\
      dict(__import__('torch').jit.load('$1/model.pt').named_parameters()), \
      dict(__import__('torch').jit.load('$2/model.pt').named_parameters()))"
}

# 800 images -> 640 train -> 5 steps of 128 (odd shard sizes are padded, even ones are exact).
S=(--limit 800 --epochs 1 --warmup 0 --lr 0.1 --no-augment --no-latency --deterministic)
check "1 rank" "$KD" train --arch fmnist-student "${S[@]}" --threads 1 --out one
check "2 ranks (kd launch)" "$KD" launch --nproc 2 -- kd train --arch fmnist-student "${S[@]}" --out two
same_weights one two 1e-5
ok_if "metrics reduced over ranks (train loss, eval top-1 equal)" \
  "abs($(json one/metrics.jsonl 'd["train_loss"]') - $(json two/metrics.jsonl 'd["train_loss"]')) < 1e-5 and \
   $(json one/metrics.jsonl 'd["eval_top1"]') == $(json two/metrics.jsonl 'd["eval_top1"]')"
ok_if "the summary records 2 ranks" "$(json two/summary.json 'd["ranks"]') == 2"
ok_if "one line of output (rank 0's)" "'''$(cat out.txt)''' == 'two'"
ok_if "only rank 0 logs progress" "'rank 1]' not in open('err.txt').read() and 'rank 0]' in open('err.txt').read()"

check "teacher" "$KD" train --arch fmnist-student --limit 800 --epochs 1 --threads 2 --no-latency --out teacher
check "distill on 1 rank" "$KD" distill --teacher teacher --student fmnist-student "${S[@]}" --threads 1 --out kd1
check "distill on 2 ranks" "$KD" launch --nproc 2 -- kd distill --teacher teacher --student fmnist-student "${S[@]}" --out kd2
same_weights kd1 kd2 1e-5
check "self-distillation with a hint adapter on 2 ranks" "$KD" launch --nproc 2 -- kd distill --mode self \
  --student fmnist-student --teach-last 1 --hint 5:5 --limit 800 --epochs 2 --no-latency --out self2
check "semi-supervised on 2 ranks" "$KD" launch --nproc 2 -- kd distill --mode semi --teacher teacher \
  --labeled-fraction 0.2 --limit 800 --epochs 1 --no-latency --out semi2
printf 'out: exp\ndefaults: {data: {limit: 800}, train: {epochs: 1}, measure_latency: false}\nstages:\n  - {name: t, arch: fmnist-student}\n  - {name: k, mode: offline, arch: fmnist-student, distill: {teacher: t}}\n' > exp.yaml
check "an experiment (kd run) on 2 ranks" "$KD" launch --nproc 2 -- kd run exp.yaml
ok_if "one comparison table, both stages" "open('out.txt').read().count('| run |') == 1 and \
  all(__import__('os').path.exists(f'exp/{s}-s0/summary.json') for s in 'tk')"
check "make-detection" "$KD" data make-detection --out det --images 64 --test-images 16 --canvas 64 --seed 1
check "detection on 2 ranks" "$KD" launch --nproc 2 -- kd train --arch effdet-d0 --data det --size 64 --epochs 1 \
  --batch-size 16 --no-latency --out det2
ok_if "detection summary written by rank 0" "$(json det2/summary.json 'd["ranks"]') == 2"

# Faults. Ranks started by hand (as a scheduler would), so nothing but c10d stops the survivor.
L=(--arch fmnist-student --limit 12000 --epochs 20 --warmup 0 --threads 1 --no-latency --no-augment)
port() { /usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
survivor() {  # survivor NAME SIGNAL: rank 1 gets SIGNAL mid-training; rank 0 must stop by itself
  local p; p=$(port)
  WORLD_SIZE=2 RANK=0 MASTER_PORT=$p KD_DIST_TIMEOUT=5 "$KD" train "${L[@]}" --out "$1" >/dev/null 2>"$1.err" & local r0=$!
  WORLD_SIZE=2 RANK=1 MASTER_PORT=$p KD_DIST_TIMEOUT=5 "$KD" train "${L[@]}" --out "$1" >/dev/null 2>&1 & local r1=$!
  while [ ! -f "$1/metrics.jsonl" ] && kill -0 $r0 2>/dev/null; do sleep 0.05; done
  kill "-$2" $r1
  local start=$SECONDS rc=0
  wait $r0 || rc=$?
  kill -9 $r1 2>/dev/null || true; wait $r1 2>/dev/null || true
  echo "$rc $((SECONDS - start))"
}
read -r rc took <<<"$(survivor dead KILL)"
ok_if "rank 1 killed: rank 0 exits 1 within 10 s (exit $rc after ${took} s)" "$rc == 1 and $took <= 10"
grep -q "^kd: error: rank 0: .* failed: .*(another rank has probably stopped; see its output)" dead.err \
  && echo "ok   one clear error line" || { echo "FAIL dead-rank message"; cat dead.err; fails=$((fails + 1)); }
ok_if "the run directory says it failed" "__import__('os').path.exists('dead/error.txt') and not __import__('os').path.exists('dead/summary.json')"
read -r rc took <<<"$(survivor hung STOP)"
ok_if "rank 1 frozen: rank 0 exits 1 after the 5 s timeout (exit $rc after ${took} s)" "$rc == 1 and $took <= 15"
grep -q "Timed out" hung.err && echo "ok   the timeout is named" || { echo "FAIL hung message"; cat hung.err; fails=$((fails + 1)); }

p=$(port)
expect_error 1 "cannot join the job at 127.0.0.1:$p within 2 s" env WORLD_SIZE=2 RANK=0 MASTER_PORT=$p KD_DIST_TIMEOUT=2 \
  "$KD" train "${L[@]}" --out lonely
expect_error 2 "environment variable RANK='5': expected an integer in [0, 1]" env WORLD_SIZE=2 RANK=5 "$KD" train "${L[@]}" --out bad
expect_error 2 "WORLD_SIZE=2 but RANK is not set" env WORLD_SIZE=2 "$KD" train "${L[@]}" --out bad
# Every rank reports this one itself (each finds it), then the launcher names the first to fail.
rc=0; "$KD" launch --nproc 2 -- kd train "${L[@]}" --batch-size 127 --out odd >out.txt 2>err.txt || rc=$?
ok_if "batch 127 over 2 ranks: exit 1" "$rc == 1"
grep -q "^kd: error: batch size 127 does not split evenly over 2 ranks" err.txt && \
  grep -q "launch: rank [01] exited with status 1; stopping the other ranks" err.txt \
  && echo "ok   the reason, and launch names the failed rank" || { echo "FAIL launch message"; cat err.txt; fails=$((fails + 1)); }
expect_error 2 "command is required" "$KD" launch --nproc 2 --
expect_error 127 "cannot run 'no-such-program'" "$KD" launch --nproc 1 -- no-such-program

# kill -9 the launcher's ranks mid-run, resume on 2 ranks: same as an uninterrupted 2-rank run.
R=(--arch fmnist-student --limit 6000 --epochs 4 --warmup 0 --lr 0.1 --no-latency --deterministic)
check "2 ranks, uninterrupted" "$KD" launch --nproc 2 -- kd train "${R[@]}" --out whole2
"$KD" launch --nproc 2 -- kd train "${R[@]}" --out killed2 >/dev/null 2>&1 & lp=$!
while [ "$(cat killed2/metrics.jsonl 2>/dev/null | wc -l)" -lt 2 ] && kill -0 $lp 2>/dev/null; do sleep 0.05; done
sleep 0.2; pkill -9 -P $lp || true; wait $lp 2>/dev/null || true
ok_if "killed before the end" "not __import__('os').path.exists('killed2/summary.json')"
check "resume on 2 ranks" "$KD" launch --nproc 2 -- kd train --resume killed2
grep -q "resuming after epoch" err.txt && echo "ok   resumed from a checkpoint" || { echo "FAIL no resume"; cat err.txt; fails=$((fails + 1)); }
ok_if "resumed 2-rank run = uninterrupted 2-rank run (test top-1)" \
  "__import__('json').load(open('whole2/summary.json'))['test'] == __import__('json').load(open('killed2/summary.json'))['test']"

# The launcher killed with SIGKILL (issue 33): its ranks die with it instead of training on as
# orphans and writing the run after the launcher reported failure.
O=(--arch fmnist-student --limit 6000 --epochs 30 --warmup 0 --no-latency)
"$KD" launch --nproc 2 -- kd train "${O[@]}" --out orphans >/dev/null 2>orphans.err & lp=$!
while [ ! -f orphans/metrics.jsonl ] && kill -0 $lp 2>/dev/null; do sleep 0.05; done
ranks=$(pgrep -P $lp | tr '\n' ' ' || true)
kill -9 $lp 2>/dev/null || true; wait $lp 2>/dev/null || true
sleep 2
left=0; for r in $ranks; do kill -0 "$r" 2>/dev/null && left=$((left + 1)); done
ok_if "launcher SIGKILLed: its ranks ($ranks) are gone 2 s later ($left left)" "'$ranks'.strip() != '' and $left == 0"
for r in $ranks; do kill -9 "$r" 2>/dev/null || true; done
ok_if "and no run was written after it" "not __import__('os').path.exists('orphans/summary.json')"
finish
