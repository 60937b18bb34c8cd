#!/usr/bin/env bash
# PyTorch's networks through the real CLI: a torchvision state_dict (1,000 classes) starts a kd
# student by parameter name (the head fresh), the run's weights go back to torchvision with
# load_state_dict(strict=True) and give kd's logits; RepDistiller's CIFAR pair distills with a
# FitNet hint between layers named as in PyTorch; weights that do not fit are named in one line.
# Usage: weights_test.sh KD_BINARY WORK_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KD=$1 WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
export KD_CACHE_DIR=$WORK/cache
source "$HERE/lib.sh"

# 3 classes x 16 photos of 40 px, and torchvision weights as users save them.
/usr/bin/python3 - <<'PY'
import os, random
import torch, torchvision
from PIL import Image
random.seed(0)
for name, rgb in {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 210)}.items():
    os.makedirs(f"photos/{name}")
    for i in range(16):
        img = Image.new("RGB", (40, 40), tuple(max(0, min(255, c + random.randint(-40, 40))) for c in rgb))
        img.save(f"photos/{name}/{i:02d}.jpg", quality=90)
torch.manual_seed(0)
torch.save(torchvision.models.mobilenet_v3_small().state_dict(), "v3s.pt")
torch.save(torchvision.models.resnet18().state_dict(), "r18.pt")
PY

D=(--data photos --size 32 --batch-size 16 --no-latency)
C=("${D[@]}" --epochs 1)
check "train from torchvision weights" "$KD" train --arch mobilenet_v3_small --init-from v3s.pt "${C[@]}" --out v3
grep -q "starts from v3s.pt (classifier.3.bias, classifier.3.weight fresh" err.txt && echo "ok   the head starts fresh, named" || { echo "FAIL init-from log"; cat err.txt; fails=$((fails+1)); }
check "export the weights for PyTorch" "$KD" export v3 --format state-dict --out v3-kd.pt
/usr/bin/python3 - <<'PY' && echo "ok   torchvision loads kd's weights with strict=True" || { echo "FAIL torchvision load"; fails=$((fails+1)); }
import torch, torchvision
m = torchvision.models.mobilenet_v3_small(num_classes=3)
m.load_state_dict(torch.load("v3-kd.pt"), strict=True)
PY
expect_error 1 "r18.pt: the weights do not fit the network: missing" "$KD" train --arch mobilenet_v3_small --init-from r18.pt "${C[@]}" --out wrong
expect_error 1 "nothing.pt: no such file" "$KD" train --arch resnet8x4 --init-from nothing.pt "${C[@]}" --out none

# RepDistiller's pair with a hint between layers named as in PyTorch.
check "teacher resnet32x4" "$KD" train --arch resnet32x4 "${D[@]}" --epochs 6 --out t32
check "distill resnet8x4 with a layer3 hint" "$KD" distill --teacher t32 --student resnet8x4 --hint layer3:layer3 "${C[@]}" --out s8
ok_if "the distilled run records the hint" "'layer3:layer3' in open('s8/config.yaml').read() and 'top1' in open('s8/summary.json').read()"
finish
