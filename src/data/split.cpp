#include "kd/data/split.h"

#include <algorithm>
#include <map>
#include <random>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/json.h"

namespace kd {
namespace {

torch::Tensor to_tensor(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return torch::tensor(v, torch::kInt64);
}

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  auto c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> stratified_fraction(const torch::Tensor& labels,
                                                            double fraction, uint64_t seed) {
  KD_CHECK(fraction > 0.0 && fraction <= 1.0, "fraction {} must be in (0, 1]", fraction);
  auto lab = labels.to(torch::kCPU).contiguous();
  std::map<int64_t, std::vector<int64_t>> by_class;
  const int64_t* p = lab.data_ptr<int64_t>();
  for (int64_t i = 0; i < lab.numel(); ++i) by_class[p[i]].push_back(i);
  std::mt19937_64 rng(seed);
  std::vector<int64_t> first, second;
  for (auto& [cls, idx] : by_class) {
    std::shuffle(idx.begin(), idx.end(), rng);
    auto cut = static_cast<size_t>(std::llround(fraction * static_cast<double>(idx.size())));
    if (fraction < 1.0 && idx.size() > 1) cut = std::clamp<size_t>(cut, 1, idx.size() - 1);
    first.insert(first.end(), idx.begin(), idx.begin() + cut);
    second.insert(second.end(), idx.begin() + cut, idx.end());
  }
  return {to_tensor(first), to_tensor(second)};
}

Split make_split(const torch::Tensor& labels, double train_ratio, uint64_t seed,
                 const std::string& source) {
  KD_CHECK(train_ratio > 0.0 && train_ratio < 1.0, "split ratio {} must be in (0, 1)", train_ratio);
  Split s;
  s.source = source;
  s.num_samples = labels.numel();
  s.train_ratio = train_ratio;
  s.seed = seed;
  std::tie(s.train, s.eval) = stratified_fraction(labels, train_ratio, seed);
  return s;
}

void save_split(const Split& s, const std::string& path) {
  nlohmann::json j = {{"source", s.source},           {"num_samples", s.num_samples},
                      {"train_ratio", s.train_ratio}, {"seed", s.seed},
                      {"train", to_vector(s.train)},  {"eval", to_vector(s.eval)}};
  write_text_atomically(path, j.dump() + "\n");
}

Split load_split(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a split manifest ({})", path, e.what());
  }
  Split s;
  try {
    s.source = j.at("source").get<std::string>();
    s.num_samples = json_int<int64_t>(j.at("num_samples"), path + ": num_samples");
    s.train_ratio = j.at("train_ratio").get<double>();
    s.seed = json_int<uint64_t>(j.at("seed"), path + ": seed");
    s.train = to_tensor(json_ints<int64_t>(j.at("train"), path + ": train"));
    s.eval = to_tensor(json_ints<int64_t>(j.at("eval"), path + ": eval"));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: bad split manifest ({})", path, e.what());
  }
  for (const auto& t : {s.train, s.eval})
    if (t.numel() > 0)
      KD_CHECK(t.min().item<int64_t>() >= 0 && t.max().item<int64_t>() < s.num_samples,
               "{}: index out of range for {} samples", path, s.num_samples);
  return s;
}

Split resolve_split(const std::string& manifest, const torch::Tensor& labels, double train_ratio,
                    uint64_t seed, const std::string& source) {
  if (manifest.empty()) return make_split(labels, train_ratio, seed, source);
  Split split = load_split(manifest);
  KD_CHECK(split.num_samples == labels.size(0), "{}: made for {} samples but {} has {}", manifest,
           split.num_samples, source, labels.size(0));
  return split;
}

}  // namespace kd
