#include "kd/eval/detection.h"

#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/data/loader.h"
#include "kd/detect/predict.h"

namespace kd {

std::vector<DetectionBox> detect_boxes(Model& model, const DetectionDataset& data,
                                       int64_t batch_size, torch::Device device,
                                       const PostprocessOptions& opts) {
  torch::InferenceMode guard;
  model.train(false);
  const int64_t size = data.images.size(3);
  auto anchors = detector_anchors(model, size);
  const int64_t C = model.spec().num_classes();
  KD_CHECK(C == data.num_classes(), "model {} has {} classes but the data has {}",
           model.spec().arch, C, data.num_classes());
  std::vector<DetectionBox> out;
  batch_size = inference_batch_size(batch_size, data.images);
  for (int64_t start = 0; start < data.size(); start += batch_size) {
    const int64_t n = std::min(batch_size, data.size() - start);
    auto x = data.images.narrow(0, start, n).to(device).to(torch::kFloat).div_(255.0);
    auto y = model.forward(x).to(torch::kCPU);
    for (int64_t i = 0; i < n; ++i) {
      const auto& info = data.info[static_cast<size_t>(start + i)];
      // Boxes are clipped to the letterboxed image, not to the padding.
      for (const auto& d :
           image_detections(y[i], anchors, C, info.width, info.height, info.scale, opts))
        out.push_back({info.id,
                       data.category_ids[static_cast<size_t>(d.cls)],
                       {d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1},
                       d.score});
    }
  }
  return out;
}

CocoMetrics evaluate_detector(Model& model, const DetectionDataset& data, int64_t batch_size,
                              torch::Device device, const PostprocessOptions& opts) {
  return evaluate_coco(data.ground_truth, detect_boxes(model, data, batch_size, device, opts),
                       data.image_ids(), data.category_ids);
}

}  // namespace kd
