#include "kd/eval/classify.h"

#include <torch/torch.h>

#include "kd/core/distributed.h"
#include "kd/core/error.h"
#include "kd/data/loader.h"
#include "kd/losses/classification.h"

namespace kd {

nlohmann::json ClassificationReport::to_json(const std::vector<std::string>& names) const {
  nlohmann::json per = nlohmann::json::object();
  for (size_t c = 0; c < per_class.size(); ++c)
    per[c < names.size() ? names[c] : std::to_string(c)] = per_class[c];
  return {{"samples", samples}, {"loss", loss},     {"top1", top1},
          {"top5", top5},       {"per_class", per}, {"confusion", confusion}};
}

ClassificationMeter::ClassificationMeter(int64_t num_classes)
    : num_classes_(num_classes),
      confusion_(torch::zeros({num_classes, num_classes}, torch::kInt64)) {}

void ClassificationMeter::add(const torch::Tensor& logits, const torch::Tensor& target) {
  auto l = logits.detach().to(torch::kCPU, torch::kFloat32);
  auto t = target.to(torch::kCPU);
  KD_CHECK(l.size(1) == num_classes_, "model gives {} outputs but the data has {} classes",
           l.size(1), num_classes_);
  loss_sum_ += torch::nn::functional::cross_entropy(
                   l, t, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                   .item<double>();
  auto pred = l.argmax(1);
  confusion_.view(-1).index_add_(0, t * num_classes_ + pred, torch::ones_like(t));
  const int64_t k = std::min<int64_t>(5, num_classes_);
  auto topk = std::get<1>(l.topk(k, 1));
  top5_hits_ += topk.eq(t.unsqueeze(1)).any(1).sum().item<int64_t>();
  n_ += t.numel();
}

void ClassificationMeter::all_reduce() {
  if (!dist::active()) return;
  auto totals = dist::sum({loss_sum_, static_cast<double>(top5_hits_), static_cast<double>(n_)});
  loss_sum_ = totals[0];
  top5_hits_ = static_cast<int64_t>(totals[1]);
  n_ = static_cast<int64_t>(totals[2]);
  dist::all_reduce_sum(confusion_);
}

ClassificationReport ClassificationMeter::report() const {
  ClassificationReport r;
  r.samples = n_;
  if (n_ == 0) return r;
  r.loss = loss_sum_ / static_cast<double>(n_);
  auto diag = confusion_.diagonal();
  r.top1 = diag.sum().item<double>() / static_cast<double>(n_);
  r.top5 = static_cast<double>(top5_hits_) / static_cast<double>(n_);
  auto rows = confusion_.sum(1);
  auto cm = confusion_.accessor<int64_t, 2>();
  for (int64_t c = 0; c < num_classes_; ++c) {
    const int64_t total = rows[c].item<int64_t>();
    r.per_class.push_back(total ? static_cast<double>(cm[c][c]) / static_cast<double>(total) : 0.0);
    r.confusion.emplace_back(&cm[c][0], &cm[c][0] + num_classes_);
  }
  return r;
}

namespace {

// The model over every batch of `data` in order, in eval mode without autograd.
template <typename Use>
void for_each_batch(Model& model, const Dataset& data, int64_t batch_size, torch::Device device,
                    const Use& use) {
  torch::InferenceMode guard;
  model.train(false);
  Loader loader(data, in_order(inference_batch_size(batch_size, data)), device);
  for (int64_t i = 0; i < loader.num_batches(); ++i) {
    Batch b = loader.get(i);
    use(model.forward(b.x).to(torch::kCPU), b);
  }
}

}  // namespace

torch::Tensor predict_logits(Model& model, const Dataset& data, int64_t batch_size,
                             torch::Device device) {
  std::vector<torch::Tensor> out, index;
  for_each_batch(model, data, batch_size, device, [&](const torch::Tensor& logits, const Batch& b) {
    out.push_back(logits);
    index.push_back(b.index.to(torch::kCPU));
  });
  auto logits = torch::cat(out);
  if (logits.size(0) == data.size()) return logits;
  // Streamed images that failed to load have no logits: zero rows, which no step reads (the
  // image is skipped there too).
  return torch::zeros({data.size(), logits.size(1)}, logits.options())
      .index_copy_(0, torch::cat(index), logits);
}

torch::Tensor predict_logits_all_ranks(Model& model, const Dataset& data, int64_t batch_size,
                                       torch::Device device) {
  if (!dist::active()) return predict_logits(model, data, batch_size, device);
  const int64_t n = data.size(), w = dist::world_size(), per = (n + w - 1) / w;
  // Rank r scores samples r, r + w, ...; the last ranks repeat sample 0 to keep shapes equal.
  auto index = torch::arange(dist::rank(), per * w, w, torch::kInt64).remainder(n);
  auto gathered =
      dist::all_gather_rows(predict_logits(model, data.subset(index), batch_size, device));
  // Gathered row r * per + k is sample k * w + r.
  return gathered.view({w, per, -1})
      .transpose(0, 1)
      .reshape({per * w, -1})
      .narrow(0, 0, n)
      .contiguous();
}

ClassificationReport evaluate_classifier(Model& model, const Dataset& data, int64_t batch_size,
                                         torch::Device device) {
  KD_CHECK(model.spec().num_classes() > 0 || model.spec().kind != "torchscript",
           "{}: a TorchScript model without a description names no classes: write {}.json beside "
           "it with class_names, input_shape, mean and std (docs/guide/training.md)",
           model.spec().arch, model.spec().arch);
  KD_CHECK(model.spec().num_classes() == data.num_classes() || data.num_classes() == 0,
           "model has {} classes but {} has {}", model.spec().num_classes(), data.source,
           data.num_classes());
  ClassificationMeter meter(model.spec().num_classes());
  add_predictions(meter, model, data, batch_size, device);
  return meter.report();
}

void add_predictions(ClassificationMeter& meter, Model& model, const Dataset& data,
                     int64_t batch_size, torch::Device device) {
  for_each_batch(model, data, batch_size, device, [&](const torch::Tensor& logits, const Batch& b) {
    meter.add(logits, b.y.to(torch::kCPU));
  });
}

}  // namespace kd
