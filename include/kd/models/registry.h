#pragma once
// Named architectures with options: `kd models` lists them, `--arch NAME --arch-opt k=v` picks one.
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/nn/modules/container/sequential.h>

namespace kd {

struct ArchContext {
  int64_t channels = 1, height = 28, width = 28, num_classes = 10;
};

// A built architecture: the module tree (parameters, buffers, train/eval, save/load) and its
// forward. std::function rather than nn::AnyModule because AnyModule cannot hold nn::Sequential.
// Every zoo architecture is a top-level nn::Sequential, so its layers can be run one by one to
// tap intermediate outputs for feature hints (LibTorch has no forward hooks).
struct Network {
  torch::nn::Sequential module;
};

inline Network make_network(torch::nn::Sequential seq) { return {std::move(seq)}; }

struct ArchInfo {
  std::string name;
  std::string description;
  nlohmann::json defaults;  // every option the architecture accepts, with its default
  std::function<Network(const nlohmann::json& opts, const ArchContext& ctx)> build;
};

const std::vector<ArchInfo>& architectures();
const ArchInfo& find_architecture(const std::string& name);  // throws naming the known ones
// Defaults overlaid with `overrides`; an unknown key or a value of the wrong type is an error.
nlohmann::json resolve_arch_options(const std::string& name, const nlohmann::json& overrides);
// Parses "key=value" (value as JSON when it parses, else as a string).
nlohmann::json parse_arch_options(const std::vector<std::string>& kv);

}  // namespace kd
