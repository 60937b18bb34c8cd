#pragma once
// Detection runs (`kd train|distill` with a detector architecture): the same run directory as a
// classification run (kd/runs/run.h) and the same training loop (trainer.h); metrics are COCO
// mAP on the eval split per epoch, the best epoch by eval mAP@[.5:.95].
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/modules/conv.h>
#include <torch/types.h>

#include "kd/data/detection.h"
#include "kd/detect/boxes.h"
#include "kd/detect/loss.h"
#include "kd/distill/task.h"
#include "kd/losses/registry.h"
#include "kd/models/model.h"
#include "kd/runs/config.h"

namespace kd {

// A detector trained with focal + box losses on `train`, scored by COCO mAP on `eval`; with a
// teacher, also its class, box and pyramid-feature distillation terms (cfg.detect).
class DetectionTask final : public TrainingTask {
 public:
  // `teacher` may be null (plain training). Places both on `device`.
  DetectionTask(const RunConfig& cfg, torch::Device device, Model& student,
                std::shared_ptr<Model> teacher, const DetectionDataset& train,
                const DetectionDataset& eval);
  Model& model() override { return student_; }
  std::string score_name() const override { return "best_eval_map"; }
  std::vector<torch::Tensor> extra_parameters() override;
  // Detection losses spike on early batches; clipped as EfficientDet does (norm 10).
  double max_grad_norm() const override { return 10.0; }
  std::string nan_hint() const override { return "check the boxes"; }
  int64_t num_batches() const override { return loader_.num_batches(); }
  void begin_epoch(int64_t epoch) override;
  TaskStep step(int64_t batch) override;
  std::string describe_training(double mean_loss, const std::vector<double>& sums, double samples,
                                nlohmann::json& record) const override;
  TaskScore evaluate() override;

  const PostprocessOptions& postprocess_options() const { return post_; }
  const std::vector<std::string>& levels() const { return levels_; }
  const LossSpec& feature_term() const { return feature_term_; }

 private:
  const RunConfig& cfg_;
  torch::Device device_;
  Model& student_;
  std::shared_ptr<Model> teacher_;
  const DetectionDataset& eval_;
  int64_t classes_;
  LossSpec feature_term_;
  std::vector<std::string> levels_;
  std::vector<torch::nn::Conv2d> adapters_;
  torch::Tensor anchors_;
  DetectionLossOptions loss_options_;
  PostprocessOptions post_;
  DetectionLoader loader_;
};

// Trains (and with mode offline, distills) a detector into `dir`, returning summary.json's content;
// resume: continue from the newest good epoch checkpoint in `dir`.
nlohmann::json execute_detect_run(const RunConfig& cfg, const std::string& dir,
                                  torch::Device device, bool resume = false);

}  // namespace kd
