# Helpers shared by the shell integration tests. Source after setting WORK (the scratch folder);
# each check prints "ok" or "FAIL" and failures are counted in $fails.
fails=0
check() {  # check DESCRIPTION COMMAND...: the command must succeed
  if "${@:2}" >"$WORK/out.txt" 2>"$WORK/err.txt"; then echo "ok   $1"; else
    echo "FAIL $1"; cat "$WORK/err.txt"; fails=$((fails + 1)); fi
}
expect_error() {  # expect_error CODE NEEDLE COMMAND...: exit CODE, one stderr line with NEEDLE
  set +e; "${@:3}" >"$WORK/out.txt" 2>"$WORK/err.txt"; local rc=$?; set -e
  # Log lines ([hh:mm:ss] ...) and progress bars are not the error message.
  local msg; msg=$(grep -v '^\[' "$WORK/err.txt" | grep -v '^make \|^epoch ' || true)
  if [ "$rc" -eq "$1" ] && grep -qF -- "$2" <<<"$msg" && [ "$(wc -l <<<"$msg")" -eq 1 ]; then
    echo "ok   exit $1: $2"; else
    echo "FAIL expected exit $1 with '$2', got $rc:"; cat "$WORK/err.txt"; fails=$((fails + 1)); fi
}
json() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
ok_if() {  # ok_if DESCRIPTION PYTHON_CONDITION
  if /usr/bin/python3 -c "import sys; sys.exit(0 if ($2) else 1)"; then echo "ok   $1"; else
    echo "FAIL $1 ($2)"; fails=$((fails + 1)); fi
}
finish() { echo "$fails failed"; [ "$fails" -eq 0 ]; }
# has_part serve|grpc|onnx: whether this kd was built with that part (`kd --version` lists them);
# without it, its checks are skipped and the command's refusal is checked instead.
has_part() { "$KD" --version | grep -q "$1 on"; }
