#include "kd/detect/loss.h"

#include <torch/torch.h>

#include "kd/detect/boxes.h"

namespace kd {

namespace F = torch::nn::functional;

AnchorTargets assign_anchors(const torch::Tensor& anchors, const torch::Tensor& boxes,
                             const torch::Tensor& labels, int64_t num_classes) {
  const int64_t B = boxes.size(0), A = anchors.size(0), G = boxes.size(1);
  auto opts = boxes.options();
  // IoU of every anchor with every box of its image: [B, A, G]; padding never matches.
  auto iou =
      box_iou(anchors, boxes.reshape({B * G, 4})).view({A, B, G}).permute({1, 0, 2}).contiguous();
  auto valid = (labels != -1).unsqueeze(1);  // [B, 1, G]
  iou = iou.masked_fill(~valid, -1.0);
  auto [best, match] = iou.max(2);  // [B, A]
  // Each real box's best anchor: positive whatever its IoU.
  auto real = labels >= 0;           // [B, G]
  auto best_anchor = iou.argmax(1);  // [B, G]
  auto forced =
      torch::zeros({B, A}, torch::TensorOptions().dtype(torch::kBool).device(boxes.device()));
  auto bg = real.nonzero();  // [K, 2] (image, box)
  auto b_idx = bg.select(1, 0), g_idx = bg.select(1, 1);
  auto a_idx = best_anchor.index({b_idx, g_idx});
  forced.index_put_({b_idx, a_idx}, true);
  match.index_put_({b_idx, a_idx}, g_idx);
  auto matched_label = labels.gather(1, match);  // [B, A]
  auto positive = ((best >= 0.5) & (matched_label >= 0)) | forced;
  auto negative = (best < 0.4) & ~forced;
  auto ignored_region = (matched_label == -2) & ~forced;
  AnchorTargets t;
  t.positive = positive & ~ignored_region;
  t.weight = ((t.positive | negative) & ~ignored_region).to(opts.dtype());
  t.classes = torch::zeros({B, A, num_classes}, opts);
  auto cls = matched_label.clamp_min(0);
  t.classes.scatter_(2, cls.unsqueeze(2), t.positive.unsqueeze(2).to(opts.dtype()));
  auto matched_boxes = boxes.gather(1, match.unsqueeze(2).expand({B, A, 4}));
  t.boxes = encode_boxes(matched_boxes, anchors.unsqueeze(0));
  t.num_positive = t.positive.sum().item<double>();
  return t;
}

torch::Tensor focal_loss(const torch::Tensor& logits, const torch::Tensor& targets, double alpha,
                         double gamma) {
  auto p = torch::sigmoid(logits);
  auto ce = F::binary_cross_entropy_with_logits(
      logits, targets, F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone));
  auto p_t = p * targets + (1 - p) * (1 - targets);
  auto loss = ce * torch::pow(1 - p_t, gamma);
  if (alpha >= 0) loss = loss * (alpha * targets + (1 - alpha) * (1 - targets));
  return loss;
}

DetectionLoss detection_loss(const torch::Tensor& output, const AnchorTargets& t,
                             int64_t num_classes, const DetectionLossOptions& o) {
  const double norm = std::max(1.0, t.num_positive);
  auto logits = output.narrow(2, 0, num_classes);
  auto deltas = output.narrow(2, num_classes, 4);
  auto cls =
      (focal_loss(logits, t.classes, o.focal_alpha, o.focal_gamma).sum(2) * t.weight).sum() / norm;
  auto huber = F::huber_loss(
      deltas, t.boxes, F::HuberLossFuncOptions().reduction(torch::kNone).delta(o.huber_delta));
  auto box = (huber.sum(2) * t.positive.to(huber.dtype())).sum() / (norm * 4);
  return {cls + o.box_weight * box, cls, box};
}

torch::Tensor class_distill_loss(const torch::Tensor& s, const torch::Tensor& t, double T,
                                 double normalizer) {
  // KL(Bern(q) || Bern(p)) = BCE(p; q) - H(q), with log-sigmoids for stability.
  auto q = torch::sigmoid(t / T);
  auto ls = F::logsigmoid(s / T), ls_neg = F::logsigmoid(-s / T);
  auto lt = F::logsigmoid(t / T), lt_neg = F::logsigmoid(-t / T);
  auto kl = q * (lt - ls) + (1 - q) * (lt_neg - ls_neg);
  return kl.sum() * (T * T) / std::max(1.0, normalizer);
}

torch::Tensor box_distill_loss(const torch::Tensor& s, const torch::Tensor& t,
                               const torch::Tensor& t_logits, double delta) {
  auto w = std::get<0>(torch::sigmoid(t_logits).max(2));  // [B, A]
  auto huber =
      F::huber_loss(s, t, F::HuberLossFuncOptions().reduction(torch::kNone).delta(delta)).sum(2);
  return (huber * w).sum() / (w.sum() * 4).clamp_min(1e-6);
}

}  // namespace kd
