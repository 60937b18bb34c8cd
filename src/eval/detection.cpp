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
  const int64_t size = data.image_size();
  auto anchors = detector_anchors(model, size);
  const int64_t C = model.spec().num_classes();
  KD_CHECK(C == data.num_classes(), "model {} has {} classes but the data has {}",
           model.spec().arch, C, data.num_classes());
  std::vector<DetectionBox> out;
  // An image that fails to load (skipped with a warning) has no detections; its boxes still count.
  DetectionLoader loader(data, inference_batch_size(batch_size, data.images), /*shuffle=*/false, {},
                         0, device);
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    DetectionBatch batch = loader.get(b);
    auto y = model.forward(batch.x).to(torch::kCPU);
    for (int64_t i = 0; i < y.size(0); ++i) {
      const auto& info = data.info[static_cast<size_t>(batch.index[i].item<int64_t>())];
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
