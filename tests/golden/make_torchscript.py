#!/usr/bin/python3
"""Test fixture: saves the reference student, written in PyTorch, with torch.jit.save, plus the
sidecar JSON kd reads, plus the outputs PyTorch computes for a fixed input; and the same student
with SiLU activations, an op with no INT8 kernel (kd quantize must name it).
Usage: make_torchscript.py OUT_DIR"""
import json
import os
import sys

import torch
import torch.nn as nn


class Student(nn.Module):
    def __init__(self, act=nn.ReLU):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), act(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), act(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
model = torch.jit.script(Student().eval())
path = os.path.join(out, "student_ts.pt")
torch.jit.save(model, path)
names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"]
sidecar = {"class_names": names, "input_shape": [1, 28, 28], "mean": [0.0], "std": [1.0]}
with open(path + ".json", "w") as f:
    json.dump(sidecar, f)
silu = os.path.join(out, "student_silu_ts.pt")
torch.jit.save(torch.jit.script(Student(nn.SiLU).eval()), silu)
with open(silu + ".json", "w") as f:
    json.dump(sidecar, f)
x = torch.linspace(0, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)
with open(os.path.join(out, "student_ts_expected.json"), "w") as f:
    json.dump({"output": model(x).tolist()}, f)
with open(os.path.join(out, "not_torchscript.pt"), "wb") as f:
    f.write(b"this is not a zip archive")
print(path)
