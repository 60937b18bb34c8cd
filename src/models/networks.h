#pragma once
// Private to the models area: networks whose forward is a fixed list of named steps, each a
// module path a feature hint can name (top-level modules, or `features.K` inside a features
// Sequential), so every tap of a hint is taken in the one forward pass.
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>

#include "kd/models/registry.h"

namespace kd {

// "kd::(anonymous namespace)::ConvNormActImpl" or "torch::nn::Conv2dImpl" -> "ConvNormAct".
std::string module_type(const torch::nn::Module& m);

class StagedNetwork {
 public:
  using Step = std::function<torch::Tensor(const torch::Tensor&)>;
  explicit StagedNetwork(std::shared_ptr<torch::nn::Module> root) : root_(std::move(root)) {}
  // A step without parameters (an activation, a pooling).
  void step(std::string name, std::string type, Step fn);
  // Registers `m` on the root as `name` and runs it as the step of that name.
  template <typename Holder>
  void module(const std::string& name, Holder m) {
    root_->register_module(name, m);
    step(name, module_type(*m.ptr()),
         [m](const torch::Tensor& x) mutable { return m->forward(x); });
  }
  // Registers `seq` as `name` and runs each child as the step "name.K"; "name" names the last
  // one's output. An empty name: `seq` is the root itself, its children the steps "K".
  void sequential(const std::string& name, torch::nn::Sequential seq);
  Network build();

 private:
  std::shared_ptr<torch::nn::Module> root_;
  std::vector<std::string> names_, types_;
  std::vector<Step> steps_;
  std::vector<std::pair<std::string, size_t>> aliases_;  // a container's name -> its last step
};

// torchvision's and RepDistiller's architectures (torchvision.cpp).
std::vector<ArchInfo> reference_architectures();

}  // namespace kd
