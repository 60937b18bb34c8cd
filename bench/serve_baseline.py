"""The Python serving baseline for `make bench`: the same model (kd export's TorchScript file)
behind FastAPI + uvicorn + PyTorch, answering the same Open Inference Protocol v2 request with
the same outputs (logits and probabilities), in JSON or with the binary tensor data extension
(FP32 input and outputs as raw little-endian bytes, as tritonclient sends them). Written the fast way: raw body and json.loads
instead of pydantic validation, inference mode, one uvicorn worker (one process, as kd is).
Usage: serve_baseline.py MODEL.pt PORT"""
import json
import sys

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request, Response

MODEL, PORT = sys.argv[1], int(sys.argv[2])
desc = json.load(open(MODEL + ".json"))
model = torch.jit.load(MODEL).eval()
mean = torch.tensor(desc["mean"]).view(1, -1, 1, 1)
std = torch.tensor(desc["std"]).view(1, -1, 1, 1)
name = "student"
app = FastAPI()


@app.get("/v2/health/ready")
async def ready():
    return {"ready": True}


@app.post("/v2/models/{model_name}/infer")
async def infer(model_name: str, request: Request):
    raw = await request.body()
    size = request.headers.get("inference-header-content-length")
    body = json.loads(raw[:int(size)] if size else raw)
    inp = body["inputs"][0]
    if size:
        x = torch.from_numpy(np.frombuffer(raw[int(size):], dtype="<f4").copy()).reshape(inp["shape"])
    else:
        x = torch.tensor(inp["data"], dtype=torch.float32).reshape(inp["shape"])
    with torch.inference_mode():
        logits = model((x - mean) / std)
        probs = torch.softmax(logits, 1)
    binary = bool(body.get("parameters", {}).get("binary_data_output"))
    outputs, data = [], b""
    for n, t in (("logits", logits), ("probabilities", probs)):
        o = {"name": n, "datatype": "FP32", "shape": list(t.shape)}
        if binary:
            b = t.numpy().astype("<f4").tobytes()
            o["parameters"] = {"binary_data_size": len(b)}
            data += b
        else:
            o["data"] = t.flatten().tolist()
        outputs.append(o)
    head = json.dumps({"model_name": model_name, "model_version": "1", "outputs": outputs})
    if binary:
        return Response(head.encode() + data, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(head))})
    return Response(head, media_type="application/json")


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning", access_log=False)
