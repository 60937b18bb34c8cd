#!/usr/bin/python3
"""PyTorch-Python baseline for `make bench`: the same reference models and the same training
loop as kd (tensor-indexed batches, SGD with Nesterov momentum, cross-entropy), one epoch over
the 48,000-image training split of Fashion-MNIST; `distill` is an epoch of the student learning
from the teacher run on every batch (Hinton KD at T 4, alpha 0.9, as kd distill's default).
--precision bf16 runs the forward passes under CPU autocast to bfloat16, as kd does. Prints one
JSON line per model."""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fmnist import ROOT, load_idx, student, teacher


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="fmnist-teacher,fmnist-student")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=48000)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x_all = torch.from_numpy(load_idx(f"{ROOT}/train-images-idx3-ubyte.gz").copy())
    y_all = torch.from_numpy(load_idx(f"{ROOT}/train-labels-idx1-ubyte.gz").astype(np.int64))
    x_all, y_all = x_all[: args.images].unsqueeze(1), y_all[: args.images]
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16")
    for name in args.models.split(","):
        model = {"fmnist-teacher": teacher, "fmnist-student": student, "distill": student}[name]()
        frozen = teacher().eval() if name == "distill" else None
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
        mean, std = 0.2860, 0.3530
        model.train()
        order = torch.randperm(len(y_all))
        t0 = time.perf_counter()
        for s in range(0, len(order), args.batch_size):
            idx = order[s:s + args.batch_size]
            x = (x_all[idx].float().div_(255.0) - mean) / std
            with autocast():
                z = model(x)
                if frozen is not None:
                    with torch.no_grad():
                        zt = frozen(x)
            z = z.float()
            loss = F.cross_entropy(z, y_all[idx])
            if frozen is not None:
                T = 4.0
                kl = F.kl_div(F.log_softmax(z / T, 1), F.softmax(zt.float() / T, 1), reduction="batchmean")
                loss = 0.1 * loss + 0.9 * T * T * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
        dt = time.perf_counter() - t0
        print(json.dumps({"impl": "pytorch-python", "model": name, "precision": args.precision, "images": len(order),
                          "seconds": dt, "images_per_s": len(order) / dt}), flush=True)


if __name__ == "__main__":
    main()
