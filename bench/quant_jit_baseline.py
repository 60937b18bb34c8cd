#!/usr/bin/python3
"""PyTorch Python's own post-training static quantization of a kd detector, for the detectors'
INT8 table (scripts/int8-table.sh): EfficientDet has no eager twin in Python, so the TorchScript
file `kd export` writes is quantized by PyTorch's graph mode (torch.ao.quantization.quantize_jit,
the passes kd's own quantizer starts from), with kd's observers (minmax per-tensor affine uint8
activations, per-channel symmetric int8 weights) on the onednn backend, calibrated on the first N
canvases of the training set. Prints its ops left in fp32, size on disk, batch-1 median latency
and batch-256 throughput measured as kd measures them (2 threads, warm-up, median of 200 batch-1
calls, 20 batches of 256), and writes OUT.pt with the export's sidecar OUT.pt.json, so that
`kd eval OUT.pt --data DATA` scores it with kd's own evaluator.
Usage: quant_jit_baseline.py EXPORTED.pt DATA_DIR OUT.pt [CALIBRATION_IMAGES]  -> JSON lines."""
import collections
import json
import os
import sys

import numpy as np
import torch
import torch.ao.quantization as tq
from PIL import Image

from quant_baseline import speed


SHAPE_OPS = {"aten::size", "aten::len", "aten::permute", "aten::flatten", "aten::unflatten",
             "aten::reshape", "aten::view", "aten::contiguous", "aten::cat"}


def fp32_ops(model):
    # Compute ops whose inputs are dequantized: the fp32 islands between a dequantize and a
    # quantize (the graph after quantize_jit's inlining).
    graph = model.graph if hasattr(model, "graph") else model.forward.graph
    dequantized = set()
    ops = collections.Counter()
    for node in graph.nodes():
        if node.kind() == "aten::dequantize":
            dequantized.add(node.output().debugName())
        elif node.kind().startswith("aten::") and node.kind() not in SHAPE_OPS:
            if any(i.debugName() in dequantized for i in node.inputs()):
                ops[node.kind()] += 1
    return dict(ops)


def main():
    path, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
    calibration = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
    torch.set_num_threads(2)
    torch.backends.quantized.engine = "onednn"
    desc = json.load(open(path + ".json"))
    mean = torch.tensor(desc["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(desc["std"]).view(1, -1, 1, 1)
    images = json.load(open(os.path.join(data, "train.json")))["images"][:max(calibration, 256)]
    pixels = np.stack([np.asarray(Image.open(os.path.join(data, im["file_name"])).convert("RGB"))
                       for im in images])
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std

    fp32 = torch.jit.load(path).eval()
    print(json.dumps({"python": "fp32", **speed(torch.jit.freeze(fp32), x)}), flush=True)

    qconfig = tq.QConfig(
        activation=tq.MinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine),
        weight=tq.default_per_channel_weight_observer)

    def calibrate(model, batches):
        with torch.no_grad():
            for b in batches:
                model(b)

    q = tq.quantize_jit(fp32, {"": qconfig}, calibrate,
                        [[x[i:i + 64] for i in range(0, calibration, 64)]])
    torch.jit.save(q, out)
    desc["precision"] = "int8"
    desc["produced_by"] = "PyTorch Python torch.ao.quantization.quantize_jit (bench/quant_jit_baseline.py)"
    with open(out + ".json", "w") as f:
        json.dump(desc, f, indent=2)
    print(json.dumps({"python": "int8 graph-mode PTQ", "fp32_ops": fp32_ops(q),
                      "bytes": os.path.getsize(out), **speed(q, x)}), flush=True)


if __name__ == "__main__":
    main()
