#pragma once
/// @file
/// EfficientDet-style detectors (Tan, Pang & Le, CVPR 2020), scaled down to 2 CPU cores, in the
/// Lite form (MBConv without squeeze-excite, ReLU6): a MobileNetV2/EfficientNet backbone, a BiFPN
/// with fast normalized fusion over pyramid levels P3-P5, and class and box heads shared across
/// levels (batch norm per level). d0..d3 follow the paper's compound scaling: input size, backbone
/// width and depth, BiFPN width and repeats, and head depth grow together.
///
/// A detector's forward returns one tensor [B, A, C + 4]: per anchor, C class logits (sigmoid, no
/// background class) then the box deltas (dy, dx, dh, dw) relative to that anchor
/// (kd/detect/boxes.h). Anchors are ordered by level, row, column, then the 9 anchors of a
/// location (3 scales x 3 aspect ratios). forward_with_features taps the BiFPN outputs "P3".."P5"
/// and the backbone outputs "C3".."C5".
#include <vector>

#include "kd/models/registry.h"

namespace kd {

const std::vector<ArchInfo>& detector_architectures();

constexpr int64_t kMinLevel = 3, kMaxLevel = 5;

}  // namespace kd
