#pragma once
// A distillation mode is a Strategy on the one training loop (trainer.h): it decides what the
// student's loss is for a batch. Plain supervised training is the trivial strategy.
#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "kd/data/loader.h"
#include "kd/losses/classification.h"
#include "kd/models/model.h"

namespace kd {

struct StepResult {
  torch::Tensor loss;    // scalar, differentiable w.r.t. the student
  torch::Tensor logits;  // student outputs for accuracy bookkeeping
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;
  // Called once before the first epoch with the training set the loader batches from.
  virtual void prepare(const Dataset& /*train*/, const Augment& /*augment*/, torch::Device) {}
  virtual StepResult step(Model& student, const Batch& batch) = 0;
  virtual nlohmann::json describe() const { return {{"strategy", name()}}; }
};

class SupervisedStrategy final : public Strategy {
 public:
  explicit SupervisedStrategy(double label_smoothing) : label_smoothing_(label_smoothing) {}
  std::string name() const override { return "train"; }
  StepResult step(Model& student, const Batch& batch) override;

 private:
  double label_smoothing_;
};

struct OfflineDistillOptions {
  SoftTargetLossOptions loss;
  bool use_cache = true;
  std::string cache_dir;
  int64_t teacher_batch_size = 1000;
};

// Frozen teacher, Hinton soft targets. With augmentation off the teacher's logits for the
// whole training set come from a TeacherCache instead of a forward pass per batch.
class OfflineDistillStrategy final : public Strategy {
 public:
  OfflineDistillStrategy(std::shared_ptr<Model> teacher, OfflineDistillOptions opts);
  std::string name() const override { return "offline"; }
  void prepare(const Dataset& train, const Augment& augment, torch::Device device) override;
  StepResult step(Model& student, const Batch& batch) override;
  nlohmann::json describe() const override;

 private:
  std::shared_ptr<Model> teacher_;
  OfflineDistillOptions opts_;
  torch::Tensor cached_logits_;  // [N, C] on the device, or undefined when not cached
  std::string cache_status_ = "off";
};

}  // namespace kd
