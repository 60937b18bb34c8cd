#pragma once
/// @file
/// COCO-style box mAP, computed as the reference evaluator (pycocotools COCOeval, iouType "bbox")
/// does: per image and category, detections sorted by score (stable) and cut at maxDets; greedy
/// matching to the best still-unmatched ground truth with IoU >= t, a crowd box matching any
/// number of detections with IoU = intersection / detection area; ground truth that is crowd,
/// ignored or outside the area range is "ignore", and detections matched to it, or unmatched
/// and outside the area range, count for nothing; precision made monotone and sampled at 101
/// recall points; -1 where a category has no ground truth, left out of the means.
#include <array>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kd/data/coco_boxes.h"

namespace kd {

struct CocoMetrics {
  /// The 12 numbers pycocotools' summarize() prints: AP, AP50, AP75, AP small/medium/large,
  /// AR maxDets 1/10/100, AR small/medium/large.
  std::array<double, 12> stats{};
  std::vector<int64_t> category_ids;
  std::vector<double> per_class_ap;  ///< AP@[.5:.95], area all, maxDets 100; -1: no ground truth
  std::vector<double> per_class_ap50;
  /// Precision at the 101 recall thresholds 0, 0.01, .., 1 at IoU 0.5 (area all, maxDets 100)
  /// per class: the class's precision-recall curve; -1 where undefined.
  std::vector<std::vector<double>> per_class_pr50;
  double map() const { return stats[0]; }
  double map50() const { return stats[1]; }
  nlohmann::json to_json(const std::vector<std::string>& category_names = {}) const;
};

/// image_ids and category_ids: what the ground-truth file lists (images without boxes count:
/// detections on them are false positives). Detections of other images or categories are
/// ignored, as pycocotools does.
CocoMetrics evaluate_coco(const std::vector<GroundTruthBox>& gt,
                          const std::vector<DetectionBox>& dt,
                          const std::vector<int64_t>& image_ids,
                          const std::vector<int64_t>& category_ids);

/// Reads a COCO results file (a JSON list of {image_id, category_id, bbox, score}).
std::vector<DetectionBox> read_coco_results(const std::string& path);
nlohmann::json to_coco_results(const std::vector<DetectionBox>& dt);

}  // namespace kd
