#!/usr/bin/python3
"""The PyTorch side of the loader benchmark: torchvision ImageFolder + DataLoader with
RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor + Normalize, batches of 128, one pass
over the folder. Prints one JSON line: workers, images, seconds, images_per_s.

Usage: loader_baseline.py FOLDER --workers N [--batches B]"""
import argparse
import json
import time

import torch
import torchvision
from torchvision import transforms as T

p = argparse.ArgumentParser()
p.add_argument("folder")
p.add_argument("--workers", type=int, default=2)
p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--batches", type=int, default=0, help="stop after this many batches (0: all)")
a = p.parse_args()
torch.set_num_threads(1)
tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
data = torchvision.datasets.ImageFolder(a.folder, tf)
loader = torch.utils.data.DataLoader(data, batch_size=a.batch_size, shuffle=True,
                                     num_workers=a.workers, drop_last=False)
start = time.perf_counter()
n = 0
for i, (x, y) in enumerate(loader):
    n += x.size(0)
    if a.batches and i + 1 >= a.batches:
        break
s = time.perf_counter() - start
print(json.dumps({"loader": "torchvision", "workers": a.workers, "images": n, "seconds": s,
                  "images_per_s": n / s}))
