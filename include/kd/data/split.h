#pragma once
/// @file
/// Reproducible train/eval splits, stratified by label and written as a JSON manifest.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace kd {

struct Split {
  std::string source;
  int64_t num_samples = 0;
  double train_ratio = 0.8;
  uint64_t seed = 0;
  torch::Tensor train;  ///< int64 indices into the source dataset, sorted
  torch::Tensor eval;
};

/// Stratified: each class is shuffled with `seed` and cut at train_ratio, so every class keeps
/// the same share in both parts. The same labels, ratio and seed always give the same split.
Split make_split(const torch::Tensor& labels, double train_ratio, uint64_t seed,
                 const std::string& source);
void save_split(const Split& split, const std::string& path);
Split load_split(const std::string& path);
/// The split a run uses: the manifest when one is named (checked against the source's size),
/// else make_split(labels, train_ratio, seed, source).
Split resolve_split(const std::string& manifest, const torch::Tensor& labels, double train_ratio,
                    uint64_t seed, const std::string& source);

/// Hides the labels of all but `fraction` of each class (stratified, seeded). Returns the
/// indices (into `labels`) that keep their labels and those that become unlabeled.
std::pair<torch::Tensor, torch::Tensor> stratified_fraction(const torch::Tensor& labels,
                                                            double fraction, uint64_t seed);

}  // namespace kd
