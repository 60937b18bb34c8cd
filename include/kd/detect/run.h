#pragma once
// Detection runs (`kd train|distill|eval --task detect`) and prediction (`kd predict`). A run
// directory has the same layout as a classification run (kd/distill/run.h); metrics are COCO
// mAP on the eval split per epoch, the best epoch by eval mAP@[.5:.95].
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "kd/detect/boxes.h"
#include "kd/detect/data.h"
#include "kd/distill/config.h"
#include "kd/eval/coco.h"
#include "kd/models/model.h"

namespace kd {

struct DetectionRunData {
  DetectionDataset train, eval, test;
  std::string test_name;  // "test" or "eval"
};

// Input side of a detection run: data.height when set, else the architecture's image_size.
int64_t detection_input_size(const RunConfig& cfg);
DetectionRunData load_detection_run_data(const DataConfig& cfg, int64_t size);

// The detector's boxes for every image of `data`, in the images' original pixels (COCO results).
std::vector<DetectionBox> detect_boxes(Model& model, const DetectionDataset& data, int64_t batch_size,
                                       torch::Device device, const PostprocessOptions& opts = {});
CocoMetrics evaluate_detector(Model& model, const DetectionDataset& data, int64_t batch_size,
                              torch::Device device, const PostprocessOptions& opts = {});

// Trains (and with mode offline, distills) a detector into `dir`, returning summary.json's content;
// resume: continue from the newest good epoch checkpoint in `dir`.
nlohmann::json execute_detect_run(const RunConfig& cfg, const std::string& dir, torch::Device device,
                                  bool resume = false);

// One image file through a detector: boxes as JSON ([{class, score, bbox: [x, y, w, h]}] in the
// image's pixels), and the image with the boxes drawn written to `drawn` (when non-empty).
nlohmann::json predict_image(Model& model, const std::string& image, double score_threshold,
                             const std::string& drawn);

}  // namespace kd
