#pragma once
/// @file
/// Boxes in COCO's convention (x, y, w, h in the image's original pixels): what a detection
/// dataset annotates and what a detector reports, as the COCO evaluator (kd/eval/coco.h) reads
/// them.
#include <array>
#include <cstdint>

namespace kd {

struct GroundTruthBox {
  int64_t image_id = 0, category_id = 0;
  std::array<double, 4> bbox{};  ///< x, y, w, h
  double area = 0;               ///< COCO's "area" field (the segment's area), else w * h
  bool iscrowd = false;
  bool ignore = false;  ///< e.g. VOC "difficult": matched detections are not counted
};

struct DetectionBox {
  int64_t image_id = 0, category_id = 0;
  std::array<double, 4> bbox{};  ///< x, y, w, h
  double score = 0;
};

}  // namespace kd
