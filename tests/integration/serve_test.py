"""`kd serve` and `kd export` through the real binary, as clients see them: the Open Inference
Protocol v2 REST API, the /v1 predict alias, image upload, metrics, API key, dynamic batching,
the bounded queue, every kind of bad request (a 4xx with a JSON error, never a crash), memory
under thousands of mixed requests, and the exported TorchScript checked in PyTorch Python
against the served model's outputs.
Usage: serve_test.py KD_BINARY WORK_DIR"""
import base64
import concurrent.futures as cf
import io
import json
import os
import random
import re
import struct
import sys
import zlib

import numpy as np
import requests
import torch

sys.path.insert(0, os.path.dirname(__file__))
from serve_common import Checks, Server, fmnist_images, make_runs, run, write_png  # noqa: E402

KD, WORK = sys.argv[1], sys.argv[2]
KEY = "test-key-123"
c = Checks()
cls_run, det_run, det_data = make_runs(KD, os.path.join(WORK, "runs"))  # made by the ctest fixture
images, labels = fmnist_images(64)
png0 = write_png(images[0], os.path.join(WORK, "fm0.png"))
PNG0 = open(png0, "rb").read()
DET_PNG = open(os.path.join(det_data, "images", "test_000001.png"), "rb").read()
jpg_buf = io.BytesIO()
from PIL import Image  # noqa: E402
Image.fromarray(images[1]).convert("RGB").save(jpg_buf, format="JPEG")
JPG1 = jpg_buf.getvalue()

server = Server(KD, [cls_run, f"det={det_run}", "--api-key", KEY, "--max-batch", "16", "--max-wait-ms", "5",
                     "--max-body-mb", "1", "--max-tensor-elements", "100000", "--max-image-pixels", "1000000"],
                os.path.join(WORK, "server.log"))
URL = server.url
S = requests.Session()
S.headers["Authorization"] = f"Bearer {KEY}"


def post(path, body=None, data=None, headers=None, session=S):
    if body is not None:
        data = json.dumps(body)
    return session.post(URL + path, data=data, headers=headers or {}, timeout=30)


def infer_body(x, name="input-0", **extra):
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}], **extra}


# --- health, metadata, auth -------------------------------------------------------------------
c.ok("health/live without a key", requests.get(URL + "/v2/health/live").json() == {"live": True})
c.ok("health/ready without a key", requests.get(URL + "/v2/health/ready").status_code == 200)
r = requests.get(URL + "/v2")
c.ok("no key: 401 with a JSON error", r.status_code == 401 and "API key" in r.json()["error"], r.text)
r = requests.get(URL + "/v2", headers={"Authorization": "Bearer wrong"})
c.ok("wrong key: 401", r.status_code == 401)
c.ok("server metadata", S.get(URL + "/v2").json()["name"] == "kd")
meta = S.get(URL + "/v2/models/cls").json()
c.ok("model metadata: input shape and datatype",
     meta["inputs"][0]["shape"] == [-1, 1, 28, 28] and meta["inputs"][0]["datatype"] == "FP32", meta)
c.ok("model metadata: outputs", [o["name"] for o in meta["outputs"]] == ["logits", "probabilities"], meta)
c.ok("model ready", S.get(URL + "/v2/models/cls/ready").json()["ready"] is True)
c.ok("versioned route", S.get(URL + "/v2/models/cls/versions/1/ready").status_code == 200)
dmeta = S.get(URL + "/v2/models/det").json()
c.ok("detector metadata: EfficientNMS-style outputs",
     [o["name"] for o in dmeta["outputs"]] == ["num_detections", "detection_boxes", "detection_scores",
                                               "detection_classes", "raw"], dmeta)
c.ok("model list", sorted(m["name"] for m in S.get(URL + "/v2/models").json()["models"]) == ["cls", "det"])

# --- inference --------------------------------------------------------------------------------
x = images[:4].astype(np.float32)[:, None] / 255.0
r = post("/v2/models/cls/infer", infer_body(x, id="req-1"))
c.ok("infer: 200", r.status_code == 200, r.text[:300])
out = {o["name"]: o for o in r.json()["outputs"]}
logits = np.array(out["logits"]["data"], dtype=np.float32).reshape(out["logits"]["shape"])
c.ok("infer: id echoed, shapes", r.json()["id"] == "req-1" and out["logits"]["shape"] == [4, 10])
probs = np.array(out["probabilities"]["data"]).reshape(4, 10)
c.ok("infer: probabilities are the softmax of the logits",
     np.allclose(probs, torch.softmax(torch.tensor(logits), 1).numpy(), atol=1e-6))
nested = {"inputs": [{"name": "x", "shape": [4, 1, 28, 28], "datatype": "FP32", "data": x.tolist()}],
          "outputs": [{"name": "logits"}]}
r = post("/v2/models/cls/infer", nested)
c.ok("infer: nested data and an output subset give the same logits",
     r.status_code == 200 and len(r.json()["outputs"]) == 1 and
     np.allclose(np.array(r.json()["outputs"][0]["data"]).reshape(4, 10), logits, atol=1e-6))
b64 = base64.b64encode(PNG0).decode()
r = post("/v2/models/cls/infer", {"inputs": [{"name": "img", "shape": [1], "datatype": "BYTES", "data": [b64]}]})
c.ok("infer: a BYTES (base64 PNG) input gives the pixels' logits",
     r.status_code == 200 and np.allclose(np.array(r.json()["outputs"][0]["data"]), logits[0], atol=1e-5), r.text[:200])
r = post("/v1/models/cls:predict", {"instances": x[:2].tolist()})
preds = r.json().get("predictions", [])
c.ok("v1 predict with tensors", r.status_code == 200 and len(preds) == 2 and
     preds[0]["index"] == int(logits[0].argmax()) and abs(sum(preds[0]["probabilities"]) - 1) < 1e-4, r.text[:200])
r = post("/v1/models/cls:predict", {"instances": [{"b64": b64}, {"b64": base64.b64encode(JPG1).decode()}]})
c.ok("v1 predict with b64 PNG and JPEG", r.status_code == 200 and len(r.json()["predictions"]) == 2, r.text[:200])
r = post("/v2/models/cls/image?top_k=3", data=PNG0, headers={"Content-Type": "image/png"})
c.ok("image upload (raw PNG): top 3 classes", r.status_code == 200 and len(r.json()["classes"]) == 3 and
     r.json()["classes"][0]["index"] == int(logits[0].argmax()), r.text[:200])
r = post("/v2/models/cls/image", {"b64": b64})
c.ok("image upload (base64 in JSON)", r.status_code == 200 and r.json()["width"] == 28)
r = post("/v2/models/det/image?score=0.05", data=DET_PNG, headers={"Content-Type": "image/png"})
dets = r.json().get("detections", [])
c.ok("detector image upload: boxes inside the image", r.status_code == 200 and all(
    0 <= d["bbox"][0] and d["bbox"][0] + d["bbox"][2] <= r.json()["width"] + 1e-3 for d in dets), r.text[:300])
dx = torch.rand(2, 3, 64, 64).numpy()
r = post("/v2/models/det/infer", infer_body(dx))
douts = {o["name"]: o for o in r.json().get("outputs", [])}
c.ok("detector infer: output shapes", r.status_code == 200 and douts["detection_boxes"]["shape"] == [2, 100, 4] and
     douts["num_detections"]["shape"] == [2, 1] and douts["detection_classes"]["datatype"] == "INT32", r.text[:300])

# --- export, checked in PyTorch Python against what the server answers ------------------------
for name, run_dir, xin, out_name in [("cls", cls_run, x, "logits"), ("det", det_run, dx, "raw")]:
    pt = os.path.join(WORK, f"{name}.pt")
    info = json.loads(run([KD, "export", run_dir, "--format", "torchscript", "--out", pt]))
    desc = json.load(open(info["description"]))
    m = torch.jit.load(pt)
    mean = torch.tensor(desc["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(desc["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        y = m((torch.tensor(xin) - mean) / std).numpy()
    served = post(f"/v2/models/{name}/infer", infer_body(xin, outputs=[{"name": out_name}])).json()["outputs"][0]
    kd_y = np.array(served["data"], dtype=np.float32).reshape(served["shape"])
    c.ok(f"export {name}: PyTorch Python's outputs {list(y.shape)} equal the served model's",
         list(y.shape) == served["shape"] and np.allclose(y, kd_y, atol=1e-4),
         f"max diff {np.abs(y - kd_y).max() if y.shape == kd_y.shape else 'shape'}")
    c.ok(f"export {name}: description has task, classes, normalization, input shape",
         all(k in desc for k in ("task", "class_names", "mean", "std", "input_shape")) and
         desc["input"]["shape"][1:] == list(xin.shape[1:]))
    c.ok(f"export {name}: state_dict keeps kd's parameter names", all("." in k for k in m.state_dict()))
    # ONNX: python3-onnx's checker with its shape inference (OpenCV runs the files: test_graphs.cpp).
    if "onnx on" not in run([KD, "--version"]):
        continue  # a build without ONNX export (KD_WITH_ONNX=OFF); integrity_test.sh checks its refusal
    import onnx
    onnx_path = os.path.join(WORK, f"{name}.onnx")
    oinfo = json.loads(run([KD, "export", run_dir, "--format", "onnx", "--out", onnx_path]))
    om = onnx.load(onnx_path)
    onnx.checker.check_model(om, full_check=True)
    dims = [d.dim_param or d.dim_value for d in om.graph.output[0].type.tensor_type.shape.dim]
    c.ok(f"export {name} as ONNX: passes onnx.checker (full), output [batch, {', '.join(map(str, y.shape[1:]))}]",
         oinfo["checked"] == "onnx.checker" and dims == ["batch", *y.shape[1:]] and
         json.load(open(oinfo["description"]))["format"] == "onnx", dims)

# --- bad requests: each a 4xx with a JSON error naming what was wrong --------------------------
def png_claiming(width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


good = infer_body(x[:1])
bad_cases = [
    ("malformed JSON", "/v2/models/cls/infer", dict(data="{\"inputs\": [}"), 400, "malformed JSON"),
    ("body not an object", "/v2/models/cls/infer", dict(body=[1, 2]), 400, "JSON object"),
    ("no inputs", "/v2/models/cls/infer", dict(body={"outputs": []}), 400, "'inputs'"),
    ("wrong shape", "/v2/models/cls/infer", dict(body=infer_body(np.zeros((1, 3, 28, 28), np.float32))), 400,
     "does not match the model's input"),
    ("wrong datatype", "/v2/models/cls/infer",
     dict(body={"inputs": [{**good["inputs"][0], "datatype": "INT64"}]}), 400, "datatype INT64"),
    ("data shorter than shape", "/v2/models/cls/infer",
     dict(body={"inputs": [{**good["inputs"][0], "data": [0.5] * 100}]}), 400, "holds 784 elements but data has 100"),
    ("a string among numbers", "/v2/models/cls/infer",
     dict(body={"inputs": [{**good["inputs"][0], "data": ["a"] + [0.5] * 783}]}), 400, "not a number"),
    ("too many elements", "/v2/models/cls/infer",
     dict(body={"inputs": [{"name": "i", "shape": [200, 1, 28, 28], "datatype": "FP32", "data": [0]}]}), 400,
     "more than the limit"),
    ("nesting too deep", "/v2/models/cls/infer",
     dict(data='{"inputs":[{"name":"i","shape":[1,1,28,28],"datatype":"FP32","data":' + "[" * 5000 + "]" * 5000 + "}]}"),
     400, "deep"),
    ("unknown output", "/v2/models/cls/infer", dict(body={**good, "outputs": [{"name": "boxes"}]}), 400,
     "has no output 'boxes'"),
    ("Inference-Header-Content-Length cutting the JSON", "/v2/models/cls/infer",
     dict(body=good, headers={"Inference-Header-Content-Length": "10"}), 400, "malformed JSON"),
    ("Inference-Header-Content-Length not a number", "/v2/models/cls/infer",
     dict(body=good, headers={"Inference-Header-Content-Length": "1e3"}), 400, "is not a byte count"),
    ("unknown model", "/v2/models/nope/infer", dict(body=good), 404, "no model named 'nope'"),
    ("wrong method", "/v2/models/cls/ready", dict(body=good), 405, "does not accept POST"),
    ("unknown route", "/v3/x", dict(body=good), 404, "no route"),
    ("undecodable image", "/v2/models/cls/image", dict(data=b"not an image"), 400, "not a PNG or JPEG"),
    ("truncated PNG", "/v2/models/cls/image", dict(data=PNG0[:60]), 400, "truncated PNG"),
    ("image with too many pixels", "/v2/models/cls/image", dict(data=png_claiming(50000, 50000)), 400,
     "more than the limit"),
    ("bad base64", "/v2/models/cls/image", dict(body={"b64": "@@@"}), 400, "not base64"),
    ("BYTES of shape [0] holding an image", "/v2/models/cls/infer",
     dict(body={"inputs": [{"name": "i", "shape": [0], "datatype": "BYTES", "data": [b64]}]}), 400,
     "holds 0 elements but data has 1"),
    ("an output asked for twice", "/v2/models/cls/infer",
     dict(body={"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "data": [b64]}],
                "outputs": [{"name": "logits"}, {"name": "logits"}]}), 400, "asked for twice"),
    ("bad base64 in BYTES", "/v2/models/cls/infer",
     dict(body={"inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "data": ["%%"]}]}), 400, "not base64"),
    ("v1 instance of the wrong size", "/v1/models/cls:predict", dict(body={"instances": [[0.1] * 10]}), 400,
     "the model takes 784"),
    ("empty body", "/v2/models/cls/infer", dict(data=""), 400, "empty body"),
    ("bad query value", "/v2/models/cls/image?top_k=zero", dict(data=PNG0), 400, "top_k"),
    ("body over --max-body-mb", "/v2/models/cls/infer", dict(data="x" * (2 << 20)), 413, "larger than the limit"),
]
for what, path, kw, code, needle in bad_cases:
    r = post(path, **kw)
    try:
        msg = r.json().get("error", "")
    except ValueError:
        msg = f"(not JSON: {r.text[:80]!r})"
    c.ok(f"{what}: {code} '{needle}'", r.status_code == code and needle in msg, f"{r.status_code} {msg}")
c.ok("server still healthy after bad requests", requests.get(URL + "/v2/health/ready").status_code == 200)

# --- concurrency: requests from 32 clients are batched together, answers split back right ------
def one(i):
    sess = requests.Session()
    sess.headers["Authorization"] = f"Bearer {KEY}"
    k = i % 4
    r = post("/v2/models/cls/infer", infer_body(x[k:k + 1]), session=sess)
    return k, np.array(r.json()["outputs"][0]["data"], dtype=np.float32) if r.status_code == 200 else None


def metric(text, name, labels=""):
    m = re.search(re.escape(name) + r"\{" + labels + r"[^}]*\} ([0-9.e+-]+)", text)
    return float(m.group(1)) if m else None


before = S.get(URL + "/metrics").text
with cf.ThreadPoolExecutor(32) as pool:
    results = list(pool.map(one, range(640)))
after = S.get(URL + "/metrics").text
c.ok("640 concurrent requests: each gets its own input's logits",
     all(y is not None and np.allclose(y, logits[k], atol=1e-5) for k, y in results))
batches = metric(after, "kd_batch_size_count", 'model="cls"') - metric(before, "kd_batch_size_count", 'model="cls"')
c.ok(f"dynamic batching: 640 requests ran in {batches:.0f} batches", batches < 640, f"{batches}")
c.ok("metrics: request counter by model, route and code",
     metric(after, "kd_http_requests_total", 'model="cls",route="infer",code="200"') >= 640)
c.ok("metrics: errors by code", metric(after, "kd_http_errors_total", 'model="cls",code="400"') >= 10)
c.ok("metrics: latency histogram and queue depth",
     'kd_http_request_duration_seconds_bucket{model="cls",route="infer",le="+Inf"}' in after and
     metric(after, "kd_queue_depth", 'model="cls"') is not None)

# --- memory stays flat under thousands of mixed good and bad requests ------------------------
mixed = [("/v2/models/cls/infer", dict(body=good))] * 3 + [(p, kw) for _, p, kw, code, _ in bad_cases if code != 413] + [
    ("/v2/models/det/image", dict(data=DET_PNG)), ("/v2/models/cls/image", dict(data=JPG1))]


def mixed_request(i):
    sess = requests.Session()
    sess.headers["Authorization"] = f"Bearer {KEY}"
    path, kw = mixed[i % len(mixed)]
    return post(path, session=sess, **kw).status_code


# Warm-up first (allocator caches of the 64 HTTP threads, per-thread parsers), then two equal
# rounds: a leak grows with the requests, so the second round must not add memory.
with cf.ThreadPoolExecutor(8) as pool:
    codes = list(pool.map(mixed_request, range(1500)))
rss = [server.rss_kib()]
for _ in range(2):
    with cf.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(mixed_request, range(2500)))
    rss.append(server.rss_kib())
c.ok(f"5000 mixed requests: only 200/4xx answers ({codes.count(200)} of the last 2500 ok)",
     all(code == 200 or 400 <= code < 500 for code in codes))
if os.environ.get("KD_SANITIZED"):
    # ASan's quarantine holds freed memory on purpose; LeakSanitizer checks the server at exit.
    print("ok   memory: checked by LeakSanitizer when the server exits (RSS {:.1f} -> {:.1f} MiB under ASan)".format(
        rss[0] / 1024, rss[2] / 1024))
else:
    c.ok("memory flat: RSS {:.1f} -> {:.1f} -> {:.1f} MiB".format(*(r / 1024 for r in rss)),
         rss[2] - rss[1] < 4 * 1024 and rss[2] - rss[0] < 16 * 1024, f"{rss}")
c.ok("SIGTERM stops the server cleanly (exit 0: under ASan, also no leaks)", server.stop() == 0)

# --- a full queue answers 503 instead of growing ----------------------------------------------
small = Server(KD, [det_run, "--max-queue", "1", "--max-batch", "1", "--max-wait-ms", "0"],
               os.path.join(WORK, "server-queue.log"))


def burst(_):
    r = requests.post(small.url + "/v2/models/det0/image", data=DET_PNG, timeout=30)
    return r.status_code, r.headers.get("Retry-After"), r.json()


with cf.ThreadPoolExecutor(48) as pool:
    answers = list(pool.map(burst, range(96)))
codes = [a[0] for a in answers]
refused = [a for a in answers if a[0] == 503]
c.ok(f"bounded queue: {len(refused)} of 96 burst requests refused with 503, the rest answered",
     len(refused) > 0 and codes.count(200) + len(refused) == 96)
c.ok("503 carries Retry-After and says the queue is full",
     refused and refused[0][1] == "1" and "queue is full" in refused[0][2]["error"])
c.ok("server survives the burst", requests.get(small.url + "/v2/health/live").status_code == 200)
small.stop()

# --- startup errors: one clear line, exit 1 ----------------------------------------------------
for what, args, needle in [("missing run", ["no-such-run"], "no-such-run"),
                           ("same name twice", [cls_run, cls_run], "two models are named 'cls'")]:
    r = __import__("subprocess").run([KD, "serve", *args, "--port", "0"], capture_output=True, text=True, timeout=60)
    lines = [l for l in r.stderr.splitlines() if not l.startswith("[")]
    c.ok(f"kd serve {what}: exit 1, one line", r.returncode == 1 and len(lines) == 1 and needle in lines[0], r.stderr)
c.done()
