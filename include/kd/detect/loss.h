#pragma once
/// @file
/// Detection losses: anchor assignment, focal loss plus Huber box loss (EfficientDet's recipe),
/// and the distillation terms a detector student learns from a detector teacher.
#include <torch/types.h>

namespace kd {

struct AnchorTargets {
  torch::Tensor classes;   ///< float [B, A, C] one-hot of the matched box (zeros for background)
  torch::Tensor weight;    ///< float [B, A]: 1 positive or negative, 0 ignored
  torch::Tensor boxes;     ///< float [B, A, 4] encoded matched box (positives only meaningful)
  torch::Tensor positive;  ///< bool [B, A]
  double num_positive = 0;
};

/// IoU >= 0.5 positive, < 0.4 negative, in between ignored; each box's best anchor is positive
/// as well (so small boxes are never lost). Anchors whose best match is an ignore region (label
/// -2) are ignored; label -1 is padding.
AnchorTargets assign_anchors(const torch::Tensor& anchors, const torch::Tensor& boxes,
                             const torch::Tensor& labels, int64_t num_classes);

struct DetectionLossOptions {
  double focal_alpha = 0.25;
  double focal_gamma = 1.5;
  double huber_delta = 0.1;
  double box_weight = 50.0;
};

/// Sigmoid focal loss (Lin et al. 2017), summed (no reduction), as torchvision's
/// sigmoid_focal_loss.
torch::Tensor focal_loss(const torch::Tensor& logits, const torch::Tensor& targets, double alpha,
                         double gamma);

struct DetectionLoss {
  torch::Tensor total, classification, box;
};

/// output [B, A, C + 4]. Class loss: focal loss over non-ignored anchors / positives; box loss:
/// Huber over positives / (positives * 4), times box_weight.
DetectionLoss detection_loss(const torch::Tensor& output, const AnchorTargets& t,
                             int64_t num_classes, const DetectionLossOptions& opts);

/// Class-head distillation: per anchor and class, the Bernoulli KL divergence between the
/// teacher's and the student's sigmoid probabilities at temperature T, times T^2, summed and
/// divided by `normalizer` (the positives, as the focal loss is).
torch::Tensor class_distill_loss(const torch::Tensor& student_logits,
                                 const torch::Tensor& teacher_logits, double temperature,
                                 double normalizer);
/// Box-head distillation: Huber distance between the student's and the teacher's box outputs,
/// per anchor weighted by the teacher's top class probability, normalised by the weights' sum.
torch::Tensor box_distill_loss(const torch::Tensor& student_boxes,
                               const torch::Tensor& teacher_boxes,
                               const torch::Tensor& teacher_logits, double huber_delta);

}  // namespace kd
