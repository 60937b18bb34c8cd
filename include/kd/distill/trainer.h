#pragma once
// The one training loop. Strategies (strategy.h) supply the loss; the loop owns optimisation,
// the schedule, per-epoch evaluation, checkpoints and metrics.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace torch::optim {
class Optimizer;
}

#include "kd/distill/config.h"
#include "kd/distill/strategy.h"

namespace kd {

struct TrainResult {
  int64_t best_epoch = 0;
  double best_eval_top1 = 0.0;
  double train_seconds = 0.0;
  double train_images_per_s = 0.0;  // mean over epochs, training steps only
  std::vector<nlohmann::json> history;
};

// The optimizer a config names over `params`; set_lr sets every group's learning rate.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& o, std::vector<torch::Tensor> params);
void set_lr(torch::optim::Optimizer& opt, double lr);

// Learning rate at iteration `it` of `total` (warm-up, then cosine / step / constant).
double scheduled_lr(const TrainConfig& cfg, int64_t it, int64_t iters_per_epoch);

class Trainer {
 public:
  Trainer(TrainConfig cfg, torch::Device device, uint64_t seed);
  // Continue from the run directory's newest good checkpoint (kd/distill/checkpoint.h) instead
  // of epoch 1: weights, optimizer, schedule position, RNG, strategy state, metrics so far.
  void set_resume(bool on) { resume_ = on; }
  // Trains `student` in place. When run_dir is non-empty, writes metrics.jsonl, checkpoints
  // and model.pt/model.json (the best weights by eval top-1) into it as training goes.
  TrainResult fit(Model& student, Strategy& strategy, const Dataset& train, const Dataset& eval,
                  const std::string& run_dir);

 private:
  TrainConfig cfg_;
  torch::Device device_;
  uint64_t seed_;
  bool resume_ = false;
};

}  // namespace kd
