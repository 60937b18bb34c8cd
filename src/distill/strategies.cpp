#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/distill/strategy.h"
#include "kd/distill/teacher_cache.h"

namespace kd {

StepResult SupervisedStrategy::step(Model& student, const Batch& batch) {
  auto logits = student.forward(batch.x);
  return {cross_entropy(logits, batch.y, label_smoothing_), logits};
}

OfflineDistillStrategy::OfflineDistillStrategy(std::shared_ptr<Model> teacher,
                                               OfflineDistillOptions opts)
    : teacher_(std::move(teacher)), opts_(std::move(opts)) {}

void OfflineDistillStrategy::prepare(const Dataset& train, const Augment& augment,
                                     torch::Device device) {
  teacher_->to(device);
  teacher_->train(false);
  for (auto& p : teacher_->parameters()) p.requires_grad_(false);
  if (!opts_.use_cache || augment.enabled()) {
    cache_status_ = augment.enabled() ? "off (augmentation on)" : "off";
    return;
  }
  auto cached = cached_teacher_logits(*teacher_, train,
                                      opts_.cache_dir.empty() ? default_cache_dir() : opts_.cache_dir,
                                      opts_.teacher_batch_size, device);
  cache_status_ = cached.hit ? "hit" : "miss (computed)";
  spdlog::info("teacher cache {}: {}", cache_status_, cached.path);
  cached_logits_ = cached.logits.to(device);
}

StepResult OfflineDistillStrategy::step(Model& student, const Batch& batch) {
  torch::Tensor teacher_logits;
  if (cached_logits_.defined()) {
    teacher_logits = cached_logits_.index_select(0, batch.index);
  } else {
    torch::NoGradGuard no_grad;
    teacher_logits = teacher_->forward(batch.x);
  }
  auto logits = student.forward(batch.x);
  return {soft_target_loss(logits, teacher_logits, batch.y, opts_.loss), logits};
}

nlohmann::json OfflineDistillStrategy::describe() const {
  return {{"strategy", name()},
          {"teacher", teacher_->spec().arch},
          {"temperature", opts_.loss.temperature},
          {"alpha", opts_.loss.alpha},
          {"teacher_cache", cache_status_}};
}

}  // namespace kd
