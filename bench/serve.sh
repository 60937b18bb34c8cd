#!/usr/bin/env bash
# Serving benchmark: one Fashion-MNIST student run served by `kd serve` and, exported with
# `kd export`, by FastAPI + uvicorn + PyTorch Python (bench/serve_baseline.py); wrk posts the same
# Open Inference Protocol v2 request (one 28x28 image as FP32: in JSON, and with the binary tensor
# data extension as tritonclient sends it) at concurrency 1 and 32, to one server at a time, in
# the same run. Prints requests/s and p50/p99 latency for both.
# Usage: bench/serve.sh path/to/kd RUN [SECONDS]
set -euo pipefail
KD=$(realpath "$1") RUN=$2 SECONDS_EACH=${3:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/kd-serve-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
command -v wrk >/dev/null || { echo "serve bench: wrk is not installed (scripts/install-deps)"; exit 1; }

"$KD" export "$RUN" --out "$WORK/student.pt" >/dev/null
/usr/bin/python3 - "$WORK/body.json" <<'PY'
import gzip, json, sys
import numpy as np
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read()[16:16 + 784], dtype=np.uint8).astype(np.float32) / 255
json.dump({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                       "data": [round(float(v), 6) for v in x]}]}, open(sys.argv[1], "w"))
head = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                               "parameters": {"binary_data_size": 784 * 4}}],
                   "parameters": {"binary_data_output": True}})
open(sys.argv[1][:-5] + ".bin", "wb").write(head.encode() + x.astype("<f4").tobytes())
open(sys.argv[1][:-5] + ".len", "w").write(str(len(head)))
PY
# post.lua: the JSON body; post-binary.lua: the binary one with its header.
for kind in json binary; do
  cat > "$WORK/post-$kind.lua" <<LUA
wrk.method = "POST"
local kind = "$kind"
if kind == "binary" then
  wrk.headers["Content-Type"] = "application/octet-stream"
  wrk.headers["Inference-Header-Content-Length"] = assert(io.open("$WORK/body.len", "r")):read("*a")
  local f = assert(io.open("$WORK/body.bin", "rb"))
  wrk.body = f:read("*a")
  f:close()
else
  wrk.headers["Content-Type"] = "application/json"
  local f = assert(io.open("$WORK/body.json", "r"))
  wrk.body = f:read("*a")
  f:close()
end
LUA
done

wait_ready() {  # wait_ready URL
  for _ in $(seq 100); do curl -sf "$1/v2/health/ready" >/dev/null && return 0; sleep 0.1; done
  echo "serve bench: server at $1 did not come up"; exit 1
}
# load NAME URL: wrk at concurrency 1 and 32 (one wrk thread: wrk shares the 2 cores), JSON and
# binary requests, one line each
load() {
  for kind in json binary; do
  for c in 1 32; do
    wrk -t1 -c"$c" -d"${SECONDS_EACH}s" --latency -s "$WORK/post-$kind.lua" "$2/v2/models/student/infer" >"$WORK/wrk.txt"
    /usr/bin/python3 - "$1 ($kind)" "$c" "$WORK/wrk.txt" <<'PY'
import re, sys
name, c, text = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
if "Requests/sec" not in text:
    sys.exit(f"serve bench: wrk failed:\n{text}")
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"99%\s+(\S+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
open(sys.argv[3] + ".all", "a").write(f"{name}\t{c}\t{rps}\t{p99}\n")
print(f"{name:<34} {c:>5} {rps:>10.0f} {p50:>9.2f} {p99:>9.2f}"
      + (f"  ({non2xx.group(1)} non-2xx)" if non2xx else "") + (f"  (socket errors: {errors.group(1)})" if errors else ""))
PY
  done
  done
}

printf "%-34s %5s %10s %9s %9s\n" server clients "req/s" "p50 ms" "p99 ms"
"$KD" serve "student=$RUN" --port 0 --grpc-port 0 >"$WORK/kd.json" 2>"$WORK/kd.log" &
PIDS+=($!)
sleep 0.5
for _ in $(seq 100); do [ -s "$WORK/kd.json" ] && break; sleep 0.1; done
KD_URL=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['listening'])" "$WORK/kd.json")
wait_ready "$KD_URL"
load "kd serve" "$KD_URL"
# gRPC: ModelInfer with raw FP32 contents, one channel per client (bench/grpc_load.cpp).
GRPC_LOAD=$(dirname "$KD")/bench/kd_grpc_load
KD_GRPC=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['grpc'])" "$WORK/kd.json")
for c in 1 32; do
  read -r rps p50 p99 fails < <("$GRPC_LOAD" "$KD_GRPC" student "$c" "$SECONDS_EACH")
  printf "%-34s %5s %10.0f %9.2f %9.2f%s\n" "kd serve (gRPC)" "$c" "$rps" "$p50" "$p99" \
    "$([ "$fails" = 0 ] || echo "  ($fails failed)")"
  printf "kd serve (gRPC)\t%s\t%s\t%s\n" "$c" "$rps" "$p99" >>"$WORK/wrk.txt.all"
done
# Memory after a soak of 25 MiB batches (8,192 images in binary, --max-body-mb 32): what the
# server keeps once they are answered.
/usr/bin/python3 - "$WORK/big.bin" "$WORK/big.len" <<'PY'
import json, sys
import numpy as np
x = np.random.default_rng(0).random((8192, 1, 28, 28), dtype=np.float32)
head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                               "parameters": {"binary_data_size": x.nbytes}}],
                   "parameters": {"binary_data_output": True}})
open(sys.argv[1], "wb").write(head.encode() + x.astype("<f4").tobytes())
open(sys.argv[2], "w").write(str(len(head)))
PY
for _ in 1 2 3 4; do
  curl -sf -o /dev/null -H "Inference-Header-Content-Length: $(cat "$WORK/big.len")" \
    --data-binary "@$WORK/big.bin" "$KD_URL/v2/models/student/infer" || echo "serve bench: a 25 MiB batch failed"
done
sleep 1
echo "kd serve RSS after the load and four 25 MiB batches: $(awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' /proc/"${PIDS[0]}"/status)"
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true

PORT=$(/usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
/usr/bin/python3 "$HERE/serve_baseline.py" "$WORK/student.pt" "$PORT" 2>"$WORK/py.log" &
PIDS+=($!)
wait_ready "http://127.0.0.1:$PORT"
load "FastAPI+uvicorn+PyTorch" "http://127.0.0.1:$PORT"
/usr/bin/python3 - "$WORK/wrk.txt.all" <<'PY'
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
r = {(n, c): (float(rps), float(p99)) for n, c, rps, p99 in rows}
for kind, py in (("json", "json"), ("binary", "binary"), ("gRPC", "binary")):
    for c in ("1", "32"):
        k, p = r[(f"kd serve ({kind})", c)], r[(f"FastAPI+uvicorn+PyTorch ({py})", c)]
        print(f"{kind:>6}, concurrency {c:>2}: kd {k[0] / p[0]:.2f}x the Python server's requests/s "
              f"({py}); p99 {k[1]:.2f} vs {p[1]:.2f} ms")
PY
