#pragma once
/// @file
/// CRD's state: the two learned embedding heads and the memory bank of every training image's
/// embeddings (Tian et al. 2020). The loss itself is crd_loss (zoo.h); this keeps what it reads
/// between steps, and its bank is part of a resumable checkpoint (save / load).
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include "kd/losses/registry.h"

namespace kd {

class ContrastMemoryImpl : public torch::nn::Module {
 public:
  /// Heads from the flattened student / teacher feature widths to spec's dim; a bank of n_data
  /// rows per network, initialised as the authors do (uniform in +-1/sqrt(dim/3)).
  ContrastMemoryImpl(const LossSpec& spec, int64_t student_width, int64_t teacher_width,
                     int64_t n_data);
  /// The loss on one batch (features [B, ...] of the student and the teacher; index [B] the
  /// images' rows in the training set), then, in training mode, the bank rows of these images
  /// moved towards their new embeddings. With several data-parallel ranks the rows of every rank
  /// update every rank's bank, so the banks stay identical.
  torch::Tensor forward(const torch::Tensor& student_feature, const torch::Tensor& teacher_feature,
                        const torch::Tensor& index);
  void save(const std::string& path) const;
  void load(const std::string& path);

 private:
  double T_, momentum_;
  int64_t negatives_;
  torch::nn::Linear embed_s_{nullptr}, embed_t_{nullptr};
  torch::Tensor memory_s_, memory_t_;
  torch::Tensor z_;  ///< [2] normalisers, -1 until the first batch sets them
};
TORCH_MODULE(ContrastMemory);

}  // namespace kd
