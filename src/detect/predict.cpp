#include "kd/detect/predict.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/data/detection.h"

namespace kd {

torch::Tensor detector_anchors(const Model& model, int64_t size) {
  KD_CHECK(model.spec().task == "detect", "model {} is not a detector", model.spec().arch);
  return make_anchors(model.spec().options, size, size);
}

nlohmann::json predict_image(Model& model, const std::string& image, double score_threshold,
                             const std::string& drawn) {
  const int64_t size = model.spec().input_shape.at(1);
  double scale = 1;
  int64_t w = 0, h = 0;
  auto x = letterbox_image(image, size, &scale, &w, &h).unsqueeze(0).to(torch::kFloat).div_(255.0);
  torch::InferenceMode guard;
  model.train(false);
  auto y = model.forward(x.to(model.device())).to(torch::kCPU);
  PostprocessOptions po;
  po.score_threshold = score_threshold;
  auto det = postprocess(y[0], detector_anchors(model, size), model.spec().num_classes(),
                         static_cast<double>(w) * scale, static_cast<double>(h) * scale, po);
  auto b = (det.boxes / scale).contiguous();
  auto ba = b.accessor<float, 2>();
  auto sa = det.scores.accessor<float, 1>();
  auto ca = det.classes.accessor<int64_t, 1>();
  nlohmann::json boxes = nlohmann::json::array();
  std::vector<LabeledBox> labeled;
  for (int64_t k = 0; k < b.size(0); ++k) {
    const auto& name = model.spec().class_names[static_cast<size_t>(ca[k])];
    const float x1 = ba[k][0], y1 = ba[k][1], x2 = ba[k][2], y2 = ba[k][3];
    const double score = sa[k];
    boxes.push_back({{"class", name}, {"score", score}, {"bbox", {x1, y1, x2 - x1, y2 - y1}}});
    labeled.push_back({x1, y1, x2, y2, ca[k], fmt::format("{} {:.2f}", name, score)});
  }
  if (!drawn.empty()) write_image_with_boxes(image, labeled, drawn);
  return {{"image", image}, {"width", w}, {"height", h}, {"detections", boxes}};
}

}  // namespace kd
