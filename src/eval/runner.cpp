#include "kd/eval/runner.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/data/detection.h"
#include "kd/data/image.h"
#include "kd/detect/boxes.h"
#include "kd/models/export.h"

namespace kd {

ModelRunner::ModelRunner(std::string name, std::string source, std::unique_ptr<Model> model,
                         bool optimize)
    : name_(std::move(name)), source_(std::move(source)), model_(std::move(model)) {
  KD_CHECK(spec().input_shape.size() == 3, "{}: the model has no input shape [C, H, W]", source_);
  model_->train(false);
  params_ = model_->num_parameters();
  // An INT8 model is its quantized kernels already.
  if (optimize && spec().precision == "fp32") {
    try {
      double diff = 0;
      optimized_ = optimize_for_inference(*model_, &diff);
      spdlog::debug("{}: optimized for inference (max |diff| {:.2g} against the model as trained)",
                    name_, diff);
    } catch (const std::exception& e) {
      spdlog::warn("{}: serving the model as it is; optimizing it for inference failed: {}", name_,
                   first_line(e.what()));
    }
  }
  if (is_detector()) {
    KD_CHECK(spec().input_shape[1] == spec().input_shape[2],
             "{}: a detector's input must be square", source_);
    anchors_ = make_anchors(spec().options, spec().input_shape[1], spec().input_shape[2]);
  }
}

std::vector<int64_t> ModelRunner::input_shape() const {
  const auto& s = spec().input_shape;
  return {-1, s[0], s[1], s[2]};
}

torch::Tensor ModelRunner::forward(const torch::Tensor& batch) {
  Model& m = optimized_ ? *optimized_ : *model_;
  return m.forward(batch.to(m.device())).to(torch::kCPU);
}

PreparedImage ModelRunner::prepare_image(std::string_view encoded, int64_t max_pixels) const {
  const auto& s = spec().input_shape;
  PreparedImage p;
  if (is_detector()) {
    p.pixels = letterbox_encoded(encoded, s[1], max_pixels, &p.scale, &p.width, &p.height);
  } else {
    const ImageSize size = encoded_image_size(encoded);
    p.width = size.width;
    p.height = size.height;
    p.pixels = decode_image(encoded,
                            ImageOptions{static_cast<int>(s[0]), static_cast<int>(s[1]),
                                         static_cast<int>(s[2]), static_cast<int>(spec().resize)},
                            max_pixels);
  }
  p.pixels = p.pixels.to(torch::kFloat).div_(255.0);
  return p;
}

nlohmann::json ModelRunner::top_classes(const torch::Tensor& logits, int64_t k) const {
  auto probs = torch::softmax(logits.to(torch::kFloat), 0);
  k = std::min<int64_t>(std::max<int64_t>(k, 1), probs.size(0));
  auto [scores, index] = probs.topk(k);
  nlohmann::json out = nlohmann::json::array();
  for (int64_t i = 0; i < k; ++i) {
    const int64_t c = index[i].item<int64_t>();
    out.push_back({{"class", spec().class_names.at(static_cast<size_t>(c))},
                   {"index", c},
                   {"score", scores[i].item<double>()}});
  }
  return out;
}

DetectionTensors ModelRunner::detect(const torch::Tensor& raw, const PreparedImage* image,
                                     double score_threshold, int64_t max_detections) const {
  PostprocessOptions po;
  po.score_threshold = score_threshold;
  po.max_detections = max_detections;
  const double side = static_cast<double>(spec().input_shape[1]);
  // Boxes are clipped to the letterboxed picture, not to its padding, then mapped back.
  const double clip_w = image ? static_cast<double>(image->width) * image->scale : side;
  const double clip_h = image ? static_cast<double>(image->height) * image->scale : side;
  auto det = postprocess(raw, anchors_, spec().num_classes(), clip_w, clip_h, po);
  const int64_t n = det.boxes.size(0);
  DetectionTensors out{torch::full({1}, static_cast<int32_t>(n), torch::kInt32),
                       torch::zeros({max_detections, 4}), torch::zeros({max_detections}),
                       torch::full({max_detections}, -1, torch::kInt32)};
  if (n > 0) {
    out.boxes.narrow(0, 0, n).copy_(image ? det.boxes / image->scale : det.boxes);
    out.scores.narrow(0, 0, n).copy_(det.scores);
    out.classes.narrow(0, 0, n).copy_(det.classes.to(torch::kInt32));
  }
  return out;
}

nlohmann::json ModelRunner::detections_json(const DetectionTensors& d) const {
  nlohmann::json out = nlohmann::json::array();
  const int64_t n = d.count[0].item<int32_t>();
  auto b = d.boxes.accessor<float, 2>();
  auto s = d.scores.accessor<float, 1>();
  auto c = d.classes.accessor<int32_t, 1>();
  for (int64_t i = 0; i < n; ++i)
    out.push_back({{"class", spec().class_names.at(static_cast<size_t>(c[i]))},
                   {"index", c[i]},
                   {"score", s[i]},
                   {"bbox", {b[i][0], b[i][1], b[i][2] - b[i][0], b[i][3] - b[i][1]}}});
  return out;
}

}  // namespace kd
