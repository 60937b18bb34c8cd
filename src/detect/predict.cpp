#include "kd/detect/predict.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/data/detection.h"

namespace kd {

torch::Tensor detector_anchors(const Model& model, int64_t size) {
  KD_CHECK(model.spec().task == Task::detect, "model {} is not a detector", model.spec().arch);
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
  nlohmann::json boxes = nlohmann::json::array();
  std::vector<LabeledBox> labeled;
  for (const auto& d :
       image_detections(y[0], detector_anchors(model, size), model.spec().num_classes(),
                        static_cast<double>(w), static_cast<double>(h), scale, po)) {
    const auto& name = model.spec().class_names[static_cast<size_t>(d.cls)];
    const double score = d.score;
    boxes.push_back(
        {{"class", name}, {"score", score}, {"bbox", {d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1}}});
    labeled.push_back({d.x1, d.y1, d.x2, d.y2, d.cls, fmt::format("{} {:.2f}", name, score)});
  }
  if (!drawn.empty()) write_image_with_boxes(image, labeled, drawn);
  return {{"image", image}, {"width", w}, {"height", h}, {"detections", boxes}};
}

}  // namespace kd
