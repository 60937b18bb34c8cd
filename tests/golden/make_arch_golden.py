#!/usr/bin/python3
"""Test fixture for kd's native architectures: for each, the PyTorch model (torchvision 0.14's, or
RepDistiller's CIFAR networks as written below) with random weights and random batch-norm
statistics, saved as torch.save(model.state_dict()) (an OrderedDict, as users save them), and
an input with the logits and feature taps PyTorch computes for it in eval mode, saved as a dict
of tensors. Also writes each model's parameter count at 1,000 classes (torchvision) or 100
classes (RepDistiller) to counts.json.
Usage: make_arch_golden.py OUT_DIR [--check-round-trip]: the second form loads the files kd
wrote back (ARCH-kd.pt) into the PyTorch model with load_state_dict(strict=True) and checks
that its logits are the golden ones."""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


# RepDistiller (github.com/HobbitLong/RepDistiller, models/resnet.py and wrn.py), as mdistiller
# uses them; the forward without the feature/preact outputs.
class CifarBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class CifarResNet(nn.Module):
    def __init__(self, depth, filters, num_classes):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = filters[0]
        self.conv1 = nn.Conv2d(3, filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(filters[1], n)
        self.layer2 = self._make_layer(filters[2], n, 2)
        self.layer3 = self._make_layer(filters[3], n, 2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(filters[3], num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [CifarBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [CifarBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


class WideBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None if self.equalInOut else nn.Conv2d(in_planes, out_planes, 1,
                                                                   stride, 0, bias=False)

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, n, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(in_planes if i == 0 else out_planes, out_planes,
                                               stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth, widen, num_classes):
        super().__init__()
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.avg_pool2d(self.relu(self.bn1(out)), 8)
        return self.fc(out.flatten(1))


TORCHVISION = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
               "mobilenet_v3_large", "efficientnet_b0"]
CIFAR = {"resnet8x4": lambda k: CifarResNet(8, [32, 64, 128, 256], k),
         "resnet32x4": lambda k: CifarResNet(32, [32, 64, 128, 256], k),
         "wrn_16_2": lambda k: WideResNet(16, 2, k),
         "wrn_40_2": lambda k: WideResNet(40, 2, k)}
# The taps checked: a module path kd names the same way.
TAPS = {"resnet18": "layer3", "resnet34": "layer2", "resnet50": "layer4",
        "mobilenet_v2": "features.6", "mobilenet_v3_small": "features.4",
        "mobilenet_v3_large": "features.12", "efficientnet_b0": "features.5",
        "resnet8x4": "layer2", "resnet32x4": "layer3", "wrn_16_2": "block2", "wrn_40_2": "block3"}


def build(name, classes):
    if name in CIFAR:
        return CIFAR[name](classes)
    return getattr(torchvision.models, name)(num_classes=classes)


def golden_input(name):
    g = torch.Generator().manual_seed(1)
    size = 32 if name in CIFAR else 64
    return torch.rand(2, 3, size, size, generator=g)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    if len(sys.argv) > 2 and sys.argv[2] == "--check-round-trip":
        bad = 0
        for name in TORCHVISION + list(CIFAR):
            path = os.path.join(out, name + "-kd.pt")
            if not os.path.exists(path):
                print(f"FAIL {name}: kd wrote no {path}")
                bad += 1
                continue
            model = build(name, 10).eval()
            model.load_state_dict(torch.load(path), strict=True)
            io = torch.load(os.path.join(out, name + "-io.pt"))
            with torch.no_grad():
                err = (model(io["input"]) - io["logits"]).abs().max().item()
            ok = err < 1e-4
            bad += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}: kd's weights in torchvision, max error {err:.2e}")
        sys.exit(1 if bad else 0)
    counts = {}
    for name in TORCHVISION + list(CIFAR):
        counts[name] = sum(p.numel() for p in build(name, 100 if name in CIFAR else 1000).parameters())
        torch.manual_seed(0)
        model = build(name, 10)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        model.eval()
        torch.save(model.state_dict(), os.path.join(out, name + ".pt"))
        x = golden_input(name)
        tap = TAPS[name]
        feats = {}
        module = dict(model.named_modules())[tap]
        module.register_forward_hook(lambda m, i, o: feats.__setitem__("tap", o))
        with torch.no_grad():
            logits = model(x)
        torch.save({"input": x, "logits": logits, "tap": feats["tap"]},
                   os.path.join(out, name + "-io.pt"))
    # Files kd must refuse or see through: a pickle that would run os.system, the pre-1.6 format,
    # and a training checkpoint from DataParallel with the weights under "state_dict".
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + os.path.join(out, "pwned"),))
    torch.save({"w": Evil()}, os.path.join(out, "evil.pt"))
    small = build("resnet8x4", 10)
    torch.save(small.state_dict(), os.path.join(out, "legacy.pt"),
               _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "state_dict": nn.DataParallel(small).state_dict()},
               os.path.join(out, "checkpoint.pt"))
    with open(os.path.join(out, "counts.json"), "w") as f:
        json.dump({"counts": counts, "taps": TAPS}, f, indent=1)


main()
