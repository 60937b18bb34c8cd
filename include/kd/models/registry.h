#pragma once
/// @file
/// Named architectures with options: `kd models` lists them, `--arch NAME --arch-opt k=v` picks
/// one.
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include <memory>
#include <nlohmann/json.hpp>
#include <utility>

#include <torch/nn/modules/container/sequential.h>

#include "kd/core/kinds.h"

namespace kd {

struct ArchContext {
  int64_t channels = 1, height = 28, width = 28, num_classes = 10;
};

/// A built architecture: the module tree (parameters, buffers, train/eval, save/load), its
/// forward, and a forward that also returns the outputs of named layers (feature hints; LibTorch
/// has no forward hooks). std::function rather than nn::AnyModule because AnyModule cannot hold
/// nn::Sequential. Classifiers are a top-level nn::Sequential run layer by layer (make_network);
/// detectors name their pyramid levels.
struct Network {
  using Features = std::pair<torch::Tensor, std::vector<torch::Tensor>>;
  std::shared_ptr<torch::nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  /// Output plus the named layers' outputs in the order asked; an empty tensor for unknown names.
  std::function<Features(const torch::Tensor&, const std::vector<std::string>&)> forward_features;
  std::vector<std::pair<std::string, std::string>> layers;  ///< (name, type) usable as features
};

Network make_network(torch::nn::Sequential seq);

struct ArchInfo {
  Task task = Task::classify;
  std::string name;
  std::string description;
  nlohmann::json defaults;  ///< every option the architecture accepts, with its default
  std::function<Network(const nlohmann::json& opts, const ArchContext& ctx)> build;
  /// Where the architecture comes from with an input and classes of its own (torchvision's
  /// 3x224x224 and 1,000 classes, CIFAR's 3x32x32 and 100): what `kd models` counts it at.
  std::vector<int64_t> native_input = {};
  int64_t native_classes = 0;
};

const std::deque<ArchInfo>& architectures();
/// Adds an architecture of one's own (a torch::nn::Module behind ArchInfo::build), usable like the
/// built-in ones by name: create_model, training, distillation, save and load (in a program that
/// registered it). Register before training or serving starts; not thread-safe with lookups.
void register_architecture(ArchInfo arch);
const ArchInfo& find_architecture(const std::string& name);  // throws naming the known ones
/// Defaults overlaid with `overrides`; an unknown key or a value of the wrong type is an error.
nlohmann::json resolve_arch_options(const std::string& name, const nlohmann::json& overrides);
/// Parses "key=value" (value as JSON when it parses, else as a string).
nlohmann::json parse_arch_options(const std::vector<std::string>& kv);

}  // namespace kd
