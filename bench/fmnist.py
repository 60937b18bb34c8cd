"""Fashion-MNIST and kd's reference networks in PyTorch Python, shared by the baselines of
`make bench` (train_baseline.py, quant_baseline.py): the IDX files Debian's dataset-fashion-mnist
installs, and the teacher and student as nn.Sequential in kd's layer order, so that the weights of
a `kd export` load by index."""
import gzip

import numpy as np
import torch.nn as nn

ROOT = "/usr/share/datasets/fashion-mnist"


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def teacher(width=64):
    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * w * 3 * 3, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, 10))


def student(width=8):
    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * w * 7 * 7, 10))
