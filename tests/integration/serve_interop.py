"""`kd serve` as the stock Open Inference Protocol clients see it: requests built byte for byte as
tritonclient.http and KServe's InferRequest build them in their default (binary tensor data)
mode, with and without named outputs, every input datatype kd accepts, and the model config,
statistics and repository index routes Triton tooling reads. Each answer is compared with the
plain JSON route's.
Usage: serve_interop.py KD_BINARY WORK_DIR"""
import io
import json
import os
import struct
import sys

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from serve_common import Checks, Server, fmnist_images, make_runs  # noqa: E402

KD, WORK = sys.argv[1], sys.argv[2]
c = Checks()
cls_run, det_run, det_data = make_runs(KD, os.path.join(WORK, "runs"))
images, _ = fmnist_images(8)
server = Server(KD, [f"m={cls_run}", f"det={det_run}", "--max-batch", "8"], os.path.join(WORK, "interop.log"))
URL = server.url
DT = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "UINT8": "u1", "INT32": "<i4"}


class TritonInput:
    """tritonclient.http.InferInput: set_data_from_numpy(array, binary_data=True)."""

    def __init__(self, name, shape, datatype):
        self.name, self.shape, self.datatype = name, list(shape), datatype
        self.parameters, self.data, self.raw = {}, None, None

    def set_data_from_numpy(self, array, binary_data=True):
        if self.datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(b)) + b for b in array.flatten())
        else:
            raw = array.astype(DT[self.datatype]).tobytes()
        if binary_data:
            self.raw = raw
            self.parameters["binary_data_size"] = len(raw)
        else:
            self.data = array.flatten().tolist()

    def tensor(self):
        t = {"name": self.name, "shape": self.shape, "datatype": self.datatype}
        if self.parameters:
            t["parameters"] = self.parameters
        if self.data is not None:
            t["data"] = self.data
        return t


def triton_request(inputs, outputs=None, request_id=""):
    """tritonclient.http's _get_inference_request: (body, json_size or None)."""
    req, params = {}, {}
    if request_id:
        req["id"] = request_id
    req["inputs"] = [i.tensor() for i in inputs]
    if outputs:
        req["outputs"] = [{"name": n, "parameters": {"binary_data": b}} for n, b in outputs]
    else:
        params["binary_data_output"] = True
    if params:
        req["parameters"] = params
    body = json.dumps(req)
    raw = b"".join(i.raw for i in inputs if i.raw is not None)
    if raw:
        return body.encode() + raw, len(body)
    return body.encode(), None


def post_infer(model, body, json_size):
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return requests.post(f"{URL}/v2/models/{model}/infer", data=body, headers=headers, timeout=30)


def outputs_of(r):
    """tritonclient.http.InferResult: each output as a numpy array."""
    size = r.headers.get("Inference-Header-Content-Length")
    head = json.loads(r.content[:int(size)] if size else r.content)
    at, out = int(size) if size else 0, {}
    for o in head["outputs"]:
        n = o.get("parameters", {}).get("binary_data_size")
        if n is not None:
            out[o["name"]] = np.frombuffer(r.content[at:at + n], dtype=DT[o["datatype"]]).reshape(o["shape"])
            at += n
        else:
            out[o["name"]] = np.array(o["data"], dtype=DT[o["datatype"]]).reshape(o["shape"])
    return head, out


X = (images[:4].astype(np.float32) / 255).reshape(4, 1, 28, 28)
ref = requests.post(f"{URL}/v2/models/m/infer", json={"inputs": [{"name": "input", "shape": [4, 1, 28, 28],
                                                                  "datatype": "FP32", "data": X.flatten().tolist()}]})
ref_logits = np.array(ref.json()["outputs"][0]["data"], dtype=np.float32).reshape(4, -1)

# tritonclient's default: binary inputs, no outputs named -> every output in binary.
inp = TritonInput("input", X.shape, "FP32")
inp.set_data_from_numpy(X)
r = post_infer("m", *triton_request([inp], request_id="r1"))
head, out = outputs_of(r)
c.ok("tritonclient default (binary in, all outputs binary): 200 with Inference-Header-Content-Length",
     r.status_code == 200 and "Inference-Header-Content-Length" in r.headers, r.text[:200])
c.ok("... logits equal the JSON route's", np.allclose(out.get("logits", 0), ref_logits, atol=1e-6))
c.ok("... probabilities sum to 1, id echoed", np.allclose(out["probabilities"].sum(1), 1, atol=1e-5)
     and head.get("id") == "r1")
# Named outputs, one binary and one JSON.
r = post_infer("m", *triton_request([inp], outputs=[("logits", True), ("probabilities", False)]))
head, out = outputs_of(r)
c.ok("named outputs: logits binary, probabilities JSON",
     r.status_code == 200 and "parameters" in head["outputs"][0] and "data" in head["outputs"][1]
     and np.allclose(out["logits"], ref_logits, atol=1e-6), r.text[:200])
# JSON inputs, binary outputs (InferInput with binary_data=False).
inp_json = TritonInput("input", X.shape, "FP32")
inp_json.set_data_from_numpy(X, binary_data=False)
body, size = triton_request([inp_json], outputs=[("logits", True)])
r = post_infer("m", body, len(body))
c.ok("JSON inputs, binary output requested", r.status_code == 200 and
     np.allclose(outputs_of(r)[1]["logits"], ref_logits, atol=1e-6), r.text[:200])
# KServe's InferRequest.to_rest() in binary mode: "data": null beside binary_data_size.
kserve = {"id": "k", "inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32", "data": None,
                                 "parameters": {"binary_data_size": X.nbytes}}],
          "parameters": {"binary_data_output": True}}
kbody = json.dumps(kserve).encode()
r = post_infer("m", kbody + X.tobytes(), len(kbody))
c.ok("KServe binary request (data: null): logits equal the JSON route's",
     r.status_code == 200 and np.allclose(outputs_of(r)[1]["logits"], ref_logits, atol=1e-6), r.text[:200])

# Other datatypes: UINT8 pixels (divided by 255), FP16, FP64, BYTES (raw PNG bytes).
for dt, arr, tol in [("UINT8", images[:4].reshape(4, 1, 28, 28), 1e-5), ("FP16", X.astype(np.float16), 5e-2),
                     ("FP64", X.astype(np.float64), 1e-5)]:
    i = TritonInput("input", arr.shape, dt)
    i.set_data_from_numpy(arr)
    r = post_infer("m", *triton_request([i]))
    c.ok(f"{dt} binary input: logits match FP32's", r.status_code == 200 and
         np.allclose(outputs_of(r)[1]["logits"], ref_logits, atol=tol), r.text[:200])
pngs = []
for k in range(4):
    buf = io.BytesIO()
    Image.fromarray(images[k]).save(buf, format="PNG")
    pngs.append(buf.getvalue())
i = TritonInput("input", [4], "BYTES")
i.set_data_from_numpy(np.array(pngs, dtype=object))
r = post_infer("m", *triton_request([i]))
c.ok("BYTES binary input (raw PNGs): logits match FP32's", r.status_code == 200 and
     np.allclose(outputs_of(r)[1]["logits"], ref_logits, atol=1e-4), r.text[:200])

# A detector's outputs in binary: INT32 and FP32 tensors.
det_png = open(os.path.join(det_data, "images", "test_000001.png"), "rb").read()
i = TritonInput("input", [1], "BYTES")
i.set_data_from_numpy(np.array([det_png], dtype=object))
r = post_infer("det", *triton_request([i]))
head, out = outputs_of(r)
c.ok("detector, binary outputs: INT32 num_detections and FP32 boxes decode",
     r.status_code == 200 and out["num_detections"].dtype == np.int32 and out["detection_boxes"].shape[-1] == 4,
     r.text[:200])

# Bad binary requests: one line, 400.
body, size = triton_request([inp])
for what, b, s in [("binary_data_size past the body", body[:-8], size),
                   ("Inference-Header-Content-Length past the body", body, len(body) + 1),
                   ("bytes left over after the inputs", body + b"xx", size),
                   ("binary_data_size without the header", body, None)]:
    r = post_infer("m", b, s)
    c.ok(f"{what}: 400", r.status_code == 400 and "error" in r.json(), r.text[:200])
nan = TritonInput("input", X.shape, "FP32")
nan.set_data_from_numpy(np.full_like(X, np.nan))
r = post_infer("m", *triton_request([nan]))
c.ok("NaN in binary FP32: 400", r.status_code == 400 and "finite" in r.json()["error"], r.text[:200])

# Triton's model config, statistics and repository index. Model m has answered 9 requests of 4
# images each and refused 5.
cfg = requests.get(f"{URL}/v2/models/m/config").json()
c.ok("config: max_batch_size, input dims, outputs",
     cfg.get("max_batch_size") == 8 and cfg["input"][0]["dims"] == [1, 28, 28]
     and [o["name"] for o in cfg["output"]] == ["logits", "probabilities"], cfg)
st = requests.get(f"{URL}/v2/models/m/stats").json()["model_stats"][0]
succ = st["inference_stats"]["success"]
c.ok(f"stats: {succ['count']} successful requests, {st['inference_count']} rows in {st['execution_count']} batches",
     succ["count"] == 9 and st["inference_count"] == 36 and 1 <= st["execution_count"] <= 9
     and st["inference_stats"]["fail"]["count"] == 5 and st["batch_stats"][0]["batch_size"] == 4, st)
allst = requests.get(f"{URL}/v2/models/stats").json()["model_stats"]
c.ok("stats of every model", sorted(s["name"] for s in allst) == ["det", "m"])
idx = requests.post(f"{URL}/v2/repository/index", json={"ready": True}).json()
c.ok("repository index: both models READY",
     sorted((m["name"], m["state"]) for m in idx) == [("det", "READY"), ("m", "READY")], idx)

c.ok("server exits 0 on SIGTERM", server.stop() == 0)
c.done()
