#pragma once
/// @file
/// The one training loop. A task (task.h) supplies batches, the step's loss and the evaluation;
/// the loop owns ranks, resume, the schedule, the optimizer step, checkpoints and metrics.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace torch::optim {
class Optimizer;
}

#include "kd/data/dataset.h"
#include "kd/distill/strategy.h"
#include "kd/distill/task.h"
#include "kd/runs/config.h"

namespace kd {

struct TrainResult {
  int64_t best_epoch = 0;
  double best_score = 0.0;  ///< the task's score at best_epoch (eval top-1, eval mAP)
  double train_seconds = 0.0;
  double train_images_per_s = 0.0;  ///< mean over epochs, training steps only
  std::vector<nlohmann::json> history;
};

/// The optimizer a config names over `params`; set_lr sets every group's learning rate.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& o,
                                                        std::vector<torch::Tensor> params);
void set_lr(torch::optim::Optimizer& opt, double lr);

/// Learning rate at iteration `it` of `total` (warm-up, then cosine / step / constant).
double scheduled_lr(const TrainConfig& cfg, int64_t it, int64_t iters_per_epoch);

/// This rank's share of the configured (global) batch; an error when it does not split evenly.
int64_t rank_batch_size(const TrainConfig& cfg);

class Trainer {
 public:
  Trainer(TrainConfig cfg, torch::Device device, uint64_t seed);
  /// Continue from the run directory's newest good checkpoint (kd/distill/checkpoint.h) instead
  /// of epoch 1: weights, optimizer, schedule position, RNG, task state, metrics so far.
  void set_resume(bool on) { resume_ = on; }
  /// Trains the task's model in place. When run_dir is non-empty, writes metrics.jsonl,
  /// checkpoints and model.pt/model.json (the best weights by the task's score) into it.
  TrainResult fit(TrainingTask& task, const std::string& run_dir);
  /// Classification: `strategy` trains `student` on `train`, scored by top-1 on `eval`.
  TrainResult fit(Model& student, Strategy& strategy, const Dataset& train, const Dataset& eval,
                  const std::string& run_dir);

 private:
  TrainConfig cfg_;
  torch::Device device_;
  uint64_t seed_;
  bool resume_ = false;
};

/// Classification as a task: a Strategy's loss over shuffled (optionally augmented) batches of
/// `train`, top-1 on `eval` (sharded over ranks).
class ClassificationTask final : public TrainingTask {
 public:
  /// Places the student on `device` and prepares the strategy with the training set.
  ClassificationTask(const TrainConfig& cfg, torch::Device device, uint64_t seed, Model& student,
                     Strategy& strategy, const Dataset& train, const Dataset& eval);
  Model& model() override { return student_; }
  std::string score_name() const override { return "best_eval_top1"; }
  std::vector<torch::Tensor> extra_parameters() override { return extra_; }
  bool may_skip_parameters() override { return !extra_.empty(); }
  int64_t num_batches() const override { return loader_.num_batches(); }
  void begin_epoch(int64_t epoch) override;
  TaskStep step(int64_t batch) override;
  std::string describe_training(double mean_loss, const std::vector<double>& sums, double samples,
                                nlohmann::json& record) const override;
  double running_accuracy(const std::vector<double>& sums) const override;
  TaskScore evaluate() override;
  void save_state(const std::filesystem::path& folder) override;
  void load_state(const std::filesystem::path& folder) override;

 private:
  Model& student_;
  Strategy& strategy_;
  const Dataset& eval_;
  int64_t eval_batch_size_;
  torch::Device device_;
  Loader loader_;
  std::vector<torch::Tensor> extra_;
};

}  // namespace kd
