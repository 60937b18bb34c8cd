#!/usr/bin/env bash
# Serving benchmark: one Fashion-MNIST student run served by `kd serve` and, exported with
# `kd export`, by FastAPI + uvicorn + PyTorch Python (bench/serve_baseline.py); wrk posts the same
# Open Inference Protocol v2 request (one 28x28 image as FP32: in JSON, and with the binary tensor
# data extension as tritonclient sends it) at concurrency 1 and 32, to one server at a time, kd and
# Python in turn (ROUNDS pairs per point, default 3). Prints the median requests/s and p50/p99
# latency of each, the ratio of each pair, how much CPU the host stole meanwhile, and kd's memory
# after a soak of 25 MiB batches.
# Usage: [ROUNDS=3] bench/serve.sh path/to/kd RUN [SECONDS]
set -euo pipefail
KD=$(realpath "$1") RUN=$2 SECONDS_EACH=${3:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/kd-serve-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
command -v wrk >/dev/null || { echo "serve bench: wrk is not installed (scripts/install-deps)"; exit 1; }

"$KD" export "$RUN" --out "$WORK/student.pt" >/dev/null
# The same run as INT8 (kd quantize), served beside it by the same server.
"$KD" quantize "$RUN" --out "$WORK/int8" --no-latency >/dev/null
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
# wrk_point NAME URL KIND CLIENTS [MODEL]: one wrk run (one wrk thread: wrk shares the 2 cores);
# appends "name kind clients req/s p50 p99 non2xx" to $WORK/points.
wrk_point() {
  wrk -t1 -c"$4" -d"${SECONDS_EACH}s" --latency -s "$WORK/post-$3.lua" "$2/v2/models/${5:-student}/infer" >"$WORK/wrk.txt"
  /usr/bin/python3 - "$1" "$3" "$4" "$WORK/wrk.txt" "$WORK/points" <<'PY'
import re, sys
name, kind, c, text = sys.argv[1], sys.argv[2], sys.argv[3], open(sys.argv[4]).read()
if "Requests/sec" not in text:
    sys.exit(f"serve bench: wrk failed:\n{text}")
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
# The distribution's lines only: "+/- Stdev" columns can end in "50%" too.
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
if errors:
    print(f"serve bench: {name} {kind} {c}: socket errors: {errors.group(1)}", file=sys.stderr)
open(sys.argv[5], "a").write(f"{name}\t{kind}\t{c}\t{rps}\t{p50}\t{p99}\t{non2xx.group(1) if non2xx else 0}\n")
PY
}
cpu_ticks() { head -1 /proc/stat; }

# Both servers are up for the whole run and loaded in turn (an idle one costs nothing): each
# point is ROUNDS pairs of kd then Python runs, so a slow minute of a shared host (steal time)
# falls on both sides rather than on one.
ROUNDS=${ROUNDS:-3}
"$KD" serve "student=$RUN" "student8=$WORK/int8" --port 0 --grpc-port 0 >"$WORK/kd.json" 2>"$WORK/kd.log" &
PIDS+=($!)
KD_PID=$!
PORT=$(/usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
/usr/bin/python3 "$HERE/serve_baseline.py" "$WORK/student.pt" "$PORT" 2>"$WORK/py.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/kd.json" ] && break; sleep 0.1; done
KD_URL=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['listening'])" "$WORK/kd.json")
PY_URL="http://127.0.0.1:$PORT"
wait_ready "$KD_URL"
wait_ready "$PY_URL"
BEFORE=$(cpu_ticks)
for kind in json binary; do
  for c in 1 32; do
    for _ in $(seq "$ROUNDS"); do
      wrk_point kd "$KD_URL" "$kind" "$c"
      wrk_point python "$PY_URL" "$kind" "$c"
      if [ "$kind" = binary ]; then wrk_point kd-int8 "$KD_URL" "$kind" "$c" student8; fi
    done
  done
done
# gRPC: ModelInfer with raw FP32 contents, one channel per client (bench/grpc_load.cpp).
GRPC_LOAD=$(dirname "$KD")/bench/kd_grpc_load
KD_GRPC=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['grpc'])" "$WORK/kd.json")
for c in 1 32; do
  for _ in $(seq "$ROUNDS"); do
    read -r rps p50 p99 fails < <("$GRPC_LOAD" "$KD_GRPC" student "$c" "$SECONDS_EACH")
    printf "kd\tgRPC\t%s\t%s\t%s\t%s\t%s\n" "$c" "$rps" "$p50" "$p99" "$fails" >>"$WORK/points"
  done
done
AFTER=$(cpu_ticks)
/usr/bin/python3 - "$WORK/points" "$BEFORE" "$AFTER" <<'PY'
import statistics as st, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
pts = {}
for name, kind, c, rps, p50, p99, bad in rows:
    pts.setdefault((name, kind, c), []).append((float(rps), float(p50), float(p99), int(bad)))
label = {"kd": "kd serve", "kd-int8": "kd serve, INT8 model", "python": "FastAPI+uvicorn+PyTorch"}
print(f"{'server':<34} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}   (median of the runs; req/s of each run)")
for (name, kind, c), runs in pts.items():
    med = [st.median(r[i] for r in runs) for i in range(3)]
    bad = sum(r[3] for r in runs)
    print(f"{label[name] + ' (' + kind + ')':<34} {c:>7} {med[0]:>8.0f} {med[1]:>8.2f} {med[2]:>8.2f}"
          f"   ({', '.join(f'{r[0]:.0f}' for r in runs)})" + (f"  {bad} failed" if bad else ""))
for name, kind, py in (("kd", "json", "json"), ("kd", "binary", "binary"), ("kd", "gRPC", "binary"),
                       ("kd-int8", "binary", "binary")):
    for c in ("1", "32"):
        k, p = pts[(name, kind, c)], pts[("python", py, c)]
        # gRPC has no Python counterpart run beside it: its ratio is of the medians.
        ratios = ([a[0] / b[0] for a, b in zip(k, p)] if kind != "gRPC"
                  else [st.median(a[0] for a in k) / st.median(b[0] for b in p)])
        print(f"{kind + (' INT8' if name == 'kd-int8' else ''):>11}, concurrency {c:>2}: kd {st.median(ratios):.2f}x the Python server's "
              f"requests/s ({py}{'; pairs ' + ', '.join(f'{r:.2f}' for r in ratios) if len(ratios) > 1 else ''}); "
              f"p99 {st.median(a[2] for a in k):.2f} vs {st.median(b[2] for b in p):.2f} ms")
b, a = (list(map(int, x.split()[1:])) for x in sys.argv[2:4])
d = [y - x for x, y in zip(b, a)]
total = sum(d[:8])
print(f"CPU time of the machine during the load: {100 * d[7] / total:.0f} % stolen by the host, "
      f"{100 * d[3] / total:.0f} % idle")
PY
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
echo "kd serve RSS after the load and four 25 MiB batches: $(awk '/VmRSS/ {printf "%.0f MB", $2 / 1024}' /proc/"$KD_PID"/status)"
