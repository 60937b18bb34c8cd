#!/usr/bin/python3
"""Benchmark photos at real resolution: Fashion-MNIST items upscaled to SIZE px, tinted per
class with per-image noise, written as JPEG into OUT/<class>/<n>.jpg (no photo sets ship with
Debian; accuracy on them means little). With --list N, also writes OUT.csv listing N entries
that repeat the images (memory benchmarks over 10^4-10^6 entries).

Usage: photos.py OUT [--images 12000] [--size 256] [--list N] [--list-out PATH]"""
import argparse
import gzip
import os

import numpy as np
from PIL import Image

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--images", type=int, default=12000)
p.add_argument("--size", type=int, default=256)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--list", type=int, default=0, help="write a file list of this many entries")
p.add_argument("--list-out", default="")
a = p.parse_args()

classes = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
src = "/usr/share/datasets/fashion-mnist"
files = []
if not os.path.isdir(a.out):
    with gzip.open(f"{src}/train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{src}/train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    rng = np.random.default_rng(a.seed)
    tints = rng.uniform(0.3, 1.0, size=(10, 3))
    for c in classes:
        os.makedirs(os.path.join(a.out, c), exist_ok=True)
    for i in range(a.images):
        x = images[i].astype(np.float32) / 255
        big = np.asarray(Image.fromarray((x * 255).astype(np.uint8)).resize((a.size, a.size), Image.BILINEAR),
                         np.float32) / 255
        rgb = big[..., None] * tints[labels[i]] * 255 + rng.normal(0, 12, size=(a.size, a.size, 3))
        background = rng.uniform(0, 60, size=3)
        rgb = np.clip(rgb + background * (1 - big[..., None]), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(os.path.join(a.out, classes[labels[i]], f"{i}.jpg"), quality=90)
for c in classes:
    for name in sorted(os.listdir(os.path.join(a.out, c))):
        files.append((f"{os.path.basename(a.out)}/{c}/{name}", c))
if a.list:
    out = a.list_out or a.out.rstrip("/") + f"-{a.list}.csv"
    order = np.random.default_rng(a.seed).permutation(len(files))  # every class in any prefix
    with open(out, "w") as f:
        f.write("path,label\n")
        for k in range(a.list):
            path, c = files[order[k % len(files)]]
            f.write(f"{path},{c}\n")
    print(out)
