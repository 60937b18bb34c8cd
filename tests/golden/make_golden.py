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


def distill_loss(s, q, y, T, alpha, smoothing, hard, threshold):
    """The loss of every teacher-based mode (kd::distill_loss), written independently."""
    labeled = y >= 0
    ce = F.cross_entropy(s, y.clamp(min=0), reduction="none", label_smoothing=smoothing)
    if not hard:
        kd = (torch.xlogy(q, q) - q * F.log_softmax(s / T, 1)).sum(1) * T * T
        per = torch.where(labeled, (1 - alpha) * ce + alpha * kd, kd)
    else:
        conf, pseudo = q.max(1)
        use = (conf >= threshold) & ~labeled
        per = torch.where(labeled, ce, F.cross_entropy(s, pseudo, reduction="none",
                                                       label_smoothing=smoothing) * use)
    return per.mean()


distill_cases = []
for (batch, classes, T, alpha, smoothing, hard, threshold) in [
        (6, 5, 4.0, 0.9, 0.0, False, 0.0), (8, 4, 2.0, 0.5, 0.1, False, 0.0),
        (8, 4, 1.0, 0.9, 0.0, True, 0.6), (5, 3, 1.0, 0.0, 0.0, True, 0.0)]:
    s = (torch.randn(batch, classes, dtype=torch.float64) * 2).requires_grad_(True)
    q = torch.softmax(torch.randn(batch, classes, dtype=torch.float64) * 2 / T, 1)
    q[0] = 0.0  # a target with zero mass (merged and hard targets have them)
    q[0, 1] = 1.0
    y = torch.randint(0, classes, (batch,))
    y[::2] = -1  # every other sample unlabeled
    loss = distill_loss(s, q, y, T, alpha, smoothing, hard, threshold)
    grad, = torch.autograd.grad(loss, s)
    distill_cases.append({"student": s.tolist(), "targets": q.tolist(), "labels": y.tolist(),
                          "temperature": T, "alpha": alpha, "label_smoothing": smoothing,
                          "hard": hard, "threshold": threshold, "loss": loss.item(),
                          "grad": grad.tolist()})

hint_cases = []
for shape in [(3, 4, 2, 2), (5, 6)]:
    s = torch.randn(*shape, dtype=torch.float64).requires_grad_(True)
    t = torch.randn(*shape, dtype=torch.float64) * 5
    mse = F.mse_loss(s, t)
    nmse = (F.normalize(s.flatten(1), dim=1, eps=1e-8) -
            F.normalize(t.flatten(1), dim=1, eps=1e-8)).pow(2).sum(1).mean()
    g_mse, = torch.autograd.grad(mse, s)
    g_nmse, = torch.autograd.grad(nmse, s)
    hint_cases.append({"shape": list(shape), "student": s.flatten().tolist(),
                       "teacher": t.flatten().tolist(), "mse": mse.item(), "nmse": nmse.item(),
                       "mse_grad": g_mse.flatten().tolist(), "nmse_grad": g_nmse.flatten().tolist()})

# Merge rule: teacher A knows classes 0-2, teacher B classes 2-4 (class 2 shared); per-column
# offsets fitted so the merged class marginals are uniform, written independently of kd.
za = torch.randn(40, 3, dtype=torch.float64) * 3
zb = torch.randn(40, 3, dtype=torch.float64) * 3 + 1.0
Z = torch.cat([za, zb], 1)
col_class = torch.tensor([0, 1, 2, 2, 3, 4])
owners = torch.bincount(col_class, minlength=5).double()
prior = 1.0 / (owners[col_class] * 5)
b = torch.zeros(6, dtype=torch.float64)
for _ in range(2000):
    b += torch.log(torch.softmax(Z - b, 1).mean(0) / prior)
b -= b.mean()
merged = {}
for T in (1.0, 4.0):
    # The merged distribution at T = 1 (each class gets its columns' mass), then tempered.
    p1 = torch.zeros(40, 5, dtype=torch.float64).index_add_(1, col_class, torch.softmax(Z - b, 1))
    merged[str(T)] = torch.softmax(torch.log(p1) / T, 1).tolist()
merge_case = {"columns": Z.tolist(), "column_class": col_class.tolist(), "num_classes": 5,
              "offsets": b.tolist(), "merged": merged}

# Detection: torchvision's NMS, IoU and focal loss, and the detection distillation terms.
import torchvision.ops as ops

xy = torch.rand(40, 2, dtype=torch.float64) * 50
wh = torch.rand(40, 2, dtype=torch.float64) * 30 + 2
boxes = torch.cat([xy, xy + wh], 1)
scores = torch.rand(40, dtype=torch.float64)
classes = torch.randint(0, 3, (40,))
logits = (torch.randn(6, 5, dtype=torch.float64) * 3).requires_grad_(True)
onehot = (torch.rand(6, 5) < 0.3).double()
focal = ops.sigmoid_focal_loss(logits, onehot, alpha=0.25, gamma=1.5, reduction="sum")
focal_grad, = torch.autograd.grad(focal, logits)
T, norm = 2.0, 3.0
s_cls = (torch.randn(2, 7, 3, dtype=torch.float64) * 3).requires_grad_(True)
t_cls = torch.randn(2, 7, 3, dtype=torch.float64) * 3
q, p = torch.sigmoid(t_cls / T), torch.sigmoid(s_cls / T)
cls_kd = (q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))).sum() * T * T / norm
cls_kd_grad, = torch.autograd.grad(cls_kd, s_cls)
s_box = torch.randn(2, 7, 4, dtype=torch.float64).mul(0.3).requires_grad_(True)
t_box = torch.randn(2, 7, 4, dtype=torch.float64) * 0.3
w = torch.sigmoid(t_cls).max(-1).values
box_kd = (F.huber_loss(s_box, t_box, reduction="none", delta=0.1).sum(-1) * w).sum() / (w.sum() * 4)
box_kd_grad, = torch.autograd.grad(box_kd, s_box)
detect_case = {
    "boxes": boxes.tolist(), "scores": scores.tolist(), "classes": classes.tolist(),
    "nms_0.5": ops.nms(boxes, scores, 0.5).tolist(), "nms_0.3": ops.nms(boxes, scores, 0.3).tolist(),
    "batched_nms_0.5": ops.batched_nms(boxes, scores, classes, 0.5).tolist(),
    "iou_first5_first8": ops.box_iou(boxes[:5], boxes[:8]).tolist(),
    "focal_logits": logits.tolist(), "focal_targets": onehot.tolist(), "focal_sum": focal.item(),
    "focal_grad": focal_grad.tolist(), "temperature": T, "normalizer": norm,
    "s_cls": s_cls.flatten().tolist(), "t_cls": t_cls.flatten().tolist(), "class_kd": cls_kd.item(),
    "class_kd_grad": cls_kd_grad.flatten().tolist(), "s_box": s_box.flatten().tolist(),
    "t_box": t_box.flatten().tolist(), "box_kd": box_kd.item(), "box_kd_grad": box_kd_grad.flatten().tolist()}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "losses.json")
with open(out, "w") as f:
    json.dump({"generator": "tests/golden/make_golden.py", "torch": torch.__version__,
               "cases": cases,
               "distill_cases": distill_cases, "hint_cases": hint_cases, "merge_case": merge_case,
               "detect_case": detect_case}, f, indent=1)
print(out)
