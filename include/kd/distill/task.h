#pragma once
/// @file
/// What the one training loop (kd/distill/trainer.h) asks of a task. Classification
/// (ClassificationTask: a Strategy over image batches) and detection (DetectionTask) implement it;
/// the loop owns ranks, resume, the learning-rate schedule, the optimizer step, NaN checks,
/// epoch records and logs, the best epoch and checkpoints. A new task is a new class, not a loop.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace kd {

class Model;

/// One training step on this rank's batch.
struct TaskStep {
  torch::Tensor loss;        ///< the scalar that backward() differentiates
  int64_t samples = 0;       ///< images in the batch
  std::vector<double> sums;  ///< the task's running sums for the epoch record (fixed length)
};

/// An evaluation on the eval split after an epoch: `score` picks the best epoch (higher is
/// better); `record` joins the epoch's metrics.jsonl record and `log` its log line.
struct TaskScore {
  double score = 0;
  nlohmann::json record;
  std::string log;
};

class TrainingTask {
 public:
  virtual ~TrainingTask() = default;
  virtual Model& model() = 0;
  /// The summary key of the best epoch's score ("best_eval_top1", "best_eval_map").
  virtual std::string score_name() const = 0;
  /// Parameters trained beside the model's (adapters, learned heads): optimised and checkpointed.
  virtual std::vector<torch::Tensor> extra_parameters() { return {}; }
  /// True when a step may leave some parameters without a gradient (the gradient sync allows it).
  virtual bool may_skip_parameters() { return false; }
  /// Gradient-norm clip before every optimizer step; 0 leaves gradients alone.
  virtual double max_grad_norm() const { return 0.0; }
  /// What a non-finite loss asks the user to check ("the data", "the boxes").
  virtual std::string nan_hint() const { return "check the data"; }

  virtual int64_t num_batches() const = 0;
  /// Start of epoch `epoch` (1-based): reshuffle, switch to training.
  virtual void begin_epoch(int64_t epoch) = 0;
  virtual TaskStep step(int64_t batch) = 0;
  /// The epoch's training figures from the sums of every step and rank: fields added to `record`
  /// (the loop adds epoch, lr, train_loss, seconds and img/s) and the training part of the log.
  virtual std::string describe_training(double mean_loss, const std::vector<double>& sums,
                                        double samples, nlohmann::json& record) const = 0;
  /// The running accuracy the progress line shows, or a negative number for none.
  virtual double running_accuracy(const std::vector<double>& /*sums*/) const { return -1.0; }
  virtual TaskScore evaluate() = 0;

  /// State beyond the weights, the optimizer and extra_parameters() (a CRD memory bank, a snapshot
  /// teacher), written into and read back from a checkpoint folder. load_state runs before the
  /// weights are loaded.
  virtual void save_state(const std::filesystem::path& /*folder*/) {}
  virtual void load_state(const std::filesystem::path& /*folder*/) {}
};

}  // namespace kd
