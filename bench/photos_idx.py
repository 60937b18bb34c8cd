#!/usr/bin/python3
"""The first N photos of a list as an in-memory IDX set at the eval transform's 224 px (resize
256, centre crop 224): the same images as pre-built batches, for the streamed-vs-in-memory
epoch comparison of bench/run.sh.

Usage: photos_idx.py LIST.csv N OUT_DIR"""
import os
import struct
import sys

import numpy as np
from PIL import Image

lst, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
base = os.path.dirname(os.path.abspath(lst))
rows = [l.rstrip("\n").split(",") for l in open(lst)][1:][:n]
classes = sorted({c for _, c in rows})
images = np.zeros((len(rows), 3, 224, 224), np.uint8)
for i, (path, _) in enumerate(rows):
    img = Image.open(os.path.join(base, path)).convert("RGB").resize((256, 256), Image.BILINEAR)
    images[i] = np.asarray(img.crop((16, 16, 240, 240))).transpose(2, 0, 1)
labels = np.array([classes.index(c) for _, c in rows], np.uint8)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "train-images-idx3-ubyte"), "wb") as f:
    f.write(struct.pack(">BBBB", 0, 0, 0x08, 4) + struct.pack(">IIII", *images.shape))
    f.write(images.tobytes())
with open(os.path.join(out, "train-labels-idx1-ubyte"), "wb") as f:
    f.write(struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", len(rows)))
    f.write(labels.tobytes())
with open(os.path.join(out, "classes.txt"), "w") as f:
    f.write("\n".join(classes) + "\n")
