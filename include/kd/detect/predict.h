#pragma once
/// @file
/// A detector on one image file (`kd predict`).
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "kd/detect/boxes.h"
#include "kd/models/model.h"

namespace kd {

/// The anchors of a detector model at input side `size` (its spec's anchor options).
torch::Tensor detector_anchors(const Model& model, int64_t size);

/// Boxes as JSON ([{class, score, bbox: [x, y, w, h]}] in the image's pixels), and the image with
/// the boxes drawn written to `drawn` (when non-empty).
nlohmann::json predict_image(Model& model, const std::string& image, double score_threshold,
                             const std::string& drawn);

}  // namespace kd
