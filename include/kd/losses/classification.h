#pragma once
// Classification losses: cross-entropy and Hinton soft-target distillation.
#include <torch/types.h>

namespace kd {

// Mean cross-entropy; label_smoothing as in torch.nn.functional.cross_entropy.
torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& target,
                            double label_smoothing = 0.0);

// KL(softmax(teacher/T) || softmax(student/T)), summed over classes, averaged over the batch.
torch::Tensor soft_target_kl(const torch::Tensor& student_logits,
                             const torch::Tensor& teacher_logits, double temperature);

struct SoftTargetLossOptions {
  double temperature = 4.0;
  double alpha = 0.9;  // weight of the soft-target term
  double label_smoothing = 0.0;
};

// Hinton, Vinyals & Dean 2015: alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(s, y).
// The T^2 factor keeps the soft term's gradient scale independent of T (their section 2).
torch::Tensor soft_target_loss(const torch::Tensor& student_logits,
                               const torch::Tensor& teacher_logits, const torch::Tensor& target,
                               const SoftTargetLossOptions& opts);

}  // namespace kd
