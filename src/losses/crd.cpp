#include "kd/losses/crd.h"

#include <cmath>

#include <torch/torch.h>

#include "kd/core/distributed.h"
#include "kd/core/error.h"
#include "kd/losses/zoo.h"

namespace kd {
namespace {

namespace F = torch::nn::functional;

torch::Tensor unit_rows(const torch::Tensor& x) {
  return F::normalize(x, F::NormalizeFuncOptions().dim(1));
}

// Rows of every rank's part, in rank order; parts may differ in length (a last, short batch).
torch::Tensor gather_rows(const torch::Tensor& part) {
  if (!dist::active()) return part;
  auto counts = torch::zeros({dist::world_size()}, torch::kFloat64);
  counts[dist::rank()] = static_cast<double>(part.size(0));
  dist::all_reduce_sum(counts);
  const int64_t most = static_cast<int64_t>(counts.max().item<double>());
  auto padded = torch::zeros({most, part.size(1)}, part.options());
  padded.narrow(0, 0, part.size(0)).copy_(part);
  auto all = dist::all_gather_rows(padded);
  std::vector<torch::Tensor> rows;
  for (int r = 0; r < dist::world_size(); ++r)
    rows.push_back(all.narrow(0, r * most, static_cast<int64_t>(counts[r].item<double>())));
  return torch::cat(rows);
}

}  // namespace

ContrastMemoryImpl::ContrastMemoryImpl(const LossSpec& spec, int64_t student_width,
                                       int64_t teacher_width, int64_t n_data)
    : T_(spec.get("T")),
      momentum_(spec.get("momentum")),
      negatives_(static_cast<int64_t>(spec.get("negatives"))) {
  const auto dim = static_cast<int64_t>(spec.get("dim"));
  KD_CHECK(n_data >= 2, "crd needs at least 2 training images, got {}", n_data);
  embed_s_ = register_module("embed_s", torch::nn::Linear(student_width, dim));
  embed_t_ = register_module("embed_t", torch::nn::Linear(teacher_width, dim));
  const double stdv = 1.0 / std::sqrt(static_cast<double>(dim) / 3.0);
  memory_s_ = register_buffer("memory_s", torch::rand({n_data, dim}).mul_(2 * stdv).add_(-stdv));
  memory_t_ = register_buffer("memory_t", torch::rand({n_data, dim}).mul_(2 * stdv).add_(-stdv));
  z_ = register_buffer("z", torch::full({2}, -1.0, torch::kFloat64));
}

torch::Tensor ContrastMemoryImpl::forward(const torch::Tensor& student_feature,
                                          const torch::Tensor& teacher_feature,
                                          const torch::Tensor& index) {
  auto es = unit_rows(embed_s_(student_feature.flatten(1).to(torch::kFloat32)));
  auto et = unit_rows(embed_t_(teacher_feature.detach().flatten(1).to(torch::kFloat32)));
  const int64_t n = memory_s_.size(0);
  auto idx = index.to(memory_s_.device());
  auto negatives = torch::randint(n, {negatives_}, torch::TensorOptions().dtype(torch::kInt64))
                       .to(memory_s_.device());
  if (z_[0].item<double>() < 0) {
    // Every rank takes the mean of all ranks' estimates, so the banks' scales agree.
    auto z = torch::tensor({crd_normalizer(es, memory_t_, idx, negatives, T_),
                            crd_normalizer(et, memory_s_, idx, negatives, T_)},
                           torch::kFloat64);
    if (dist::active()) {
      dist::all_reduce_sum(z);
      z /= static_cast<double>(dist::world_size());
    }
    z_.copy_(z.to(z_.device()));
  }
  auto loss = crd_loss(es, et, memory_s_, memory_t_, idx, negatives, T_, z_[0].item<double>(),
                       z_[1].item<double>());
  if (is_training()) {
    torch::NoGradGuard no_grad;
    auto all_idx = gather_rows(idx.unsqueeze(1)).squeeze(1);
    auto all_es = gather_rows(es.detach()), all_et = gather_rows(et.detach());
    auto move = [&](torch::Tensor& bank, const torch::Tensor& e) {
      auto rows = bank.index_select(0, all_idx).mul_(momentum_).add_(e, 1 - momentum_);
      bank.index_copy_(0, all_idx, unit_rows(rows));
    };
    move(memory_s_, all_es);
    move(memory_t_, all_et);
  }
  return loss;
}

void ContrastMemoryImpl::save(const std::string& path) const {
  torch::save(std::vector<torch::Tensor>{memory_s_.cpu(), memory_t_.cpu(), z_.cpu()}, path);
}

void ContrastMemoryImpl::load(const std::string& path) {
  std::vector<torch::Tensor> saved;
  torch::load(saved, path);
  KD_CHECK(saved.size() == 3 && saved[0].sizes() == memory_s_.sizes() &&
               saved[1].sizes() == memory_t_.sizes() && saved[2].sizes() == z_.sizes(),
           "{}: not a CRD memory bank of {} x {} rows", path, memory_s_.size(0), memory_s_.size(1));
  torch::NoGradGuard no_grad;
  memory_s_.copy_(saved[0]);
  memory_t_.copy_(saved[1]);
  z_.copy_(saved[2]);
}

}  // namespace kd
