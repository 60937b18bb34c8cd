#include "kd/losses/classification.h"

#include <torch/torch.h>

#include "kd/core/error.h"

namespace kd {

torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& target,
                            double label_smoothing) {
  KD_CHECK(label_smoothing >= 0.0 && label_smoothing < 1.0, "label smoothing {} must be in [0, 1)",
           label_smoothing);
  namespace F = torch::nn::functional;
  return F::cross_entropy(logits, target,
                          F::CrossEntropyFuncOptions().label_smoothing(label_smoothing));
}

torch::Tensor soft_target_kl(const torch::Tensor& student_logits,
                             const torch::Tensor& teacher_logits, double temperature) {
  KD_CHECK(temperature > 0.0, "temperature {} must be > 0", temperature);
  KD_CHECK(student_logits.sizes() == teacher_logits.sizes(),
           "student logits {} and teacher logits {} differ in shape",
           c10::str(student_logits.sizes()), c10::str(teacher_logits.sizes()));
  auto log_p_s = torch::log_softmax(student_logits / temperature, 1);
  auto log_p_t = torch::log_softmax(teacher_logits.detach() / temperature, 1);
  return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean();
}

torch::Tensor soft_target_kl_per_sample(const torch::Tensor& student_logits,
                                        const torch::Tensor& target_probs, double temperature) {
  KD_CHECK(temperature > 0.0, "temperature {} must be > 0", temperature);
  KD_CHECK(student_logits.sizes() == target_probs.sizes(),
           "student logits {} and targets {} differ in shape", c10::str(student_logits.sizes()),
           c10::str(target_probs.sizes()));
  auto q = target_probs.detach();
  auto log_p_s = torch::log_softmax(student_logits / temperature, 1);
  // xlogy: 0 * log 0 = 0 for classes a teacher gives no mass (merged or hard targets).
  return (torch::xlogy(q, q) - q * log_p_s).sum(1) * (temperature * temperature);
}

torch::Tensor soft_target_loss(const torch::Tensor& student_logits,
                               const torch::Tensor& teacher_logits, const torch::Tensor& target,
                               const SoftTargetLossOptions& opts) {
  KD_CHECK(opts.alpha >= 0.0 && opts.alpha <= 1.0, "alpha {} must be in [0, 1]", opts.alpha);
  const double T = opts.temperature;
  auto soft = soft_target_kl(student_logits, teacher_logits, T) * (T * T);
  if (opts.alpha == 1.0) return soft;
  auto hard = cross_entropy(student_logits, target, opts.label_smoothing);
  return opts.alpha * soft + (1.0 - opts.alpha) * hard;
}

torch::Tensor mixed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels,
                                  const torch::Tensor& labels_mix, double lam,
                                  double label_smoothing) {
  namespace F = torch::nn::functional;
  auto ce = [&](const torch::Tensor& y) {
    return F::cross_entropy(
        logits, y.clamp_min(0),
        F::CrossEntropyFuncOptions().reduction(torch::kNone).label_smoothing(label_smoothing));
  };
  auto labeled = labels >= 0;
  auto per = ce(labels);
  if (labels_mix.defined()) {
    labeled = labeled.logical_and(labels_mix >= 0);
    per = lam * per + (1.0 - lam) * ce(labels_mix);
  }
  return per * labeled;
}

torch::Tensor distill_loss(const torch::Tensor& student_logits, const torch::Tensor& targets,
                           const torch::Tensor& labels, const SoftTargetLossOptions& opts,
                           bool hard, double threshold, const torch::Tensor& labels_mix,
                           double lam) {
  auto labeled = labels >= 0;
  if (labels_mix.defined()) labeled = labeled.logical_and(labels_mix >= 0);
  auto ce = mixed_cross_entropy(student_logits, labels, labels_mix, lam, opts.label_smoothing);
  torch::Tensor per_sample;
  if (!hard) {
    auto kd = soft_target_kl_per_sample(student_logits, targets, opts.temperature);
    per_sample = torch::where(labeled, (1.0 - opts.alpha) * ce + opts.alpha * kd, kd);
  } else {
    auto [conf, pseudo] = targets.max(1);
    auto use = (conf >= threshold).logical_and(labeled.logical_not());
    per_sample = torch::where(
        labeled, ce,
        mixed_cross_entropy(student_logits, pseudo, {}, 1.0, opts.label_smoothing) * use);
  }
  return per_sample.mean();
}

}  // namespace kd
