#!/usr/bin/env bash
# cmake/check_layering.cmake: an area's file that includes a header of an area it does not link
# fails with the file, the line and the areas it may use; an allowed include passes.
set -uo pipefail
ROOT=$1 WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK"
fail=0
printf '#include "kd/core/error.h"\n#include "kd/distill/trainer.h"\n' > "$WORK/bad.cpp"
printf '#include "kd/core/error.h"\n#include "kd/runs/run.h"\n' > "$WORK/good.cpp"
check() { cmake -DAREA=report "-DALLOWED=report|core|data|models|detect|eval|runs" "-DFILES=$1" \
            -DSTAMP="$WORK/stamp" -P "$ROOT/cmake/check_layering.cmake" 2>&1; }
out=$(check "$WORK/bad.cpp") && { echo "FAIL a report file including kd/distill passed"; fail=1; } ||
  { echo "$out" | grep -q 'bad.cpp: #include "kd/distill/trainer.h"' && echo "ok   a crossing include fails, naming file and line" ||
    { echo "FAIL unexpected message: $out"; fail=1; }; }
rm -f "$WORK/stamp"
check "$WORK/good.cpp" >/dev/null && test -f "$WORK/stamp" && echo "ok   an allowed include passes" ||
  { echo "FAIL an allowed include was refused"; fail=1; }
exit $fail
