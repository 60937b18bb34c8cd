#!/usr/bin/python3
"""Writes tests/golden/losses.json: inputs and PyTorch-Python outputs for kd's loss unit tests.
Run with Debian's python3-torch: /usr/bin/python3 tests/golden/make_golden.py"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(1234)
cases = []
for (batch, classes, T, alpha, smoothing) in [(4, 10, 4.0, 0.9, 0.0), (7, 5, 1.0, 0.5, 0.1),
                                              (3, 10, 8.0, 1.0, 0.0), (5, 3, 2.5, 0.0, 0.2)]:
    s = (torch.randn(batch, classes, dtype=torch.float64) * 3).requires_grad_(True)
    t = torch.randn(batch, classes, dtype=torch.float64) * 3
    y = torch.randint(0, classes, (batch,))
    ce = F.cross_entropy(s, y, label_smoothing=smoothing)
    kl = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), reduction="batchmean",
                  log_target=True)
    total = alpha * T * T * kl + (1 - alpha) * ce
    grad, = torch.autograd.grad(total, s)
    cases.append({"student": s.tolist(), "teacher": t.tolist(), "target": y.tolist(),
                  "temperature": T, "alpha": alpha, "label_smoothing": smoothing,
                  "cross_entropy": ce.item(), "kl": kl.item(), "kd_loss": total.item(),
                  "kd_grad": grad.tolist()})

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "losses.json")
with open(out, "w") as f:
    json.dump({"generator": "tests/golden/make_golden.py", "torch": torch.__version__,
               "cases": cases}, f, indent=1)
print(out)
