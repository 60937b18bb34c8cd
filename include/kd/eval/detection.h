#pragma once
/// @file
/// A detector scored on a detection dataset: its boxes in the images' original pixels, and their
/// COCO mAP against the dataset's ground truth.
#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "kd/data/detection.h"
#include "kd/detect/boxes.h"
#include "kd/eval/coco.h"
#include "kd/models/model.h"

namespace kd {

/// The detector's boxes for every image of `data`, in the images' original pixels (COCO results).
std::vector<DetectionBox> detect_boxes(Model& model, const DetectionDataset& data,
                                       int64_t batch_size, torch::Device device,
                                       const PostprocessOptions& opts = {});
CocoMetrics evaluate_detector(Model& model, const DetectionDataset& data, int64_t batch_size,
                              torch::Device device, const PostprocessOptions& opts = {});

}  // namespace kd
