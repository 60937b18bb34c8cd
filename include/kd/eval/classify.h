#pragma once
/// @file
/// Classification metrics over a whole dataset.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "kd/data/dataset.h"
#include "kd/models/model.h"

namespace kd {

struct ClassificationReport {
  int64_t samples = 0;
  double loss = 0.0;  ///< mean cross-entropy
  double top1 = 0.0;  ///< fractions in [0, 1]
  double top5 = 0.0;
  std::vector<double> per_class;                ///< recall per true class
  std::vector<std::vector<int64_t>> confusion;  ///< [true][predicted]
  nlohmann::json to_json(const std::vector<std::string>& class_names) const;
};

/// Accumulates batches; used by the trainer (per epoch) and by `kd eval`.
class ClassificationMeter {
 public:
  explicit ClassificationMeter(int64_t num_classes);
  void add(const torch::Tensor& logits, const torch::Tensor& target);
  ClassificationReport report() const;
  /// Sums the counts of every rank into each rank's meter (data-parallel evaluation).
  void all_reduce();

 private:
  int64_t num_classes_;
  torch::Tensor confusion_;  ///< int64 [C, C] on CPU
  double loss_sum_ = 0.0;
  int64_t top5_hits_ = 0;
  int64_t n_ = 0;
};

ClassificationReport evaluate_classifier(Model& model, const Dataset& data, int64_t batch_size,
                                         torch::Device device);
/// The model's predictions on `data` added to `meter` (streamed images that fail to load are
/// left out, each named in a warning).
void add_predictions(ClassificationMeter& meter, Model& model, const Dataset& data,
                     int64_t batch_size, torch::Device device);
/// Logits for every sample in order, in eval mode without autograd (teacher cache, pseudo-labels).
torch::Tensor predict_logits(Model& model, const Dataset& data, int64_t batch_size,
                             torch::Device device);
/// The same, computed by all data-parallel ranks together (each scores every world_size-th
/// sample) and gathered, so every rank gets every row. Every rank must call it.
torch::Tensor predict_logits_all_ranks(Model& model, const Dataset& data, int64_t batch_size,
                                       torch::Device device);

}  // namespace kd
