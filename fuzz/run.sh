#!/usr/bin/env bash
# Runs every fuzz target for SECONDS on a scratch copy of its seed corpus (fuzz/corpus/<target>),
# after replaying the inputs that once crashed it (fuzz/regressions/<target>). A crash, a leak,
# undefined behaviour or more than 2 GiB of memory fails the run; the input is left in OUT.
# SECONDS may instead be RUNS:N for N inputs per target from a fixed seed: the same run every
# time, as CI uses it (a time limit makes the number of inputs depend on the machine's speed).
# Usage: fuzz/run.sh BUILD_DIR SECONDS|RUNS:N [OUT_DIR]
set -euo pipefail
BUILD=$1 SECONDS_EACH=$2 OUT=${3:-$BUILD/findings}
if [[ $SECONDS_EACH == RUNS:* ]]; then LIMIT=(-runs="${SECONDS_EACH#RUNS:}" -seed=1); else LIMIT=(-max_total_time="$SECONDS_EACH"); fi
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
status=0
for target in infer_request image_bytes run_config idx model_spec checkpoint_state coco_json voc_xml image_folder; do
  bin=$BUILD/fuzz_$target
  if compgen -G "$HERE/regressions/$target/*" >/dev/null; then
    "$bin" -rss_limit_mb=2048 "$HERE"/regressions/$target/* >"$OUT/$target-regressions.log" 2>&1 \
      && echo "ok   $target: $(ls "$HERE/regressions/$target" | wc -l) regression inputs" \
      || { echo "FAIL $target regression inputs (see $OUT/$target-regressions.log)"; status=1; }
  fi
  work=$(mktemp -d) && cp "$HERE/corpus/$target/"* "$work/"
  if "$bin" "${LIMIT[@]}" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
       -artifact_prefix="$OUT/$target-" "$work" >"$OUT/$target.log" 2>&1; then
    echo "ok   $target: $(grep -o 'Done [0-9]* runs' "$OUT/$target.log" | tail -1)  (${SECONDS_EACH}), corpus $(ls "$work" | wc -l)"
  else
    echo "FAIL $target: see $OUT/$target.log and $OUT/$target-*"; tail -30 "$OUT/$target.log"; status=1
  fi
  rm -rf "$work"
done
exit $status
