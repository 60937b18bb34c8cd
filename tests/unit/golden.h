#pragma once
// Reading the PyTorch-Python reference values written by tests/golden/make_golden.py.
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace kd_test {

// A JSON list of rows as a float64 matrix.
inline torch::Tensor matrix(const nlohmann::json& j) {
  std::vector<double> flat;
  for (const auto& row : j)
    for (double v : row) flat.push_back(v);
  return torch::tensor(flat, torch::kFloat64).view({static_cast<int64_t>(j.size()), -1});
}

inline nlohmann::json golden_losses() {
  std::ifstream in(std::string(KD_GOLDEN_DIR) + "/losses.json");
  return nlohmann::json::parse(in);
}

}  // namespace kd_test
