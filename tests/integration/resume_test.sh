#!/usr/bin/env bash
# Crash-safe resume through the real CLI: runs killed with SIGKILL in the middle of an epoch and
# resumed with --resume end with the same metrics, weights and test accuracy as uninterrupted
# runs (deterministic mode); a truncated or corrupt newest checkpoint is reported by name and the
# previous one used; a run killed before its first checkpoint starts over.
# Usage: resume_test.sh KD_BINARY WORK_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KD=$1 WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export KD_CACHE_DIR=$WORK/cache
source "$HERE/lib.sh"

# kill_after LINES DIR COMMAND...: starts COMMAND, SIGKILLs it mid-way through the epoch after
# metrics.jsonl has LINES lines (each epoch takes ~0.7 s here).
kill_after() {
  local lines=$1 dir=$2
  "${@:3}" >/dev/null 2>&1 &
  local pid=$! waited=0
  while [ ! -f "$dir/config.yaml" ] || [ "$(cat "$dir/metrics.jsonl" 2>/dev/null | wc -l)" -lt "$lines" ]; do
    sleep 0.05; waited=$((waited + 1))
    if [ "$waited" -gt 1200 ] || ! kill -0 "$pid" 2>/dev/null; then break; fi
  done
  sleep 0.3
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
same_run() {  # same_run A B: identical metrics of every epoch (timings aside) and test accuracy
  ok_if "$2 resumed = $1 uninterrupted (metrics of every epoch, test top-1)" \
    "[{k: v for k, v in __import__('json').loads(l).items() if 'seconds' not in k and 'per_s' not in k} for l in open('$1/metrics.jsonl')] == \
     [{k: v for k, v in __import__('json').loads(l).items() if 'seconds' not in k and 'per_s' not in k} for l in open('$2/metrics.jsonl')] and \
     __import__('os').path.exists('$2/summary.json') and \
     __import__('json').load(open('$1/summary.json'))['test'] == __import__('json').load(open('$2/summary.json'))['test']"
}

R=(--arch fmnist-student --limit 12000 --epochs 4 --warmup 0 --lr 0.1 --threads 2 --no-latency --deterministic)
check "uninterrupted run" "$KD" train "${R[@]}" --out whole

kill_after 2 killed "$KD" train "${R[@]}" --out killed
ok_if "the killed run is incomplete (no summary.json)" "not __import__('os').path.exists('killed/summary.json')"
check "resume the killed run" "$KD" train --resume killed
grep -q "resuming after epoch" err.txt && echo "ok   resumed from a checkpoint" || { echo "FAIL no resume"; cat err.txt; fails=$((fails + 1)); }
same_run whole killed
expect_error 1 "the run has finished" "$KD" train --resume killed

kill_after 3 corrupt "$KD" train "${R[@]}" --out corrupt
newest=$(ls -d corrupt/checkpoints/epoch-* | tail -1)
head -c 1000 "$newest/model.pt" > cut && mv cut "$newest/model.pt"
check "resume past a truncated checkpoint" "$KD" train --resume corrupt
grep -q "checkpoint $(basename "$newest") skipped: $newest/model.pt: 1000 bytes" err.txt \
  && echo "ok   the truncated checkpoint is named, the previous one used" || { echo "FAIL corrupt"; cat err.txt; fails=$((fails + 1)); }
same_run whole corrupt

kill_after 0 early "$KD" train "${R[@]}" --out early
rm -rf early/checkpoints
check "resume a run killed before its first checkpoint" "$KD" train --resume early
same_run whole early

# Distillation with a snapshot teacher (self mode) and a hint adapter: both come back on resume.
D=(--mode self --student fmnist-student --teach-last 2 --hint 5:5 --limit 12000 --epochs 4 --warmup 1 --lr 0.05
   --threads 2 --no-latency --deterministic)
check "uninterrupted self-distillation with a hint" "$KD" distill "${D[@]}" --out self_whole
kill_after 3 self_killed "$KD" distill "${D[@]}" --out self_killed
check "resume it" "$KD" distill --resume self_killed
same_run self_whole self_killed

# CRD's memory bank and normalisers come back from the checkpoint (self mode: the snapshot
# teacher's features are contrasted from epoch 3).
C=(--mode self --student fmnist-student --teach-last 2 --loss crd:teacher=5,student=5,negatives=256 --limit 6000
   --epochs 4 --warmup 1 --lr 0.05 --threads 2 --no-latency --deterministic)
check "uninterrupted self-distillation with crd" "$KD" distill "${C[@]}" --out crd_whole
kill_after 3 crd_killed "$KD" distill "${C[@]}" --out crd_killed
check "resume it" "$KD" distill --resume crd_killed
same_run crd_whole crd_killed

# Born-again generations: killed after generation 1 has finished (metrics.jsonl gets a
# generation's epochs when it ends), the finished ones are kept and the next continues from its
# own checkpoint.
G=(--mode self --generations 3 --student fmnist-student --limit 6000 --epochs 3 --warmup 0 --lr 0.05
   --threads 2 --no-latency --deterministic)
check "uninterrupted born-again generations" "$KD" distill "${G[@]}" --out gens_whole
kill_after 3 gens_killed "$KD" distill "${G[@]}" --out gens_killed
ok_if "killed after generation 1, before the last" "__import__('os').path.exists('gens_killed/generations/gen-1/generation.json') and \
  not __import__('os').path.exists('gens_killed/generations/gen-3/generation.json')"
check "resume the generations" "$KD" distill --resume gens_killed
grep -q "generation 1/3: finished before the interruption" err.txt && echo "ok   generation 1 reused" \
  || { echo "FAIL generation 1 not reused"; cat err.txt; fails=$((fails + 1)); }
same_run gens_whole gens_killed
ok_if "same per-generation results" "__import__('json').load(open('gens_whole/summary.json'))['generations'] == \
  __import__('json').load(open('gens_killed/summary.json'))['generations']"

# Detection: the same epoch checkpoints.
check "make-detection" "$KD" data make-detection --out det --images 96 --test-images 16 --canvas 64 --seed 1
T=(--arch effdet-d0 --data det --size 64 --epochs 4 --batch-size 16 --threads 2 --no-latency --deterministic)
check "uninterrupted detection run" "$KD" train "${T[@]}" --out det_whole
kill_after 2 det_killed "$KD" train "${T[@]}" --out det_killed
check "resume the detection run" "$KD" train --resume det_killed
grep -q "resuming after epoch" err.txt && echo "ok   detection resumed from a checkpoint" \
  || { echo "FAIL detection resume"; cat err.txt; fails=$((fails + 1)); }
same_run det_whole det_killed

# An experiment killed mid-stage: running it again resumes the stage.
printf 'out: exp\ndefaults: {data: {limit: 12000}, train: {epochs: 4}, measure_latency: false}\nstages:\n  - {name: s, arch: fmnist-student}\n' > exp.yaml
kill_after 2 exp/s-s0 "$KD" run exp.yaml
check "run the experiment again" "$KD" run exp.yaml
grep -q "exp/s-s0: interrupted, resuming" err.txt && grep -q "resuming after epoch" err.txt \
  && echo "ok   the interrupted stage resumed" || { echo "FAIL experiment resume"; cat err.txt; fails=$((fails + 1)); }

# A full disk (a 220 kB tmpfs, where the system lets us mount one): one clear error, no
# half-written checkpoint, and after space is freed the run resumes.
mkdir -p full
if mount -t tmpfs -o size=220k tmpfs full 2>/dev/null; then
  trap 'umount "$WORK/full" 2>/dev/null || true' EXIT
  expect_error 1 "No space left on device" "$KD" train "${R[@]}" --out full/run
  ok_if "the run is marked failed, no temporary checkpoint folder is left" \
    "__import__('os').path.exists('full/run/error.txt') and not __import__('glob').glob('full/run/checkpoints/*.tmp*')"
  mount -o remount,size=4m full
  check "resume once there is space" "$KD" train --resume full/run
  same_run whole full/run
else
  echo "ok   (full disk not simulated: mounting a tmpfs is not permitted here)"
fi
expect_error 1 "no config.yaml" "$KD" train --resume nowhere
finish
