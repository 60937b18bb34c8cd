"""`kd serve --grpc-port`: the Open Inference Protocol over gRPC as python3-grpcio clients call it
(the messages compiled from src/serve/proto/grpc_predict_v2.proto by protoc, the methods called
by their full names as a generated stub does): health, metadata, ModelInfer with raw_input_contents
and with typed contents, BYTES images, a detector, the API key, bad requests with their gRPC
codes, concurrent calls sharing the batcher with HTTP, and a busy port.
Usage: serve_grpc.py KD_BINARY WORK_DIR PROTO_FILE"""
import concurrent.futures as cf
import io
import os
import subprocess
import sys

import grpc
import numpy as np
import requests
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from serve_common import Checks, Server, fmnist_images, make_runs  # noqa: E402

KD, WORK, PROTO = sys.argv[1], sys.argv[2], sys.argv[3]
out = os.path.join(WORK, "grpc_py")
os.makedirs(out, exist_ok=True)
subprocess.run(["protoc", f"--proto_path={os.path.dirname(PROTO)}", f"--python_out={out}", PROTO], check=True)
sys.path.insert(0, out)
import grpc_predict_v2_pb2 as pb  # noqa: E402

c = Checks()
cls_run, det_run, det_data = make_runs(KD, os.path.join(WORK, "runs"))
images, _ = fmnist_images(8)
KEY = "grpc-key"
server = Server(KD, [f"m={cls_run}", f"det={det_run}", "--grpc-port", "0", "--api-key", KEY],
                os.path.join(WORK, "grpc.log"))


def stub(method, req_cls, resp_cls):
    return channel.unary_unary(f"/inference.GRPCInferenceService/{method}",
                               request_serializer=req_cls.SerializeToString,
                               response_deserializer=resp_cls.FromString)


channel = grpc.insecure_channel(server.info["grpc"])
AUTH = [("authorization", f"Bearer {KEY}")]
ServerLive = stub("ServerLive", pb.ServerLiveRequest, pb.ServerLiveResponse)
ServerReady = stub("ServerReady", pb.ServerReadyRequest, pb.ServerReadyResponse)
ModelReady = stub("ModelReady", pb.ModelReadyRequest, pb.ModelReadyResponse)
ServerMetadata = stub("ServerMetadata", pb.ServerMetadataRequest, pb.ServerMetadataResponse)
ModelMetadata = stub("ModelMetadata", pb.ModelMetadataRequest, pb.ModelMetadataResponse)
ModelInfer = stub("ModelInfer", pb.ModelInferRequest, pb.ModelInferResponse)


def code_of(call, *args, **kw):
    try:
        call(*args, **kw)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


c.ok("ServerLive / ServerReady (no key needed)",
     ServerLive(pb.ServerLiveRequest()).live and ServerReady(pb.ServerReadyRequest()).ready)
meta = ModelMetadata(pb.ModelMetadataRequest(name="m"), metadata=AUTH)
c.ok("ModelMetadata: input and outputs", meta.name == "m" and list(meta.inputs[0].shape) == [-1, 1, 28, 28]
     and [o.name for o in meta.outputs] == ["logits", "probabilities"], str(meta)[:300])
c.ok("ModelReady m: ready; nope: not ready", ModelReady(pb.ModelReadyRequest(name="m"), metadata=AUTH).ready
     and not ModelReady(pb.ModelReadyRequest(name="nope"), metadata=AUTH).ready)
c.ok("ServerMetadata: kd", ServerMetadata(pb.ServerMetadataRequest(), metadata=AUTH).name == "kd")

X = (images[:4].astype(np.float32) / 255).reshape(4, 1, 28, 28)
ref = requests.post(f"{server.url}/v2/models/m/infer", headers={"Authorization": f"Bearer {KEY}"},
                    json={"inputs": [{"name": "input", "shape": [4, 1, 28, 28], "datatype": "FP32",
                                      "data": X.flatten().tolist()}]})
ref_logits = np.array(ref.json()["outputs"][0]["data"], dtype=np.float32).reshape(4, -1)


def outputs(resp):
    return {o.name: np.frombuffer(raw, dtype="<i4" if o.datatype == "INT32" else "<f4").reshape(list(o.shape))
            for o, raw in zip(resp.outputs, resp.raw_output_contents)}


def raw_request(model, arr, datatype="FP32", names=()):
    req = pb.ModelInferRequest(model_name=model, id="g1")
    t = req.inputs.add(name="input", datatype=datatype, shape=list(arr.shape))
    req.raw_input_contents.append(arr.astype({"FP32": "<f4", "UINT8": "u1", "FP16": "<f2"}[datatype]).tobytes())
    for n in names:
        req.outputs.add(name=n)
    return req


resp = ModelInfer(raw_request("m", X), metadata=AUTH)
o = outputs(resp)
c.ok("ModelInfer, raw_input_contents: logits equal the HTTP JSON route's, id echoed",
     np.allclose(o["logits"], ref_logits, atol=1e-6) and resp.id == "g1" and resp.model_name == "m")
req = pb.ModelInferRequest(model_name="m")
t = req.inputs.add(name="input", datatype="FP32", shape=[4, 1, 28, 28])
t.contents.fp32_contents.extend(X.flatten().tolist())
req.outputs.add(name="logits")
o = outputs(ModelInfer(req, metadata=AUTH))
c.ok("ModelInfer, typed fp32_contents, one output named", list(o) == ["logits"]
     and np.allclose(o["logits"], ref_logits, atol=1e-6))
o = outputs(ModelInfer(raw_request("m", images[:4].reshape(4, 1, 28, 28), "UINT8"), metadata=AUTH))
c.ok("UINT8 raw input: logits match FP32's", np.allclose(o["logits"], ref_logits, atol=1e-5))
pngs = []
for k in range(4):
    buf = io.BytesIO()
    Image.fromarray(images[k]).save(buf, format="PNG")
    pngs.append(buf.getvalue())
req = pb.ModelInferRequest(model_name="m")
req.inputs.add(name="input", datatype="BYTES", shape=[4]).contents.bytes_contents.extend(pngs)
o = outputs(ModelInfer(req, metadata=AUTH))
c.ok("BYTES images (bytes_contents): logits match FP32's", np.allclose(o["logits"], ref_logits, atol=1e-4))
det_png = open(os.path.join(det_data, "images", "test_000001.png"), "rb").read()
req = pb.ModelInferRequest(model_name="det")
req.inputs.add(name="input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(det_png)
o = outputs(ModelInfer(req, metadata=AUTH))
c.ok("detector: INT32 num_detections, FP32 boxes", o["num_detections"].dtype == np.int32
     and o["detection_boxes"].shape[-1] == 4)

# Errors, each with its gRPC code.
for what, call, kw, want in [
        ("no key", ModelInfer, dict(request=raw_request("m", X)), grpc.StatusCode.UNAUTHENTICATED),
        ("unknown model", ModelInfer, dict(request=raw_request("nope", X), metadata=AUTH), grpc.StatusCode.NOT_FOUND),
        ("wrong shape", ModelInfer, dict(request=raw_request("m", X.reshape(4, 1, 14, 56)), metadata=AUTH),
         grpc.StatusCode.INVALID_ARGUMENT),
        ("NaN input", ModelInfer, dict(request=raw_request("m", np.full_like(X, np.nan)), metadata=AUTH),
         grpc.StatusCode.INVALID_ARGUMENT),
        ("unknown output", ModelInfer, dict(request=raw_request("m", X, names=("boxes",)), metadata=AUTH),
         grpc.StatusCode.INVALID_ARGUMENT),
        ("version 2", ModelInfer, dict(request=pb.ModelInferRequest(model_name="m", model_version="2"), metadata=AUTH),
         grpc.StatusCode.NOT_FOUND),
        # The key before the request (issue 33): a keyless caller learns nothing of versions or shapes.
        ("no key, version 2", ModelInfer, dict(request=pb.ModelInferRequest(model_name="m", model_version="2")),
         grpc.StatusCode.UNAUTHENTICATED),
        ("no key, wrong shape", ModelInfer, dict(request=raw_request("m", X.reshape(4, 1, 14, 56))),
         grpc.StatusCode.UNAUTHENTICATED),
        # Names are not spliced into HTTP routes.
        *[(f"ModelMetadata '{name[:20]}'", ModelMetadata, dict(request=pb.ModelMetadataRequest(name=name), metadata=AUTH),
           grpc.StatusCode.NOT_FOUND) for name in ("", "m/config", "m/stats", "m/infer", "x" * 100000)],
        ("ModelReady 'm/config'", ModelReady, dict(request=pb.ModelReadyRequest(name="m/config"), metadata=AUTH),
         grpc.StatusCode.NOT_FOUND)]:
    code, details = code_of(call, **kw)
    c.ok(f"{what}: {want.name}", code == want, f"{code} {details}")
req = raw_request("m", X)
req.raw_input_contents[0] = req.raw_input_contents[0][:-4]
code, details = code_of(ModelInfer, req, metadata=AUTH)
c.ok("raw contents one element short: INVALID_ARGUMENT naming the sizes",
     code == grpc.StatusCode.INVALID_ARGUMENT and "needs 12544 bytes" in details, details)
big = pb.ModelInferRequest(model_name="m")
big.raw_input_contents.append(b"\0" * (33 << 20))
code, _ = code_of(ModelInfer, big, metadata=AUTH)
c.ok("a 33 MiB message: RESOURCE_EXHAUSTED", code == grpc.StatusCode.RESOURCE_EXHAUSTED, code)


# gRPC and HTTP clients at once share the batcher: every answer is its own.
def one(i):
    if i % 2:
        r = ModelInfer(raw_request("m", X[i % 4:i % 4 + 1]), metadata=AUTH)
        return np.allclose(outputs(r)["logits"][0], ref_logits[i % 4], atol=1e-5)
    r = requests.post(f"{server.url}/v2/models/m/infer", headers={"Authorization": f"Bearer {KEY}"},
                      json={"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                        "data": X[i % 4].flatten().tolist()}]})
    return np.allclose(np.array(r.json()["outputs"][0]["data"]), ref_logits[i % 4], atol=1e-5)


with cf.ThreadPoolExecutor(16) as ex:
    results = list(ex.map(one, range(200)))
c.ok(f"200 concurrent gRPC and HTTP requests: {sum(results)} right", all(results))
metrics = requests.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
c.ok("gRPC inferences in the metrics", 'route="grpc_infer"' in metrics)

# A second server on the gRPC port: one line, exit 1.
grpc_port = server.info["grpc"].rsplit(":", 1)[1]
r = subprocess.run([KD, "serve", f"m={cls_run}", "--port", "0", "--grpc-port", grpc_port],
                   capture_output=True, text=True, timeout=60)
c.ok("kd serve on a busy gRPC port: exit 1, one line", r.returncode == 1 and "gRPC" in r.stderr
     and len([ln for ln in r.stderr.strip().splitlines() if not ln.startswith("[")]) == 1, r.stderr[-300:])
channel.close()
c.ok("server exits 0 on SIGTERM", server.stop() == 0)
c.done()
