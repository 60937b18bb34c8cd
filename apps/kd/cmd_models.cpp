#include <filesystem>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include "commands.h"
#include "kd/eval/profile.h"
#include "kd/models/model.h"
#include "kd/models/registry.h"

namespace kd::cli {
namespace {

struct ModelsArgs {
  std::string layers;
  std::vector<std::string> arch_options;
  int channels = 1, size = 28, classes = 10;
};

std::unique_ptr<Model> build(const std::string& arch, const ModelsArgs& a) {
  ModelSpec spec;
  spec.arch = arch;
  spec.options = parse_arch_options(a.arch_options);
  spec.input_shape = {a.channels, a.size, a.size};
  if (find_architecture(arch).task == Task::detect) {
    // Detectors take RGB at their own input size (the image_size option).
    const auto size = resolve_arch_options(arch, spec.options)["image_size"].get<int64_t>();
    spec.input_shape = {3, size, size};
  }
  for (int c = 0; c < a.classes; ++c) spec.class_names.push_back(std::to_string(c));
  return create_model(spec);
}

void run(const ModelsArgs& a) {
  if (!a.layers.empty()) {
    // An architecture name, or a run directory / TorchScript file (a teacher to take hints from).
    auto m = std::filesystem::exists(a.layers) ? load_model(a.layers) : build(a.layers, a);
    m->train(false);
    const auto& shape = m->spec().input_shape;
    auto x = shape.size() == 3 ? torch::zeros({1, shape[0], shape[1], shape[2]})
                               : torch::zeros({1, a.channels, a.size, a.size});
    m->to(torch::kCPU);
    fmt::print("{:<24} {:<20} {}\n", "layer (for --hint)", "type", "output shape");
    for (const auto& [name, type] : m->layers()) {
      std::string out = "-";
      try {
        torch::NoGradGuard no_grad;
        out = c10::str(m->forward_with_features(x, {name}).second[0].sizes().slice(1));
      } catch (const std::exception&) {
        // Not reachable as a hint layer (a TorchScript module whose forward is not a chain).
      }
      fmt::print("{:<24} {:<20} {}\n", name, type, out);
    }
    return;
  }
  for (const Task task : {Task::classify, Task::detect}) {
    fmt::print("{}{:<10} {:<18} {:<14} {:>10} {:>13}  {}\n", task == Task::detect ? "\n" : "",
               "task", "architecture", "input/classes", "params", "MACs",
               "description and options");
    if (task == Task::classify)
      fmt::print(
          "(classifiers: params and MACs at their native input and classes: torchvision's "
          "ImageNet, RepDistiller's CIFAR-100; kd's own at --channels/--size/--classes)\n");
    else
      fmt::print(
          "(detectors: params and MACs for 3 x image_size x image_size input, {} classes, 9 "
          "anchors per location)\n",
          a.classes);
    for (const auto& arch : architectures()) {
      if (arch.task != task) continue;
      ModelsArgs at = a;
      at.arch_options.clear();
      if (!arch.native_input.empty()) {
        at.channels = static_cast<int>(arch.native_input[0]);
        at.size = static_cast<int>(arch.native_input[1]);
        at.classes = static_cast<int>(arch.native_classes);
      }
      auto m = build(arch.name, at);
      const auto& in = m->spec().input_shape;
      fmt::print("{:<10} {:<18} {:<14} {:>10} {:>13}  {}\n{:<69}options: {}\n", task, arch.name,
                 fmt::format("{}x{}x{}/{}", in[0], in[1], in[2], at.classes), m->num_parameters(),
                 count_macs(*m, torch::kCPU), arch.description, "", arch.defaults.dump());
    }
  }
}

}  // namespace

void add_models_command(CLI::App& app) {
  auto a = std::make_shared<ModelsArgs>();
  auto* c =
      app.add_subcommand("models", "list architectures with params and MACs, or one's layers");
  c->footer("Examples: kd models\n          kd models --layers fmnist-teacher");
  c->add_option("--layers", a->layers,
                "list the layers of ARCH, a run directory or a TorchScript .pt, with output shapes "
                "(names for --hint)");
  c->add_option("--arch-opt", a->arch_options, "architecture option KEY=VALUE for --layers");
  c->add_option("--channels", a->channels)->capture_default_str();
  c->add_option("--size", a->size)->capture_default_str();
  c->add_option("--classes", a->classes)->capture_default_str();
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
