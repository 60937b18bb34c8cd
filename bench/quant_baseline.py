#!/usr/bin/python3
"""PyTorch Python's own eager post-training static quantization of a kd run's network, for the
INT8 table of `make reproduce` / `make bench`: the reference teacher or student rebuilt as an
nn.Sequential with kd's weights (from `kd export`), Conv-BN-ReLU and Linear-ReLU fused, the
onednn backend's default qconfig (histogram activations, per-channel symmetric weights),
calibrated on the first N training images, converted; then top-1 on the Fashion-MNIST test set,
the scripted model's size on disk, batch-1 median latency and batch-256 throughput measured as
kd measures them (2 threads, warm-up, median of 200 batch-1 calls, 20 batches of 256).
Usage: quant_baseline.py EXPORTED.pt ARCH [CALIBRATION_IMAGES]  -> one JSON line per precision."""
import io
import json
import statistics
import sys
import time

import numpy as np
import torch
import torch.ao.quantization as tq
import torch.nn as nn

import fmnist
from fmnist import ROOT, load_idx

# Conv-BN-ReLU and Linear-ReLU runs of each network, by index, for fuse_modules.
FUSE = {"fmnist-teacher": [["0", "1", "2"], ["4", "5", "6"], ["8", "9", "10"], ["13", "14"]],
        "fmnist-student": [["0", "1"], ["3", "4"]]}


def network(arch, width):
    build = fmnist.teacher if arch == "fmnist-teacher" else fmnist.student
    return (build(width) if width else build()), FUSE[arch]


def speed(model, x):
    """Batch-1 median latency (ms, 200 calls after 20 warm-up) and batch-256 images/s (20
    batches), as kd measures them."""
    with torch.inference_mode():
        x1, xb = x[:1], x[:256]
        for _ in range(20):
            model(x1)
        ms = []
        for _ in range(200):
            t = time.perf_counter()
            model(x1)
            ms.append((time.perf_counter() - t) * 1e3)
        model(xb)
        t = time.perf_counter()
        for _ in range(20):
            model(xb)
        throughput = 20 * 256 / (time.perf_counter() - t)
    return {"batch1_median_ms": statistics.median(ms), "throughput_per_s": throughput}


def measure(model, x_test, y_test):
    with torch.inference_mode():
        top1 = sum((model(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum().item()
                   for i in range(0, len(x_test), 1000)) / len(x_test)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buf)
    return {"top1": top1, "bytes": buf.tell(), **speed(model, x_test)}


def main():
    path, arch = sys.argv[1], sys.argv[2]
    calibration = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    torch.set_num_threads(2)
    torch.backends.quantized.engine = "onednn"
    desc = json.load(open(path + ".json"))
    mean = torch.tensor(desc["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(desc["std"]).view(1, -1, 1, 1)
    fp32, fuse = network(arch, desc["options"].get("width"))
    fp32.load_state_dict(torch.jit.load(path).state_dict())
    fp32.eval()
    norm = lambda x: ((torch.from_numpy(x.copy()).unsqueeze(1).float() / 255) - mean) / std
    x_test = norm(load_idx(f"{ROOT}/t10k-images-idx3-ubyte.gz"))
    y_test = torch.from_numpy(load_idx(f"{ROOT}/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    x_cal = norm(load_idx(f"{ROOT}/train-images-idx3-ubyte.gz")[:calibration])
    print(json.dumps({"python": "fp32", **measure(fp32, x_test, y_test)}), flush=True)

    q = nn.Sequential(tq.QuantStub(), tq.fuse_modules(fp32, fuse), tq.DeQuantStub()).eval()
    q.qconfig = tq.get_default_qconfig("onednn")
    tq.prepare(q, inplace=True)
    with torch.inference_mode():
        for i in range(0, calibration, 64):
            q(x_cal[i:i + 64])
    tq.convert(q, inplace=True)
    print(json.dumps({"python": "int8 eager PTQ", **measure(q, x_test, y_test)}), flush=True)


if __name__ == "__main__":
    main()
