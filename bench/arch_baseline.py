#!/usr/bin/python3
"""PyTorch Python's side of bench/arch.sh: the same torchvision network and loop as kd's, on the
same in-memory 224 px images (an IDX folder from photos_idx.py): one training epoch (SGD with
momentum 0.9, weight decay 5e-4, cross-entropy, batch 64, shuffled, no augmentation), then
inference in eval mode as kd measures it (batch-1 median of 50 calls after 5 warm-up; batch-256
images/s over 2 batches), in fp32 and, with --int8, torchvision's quantizable network fused,
calibrated on 64 training images and converted (the onednn engine, else qnnpack).
Usage: arch_baseline.py ARCH IDX_DIR [--images N] [--threads T] [--int8]  -> one JSON line"""
import argparse
import json
import os
import statistics
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision

p = argparse.ArgumentParser()
p.add_argument("arch")
p.add_argument("data")
p.add_argument("--images", type=int, default=512)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--int8", action="store_true")
p.add_argument("--channels-last", action="store_true",
               help="model and input in torch.channels_last (oneDNN's NHWC kernels, as kd runs)")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)


def idx(path):
    with open(path, "rb") as f:
        dims = f.read(4)[3]
        shape = struct.unpack(">" + "I" * dims, f.read(4 * dims))
        return np.frombuffer(f.read(), np.uint8).reshape(shape)


x_all = torch.from_numpy(idx(os.path.join(a.data, "train-images-idx3-ubyte")).copy())[: a.images]
y_all = torch.from_numpy(idx(os.path.join(a.data, "train-labels-idx1-ubyte")).astype(np.int64))[: a.images]
x_all = x_all.float().div(255)
mean = x_all.mean((0, 2, 3), keepdim=True)
std = x_all.std((0, 2, 3), keepdim=True)
x_all = (x_all - mean) / std
classes = int(y_all.max()) + 1

model = getattr(torchvision.models, a.arch)(num_classes=classes)
if a.channels_last:
    model = model.to(memory_format=torch.channels_last)
    x_all = x_all.contiguous(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
loss_fn = nn.CrossEntropyLoss()
model.train()
order = torch.randperm(len(x_all))
t0 = time.perf_counter()
for s in range(0, len(x_all), a.batch):
    i = order[s:s + a.batch]
    opt.zero_grad()
    loss_fn(model(x_all[i]), y_all[i]).backward()
    opt.step()
train_s = time.perf_counter() - t0


def speed(m):
    with torch.inference_mode():
        fmt = torch.channels_last if a.channels_last else torch.contiguous_format
        x1 = x_all[:1].contiguous(memory_format=fmt)
        xb = x_all[:1].expand(256, -1, -1, -1).contiguous(memory_format=fmt)
        for _ in range(5):
            m(x1)
        ms = []
        for _ in range(50):
            t = time.perf_counter()
            m(x1)
            ms.append(1000 * (time.perf_counter() - t))
        m(xb)
        t = time.perf_counter()
        for _ in range(2):
            m(xb)
        return statistics.median(ms), 2 * 256 / (time.perf_counter() - t)


model.eval()
b1, tp = speed(model)
out = {"arch": a.arch, "channels_last": a.channels_last, "train_images_per_s": len(x_all) / train_s, "fp32_batch1_ms": b1,
       "fp32_batch256_per_s": tp}
if a.int8:
    import torch.ao.quantization as tq
    import torchvision.models.quantization as qm

    def int8(engine):
        torch.backends.quantized.engine = engine
        q = getattr(qm, a.arch)(num_classes=classes, quantize=False)
        q.load_state_dict(model.state_dict())
        q.eval()
        q.fuse_model()
        q.qconfig = tq.get_default_qconfig(engine)
        tq.prepare(q, inplace=True)
        with torch.inference_mode():
            q(x_all[:64])
        tq.convert(q, inplace=True)
        return speed(q)

    # onednn first (kd's engine); Debian's build fails some of its reorders at batch 256.
    errors = []
    for engine in [e for e in ("onednn", "qnnpack") if e in torch.backends.quantized.supported_engines]:
        try:
            b1, tp = int8(engine)
            out.update({"int8_engine": engine, "int8_batch1_ms": b1, "int8_batch256_per_s": tp})
            break
        except RuntimeError as e:
            errors.append(f"{engine}: {str(e).splitlines()[0]}")
    if errors:
        out["int8_errors"] = errors
print(json.dumps(out))
