#pragma once
/// @file
/// The model side of `kd serve` and `kd predict`: one served model, its input contract, the batched
/// forward pass (run by the batcher's workers) and the turning of raw outputs into answers (run by
/// the HTTP threads, in parallel). Knows nothing of HTTP or JSON requests, so a build without
/// serving (KD_WITH_SERVE=OFF) has it too.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "kd/models/model.h"

namespace kd {

/// An uploaded image made ready for the model, and what maps boxes back to its pixels.
struct PreparedImage {
  torch::Tensor pixels;  ///< float [C, H, W] in [0, 1]
  int64_t width = 0, height = 0;
  double scale = 1;  ///< letterbox scale (detectors); 1 for classifiers
};

/// A detector's answer for one input, fixed-size so a batch of them forms tensors (the
/// EfficientNMS layout Triton users know): the first `count` rows are real.
struct DetectionTensors {
  torch::Tensor count;    ///< int32 [1]
  torch::Tensor boxes;    ///< float [max_detections, 4] x1, y1, x2, y2
  torch::Tensor scores;   ///< float [max_detections]
  torch::Tensor classes;  ///< int32 [max_detections]
};

class ModelRunner {
 public:
  /// optimize: run the forward pass through kd::optimize_for_inference (CPU, fp32 only); when
  /// that cannot be built, a warning and the model as it is.
  ModelRunner(std::string name, std::string source, std::unique_ptr<Model> model,
              bool optimize = false);

  const std::string& name() const { return name_; }
  const std::string& source() const { return source_; }  // the run directory or .pt it came from
  const ModelSpec& spec() const { return model_->spec(); }
  bool is_detector() const { return spec().task == Task::detect; }
  int64_t num_parameters() const { return params_; }
  bool optimized() const { return optimized_ != nullptr; }
  int64_t num_anchors() const { return anchors_.defined() ? anchors_.size(0) : 0; }
  std::vector<int64_t> input_shape() const;  ///< [-1, C, H, W]

  /// float [B, C, H, W] pixels in [0, 1] -> raw outputs: class logits [B, K] or the detector's
  /// [B, A, K + 4]. Safe to call from several threads at once (eval mode, no state changes).
  torch::Tensor forward(const torch::Tensor& batch);

  /// Decodes and resizes (classifiers) or letterboxes (detectors) an encoded PNG/JPEG.
  /// kd::Error for undecodable bytes or more than max_pixels.
  PreparedImage prepare_image(std::string_view encoded, int64_t max_pixels) const;

  /// Top-k classes of one row of logits: [{"class", "index", "score"}], scores softmaxed.
  nlohmann::json top_classes(const torch::Tensor& logits, int64_t k) const;
  /// One row of detector output to boxes; with an image, boxes are in its original pixels and
  /// clipped to it, without one in input pixels.
  DetectionTensors detect(const torch::Tensor& raw, const PreparedImage* image,
                          double score_threshold, int64_t max_detections) const;
  /// [{"class", "index", "score", "bbox": [x, y, w, h]}] for the real rows of `d`.
  nlohmann::json detections_json(const DetectionTensors& d) const;

 private:
  std::string name_, source_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Model> optimized_;  ///< what forward() runs, when built
  torch::Tensor anchors_;             ///< detectors only
  int64_t params_ = 0;
};

}  // namespace kd
