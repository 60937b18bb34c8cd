#pragma once
/// @file
/// Classification losses: cross-entropy and Hinton soft-target distillation.
#include <string>

#include <torch/types.h>

namespace kd {

/// Mean cross-entropy; label_smoothing as in torch.nn.functional.cross_entropy.
torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& target,
                            double label_smoothing = 0.0);

/// KL(softmax(teacher/T) || softmax(student/T)), summed over classes, averaged over the batch.
torch::Tensor soft_target_kl(const torch::Tensor& student_logits,
                             const torch::Tensor& teacher_logits, double temperature);

/// Per-sample T^2 * KL(q || softmax(student/T)) for target distributions q [B, C] (rows sum to
/// 1, already at temperature T): what every distillation mode reduces its teachers to.
torch::Tensor soft_target_kl_per_sample(const torch::Tensor& student_logits,
                                        const torch::Tensor& target_probs, double temperature);

struct SoftTargetLossOptions {
  double temperature = 4.0;
  double alpha = 0.9;  ///< weight of the soft-target term
  double label_smoothing = 0.0;
};

/// Hinton, Vinyals & Dean 2015: alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(s, y).
/// The T^2 factor keeps the soft term's gradient scale independent of T (their section 2).
torch::Tensor soft_target_loss(const torch::Tensor& student_logits,
                               const torch::Tensor& teacher_logits, const torch::Tensor& target,
                               const SoftTargetLossOptions& opts);

/// Per-sample cross-entropy against labels [B], or for a mixed batch (mixup, cutmix: labels_mix
/// defined) lam CE(labels) + (1 - lam) CE(labels_mix); 0 where a sample's label or its partner's
/// is missing (< 0).
torch::Tensor mixed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels,
                                  const torch::Tensor& labels_mix, double lam,
                                  double label_smoothing);

/// The loss of every teacher-based mode, given target distributions q [B, C] (at temperature T
/// for soft targets, at 1 for hard ones) and labels (kUnlabeled = -1 for images without one),
/// averaged over the batch:
///   soft: labeled (1 - alpha) CE + alpha T^2 KL(q || p_s^T); unlabeled T^2 KL(q || p_s^T)
///   hard: labeled CE(label); unlabeled CE(argmax q) when max q >= threshold, else 0
/// A mixed batch (mixup, cutmix) passes its partner labels and lam: CE is then
/// lam CE(label) + (1 - lam) CE(partner label), and a sample is labeled when both are.
torch::Tensor distill_loss(const torch::Tensor& student_logits, const torch::Tensor& targets,
                           const torch::Tensor& labels, const SoftTargetLossOptions& opts,
                           bool hard, double threshold, const torch::Tensor& labels_mix = {},
                           double lam = 1.0);

}  // namespace kd
