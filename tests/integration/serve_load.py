"""`kd serve` under requests that cost the server far more than they cost the client (issue 33):
images decoded and gzip bodies inflated off the I/O thread, so that a health probe is answered in
milliseconds meanwhile; /runs/report with one run named thousands of times; a symbolic link that
points out of --runs; an input far larger than --max-batch, run in max-batch forward passes.
Usage: serve_load.py KD_BINARY WORK_DIR"""
import concurrent.futures as cf
import gzip
import io
import json
import os
import shutil
import struct
import sys
import threading
import time

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from serve_common import Checks, Server, make_runs  # noqa: E402

KD, WORK = sys.argv[1], sys.argv[2]
c = Checks()
cls_run, _, _ = make_runs(KD, os.path.join(WORK, "runs"))  # made by the ctest fixture
# ASan and UBSan slow every request, the probes' included.
PROBE_LIMIT = 1.0 if os.environ.get("KD_SANITIZED") else 0.25


def probe_while(work):
    """Runs work() on a thread while probing /v2/health/live every 20 ms on fresh connections:
    (work's result, the slowest probe in seconds, probes sent)."""
    result, done = {}, threading.Event()

    def run():
        try:
            result["value"] = work()
        finally:
            done.set()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.05)  # the work is on its way
    worst, probes = 0.0, 0
    while not done.is_set():
        start = time.monotonic()
        try:
            ok = requests.get(server.url + "/v2/health/live", timeout=5).status_code == 200
        except requests.RequestException:
            ok = False
        worst = max(worst, time.monotonic() - start if ok else 5.0)
        probes += 1
        time.sleep(0.02)
    t.join()
    return result.get("value"), worst, probes


server = Server(KD, [f"m={cls_run}", "--http-threads", "4"], os.path.join(WORK, "load.log"))

# 5. 30 one-bit 4096 x 4096 PNGs (2 KB each, 16.8 M pixels: within --max-image-pixels) in one
# 62 KiB binary request: each decodes in ~0.2 s. Before: decoded on the I/O thread, every other
# connection waited 5 s.
buf = io.BytesIO()
Image.new("1", (4096, 4096)).save(buf, "PNG")
png = buf.getvalue()
blob = b"".join(struct.pack("<I", len(png)) + png for _ in range(30))
header = json.dumps({"inputs": [{"name": "img", "shape": [30], "datatype": "BYTES",
                                 "parameters": {"binary_data_size": len(blob)}}]}).encode()


def send_images():
    return requests.post(server.url + "/v2/models/m/infer", data=header + blob, timeout=120,
                         headers={"Inference-Header-Content-Length": str(len(header)),
                                  "Content-Type": "application/octet-stream"}).status_code


status, worst, probes = probe_while(send_images)
c.ok(f"30 large PNGs in {len(header + blob) >> 10} KiB: 200, health probes meanwhile at worst "
     f"{worst * 1000:.0f} ms ({probes} probes, limit {PROBE_LIMIT * 1000:.0f} ms)",
     status == 200 and probes >= 3 and worst < PROBE_LIMIT, (status, worst, probes))

# The same images as base64 in JSON.
import base64  # noqa: E402
body = json.dumps({"inputs": [{"name": "img", "shape": [15], "datatype": "BYTES",
                               "data": [base64.b64encode(png).decode()] * 15}]})
status, worst, probes = probe_while(
    lambda: requests.post(server.url + "/v2/models/m/infer", data=body, timeout=120).status_code)
c.ok(f"15 large PNGs as base64 JSON: 200, probes at worst {worst * 1000:.0f} ms ({probes} probes)",
     status == 200 and probes >= 2 and worst < PROBE_LIMIT, (status, worst, probes))

# 7. gzip bodies of 32 KiB inflating to 32 MiB, 8 clients x 4: inflated on the handler pool.
bomb = gzip.compress(b" " * (32 << 20))


def send_bombs():
    def one(_):
        return requests.post(server.url + "/v2/models/m/infer", data=bomb, timeout=120,
                             headers={"Content-Encoding": "gzip"}).status_code
    with cf.ThreadPoolExecutor(8) as ex:
        return list(ex.map(one, range(32)))


codes, worst, probes = probe_while(send_bombs)
c.ok(f"32 gzip bodies of {len(bomb) >> 10} KiB -> 32 MiB from 8 clients: answered ({sorted(set(codes))}), probes "
     f"at worst {worst * 1000:.0f} ms ({probes} probes)",
     all(400 <= s < 500 for s in codes) and probes >= 2 and worst < PROBE_LIMIT, (codes[:4], worst, probes))

# 10. An input of 300 images with --max-batch 32 (default): forward passes of at most 32 rows.
x = np.random.default_rng(0).random((300, 1, 28, 28), dtype=np.float32)
r = requests.post(server.url + "/v2/models/m/infer", timeout=60, data=json.dumps(
    {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}))
metrics = requests.get(server.url + "/metrics").text
largest = [line for line in metrics.splitlines() if line.startswith("kd_batch_size_bucket") and 'le="32"' in line]
count = [line for line in metrics.splitlines() if line.startswith("kd_batch_size_count")]
within = float(largest[0].rsplit(" ", 1)[1]) if largest else -1
total = float(count[0].rsplit(" ", 1)[1]) if count else -2
c.ok(f"300 images in one request: 200 with 300 rows, every forward pass <= 32 rows ({within:.0f} of {total:.0f})",
     r.status_code == 200 and len(r.json()["outputs"][0]["data"]) == 3000 and within == total and total >= 10,
     (r.status_code, largest, count))
c.ok("server exits 0 on SIGTERM", server.stop() == 0)

# 8, 9. The runs dashboard: a run named 3,000 times is reported once; more than 100 runs are
# refused; a link to a run outside --runs is not one of its runs.
dash = os.path.join(WORK, "load-runs")
shutil.rmtree(dash, ignore_errors=True)
os.makedirs(dash)
shutil.copytree(cls_run, os.path.join(dash, "a"), ignore=shutil.ignore_patterns(".lock"))
outside = os.path.join(WORK, "outside-secret-run")
shutil.rmtree(outside, ignore_errors=True)
shutil.copytree(cls_run, outside, ignore=shutil.ignore_patterns(".lock"))
os.symlink(outside, os.path.join(dash, "escape"))
server = Server(KD, [f"m={cls_run}", "--runs", dash], os.path.join(WORK, "load-runs.log"))
index = requests.get(server.url + "/runs/index.json").json()
paths = [row["path"] for row in index["runs"]]
c.ok(f"a symbolic link out of --runs is not listed ({paths})", paths == ["a"], paths)
for route in ("curves", "report"):
    r = requests.get(server.url + f"/runs/{route}?runs=escape")
    c.ok(f"/runs/{route}?runs=escape: 404", r.status_code == 404, r.status_code)
one = requests.get(server.url + "/runs/report?runs=a")
start = time.monotonic()
many = requests.get(server.url + "/runs/report?runs=" + ",".join(["a"] * 3000), timeout=60)
seconds = time.monotonic() - start
c.ok(f"runs=a x 3000: the page of one run ({len(many.content) >> 10} KiB against {len(one.content) >> 10} KiB, "
     f"{seconds:.2f} s)", many.status_code == 200 and len(many.content) < 2 * len(one.content), many.status_code)
r = requests.get(server.url + "/runs/report?runs=" + ",".join(f"x{i}" for i in range(101)))
c.ok("101 different runs named: 400", r.status_code == 400 and "at most 100" in r.text, (r.status_code, r.text[:200]))
c.ok("dashboard server exits 0 on SIGTERM", server.stop() == 0)
c.done()
