// The model zoo. Each architecture is a plain torch::nn module built from its options; the
// registry below names them. Layer names (module paths) are what `kd models --layers` lists.
#include <deque>

#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/models/effdet.h"
#include "kd/models/registry.h"
#include "networks.h"

namespace kd {
namespace {

namespace nn = torch::nn;

nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1, bool bias = true) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(bias));
}

// Reference teacher (issue 2): three conv-BN-ReLU-pool stages, FC 256 with dropout.
Network reference_teacher(const nlohmann::json& o, const ArchContext& c) {
  const int64_t w1 = o["width"].get<int64_t>();
  nn::Sequential s(conv3x3(c.channels, w1), nn::BatchNorm2d(w1), nn::ReLU(), nn::MaxPool2d(2),
                   conv3x3(w1, 2 * w1), nn::BatchNorm2d(2 * w1), nn::ReLU(), nn::MaxPool2d(2),
                   conv3x3(2 * w1, 4 * w1), nn::BatchNorm2d(4 * w1), nn::ReLU(), nn::MaxPool2d(2),
                   nn::Flatten(),
                   nn::Linear(4 * w1 * (c.height / 8) * (c.width / 8), o["hidden"].get<int64_t>()),
                   nn::ReLU(), nn::Dropout(o["dropout"].get<double>()),
                   nn::Linear(o["hidden"].get<int64_t>(), c.num_classes));
  return make_network(s);
}

// Reference student (issue 2): two conv-ReLU-pool stages and one FC.
Network reference_student(const nlohmann::json& o, const ArchContext& c) {
  const int64_t w1 = o["width"].get<int64_t>();
  nn::Sequential s(conv3x3(c.channels, w1), nn::ReLU(), nn::MaxPool2d(2), conv3x3(w1, 2 * w1),
                   nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(),
                   nn::Linear(2 * w1 * (c.height / 4) * (c.width / 4), c.num_classes));
  return make_network(s);
}

Network mlp(const nlohmann::json& o, const ArchContext& c) {
  nn::Sequential s;
  s->push_back(nn::Flatten());
  int64_t in = c.channels * c.height * c.width;
  for (int64_t h : o["hidden"].get<std::vector<int64_t>>()) {
    KD_CHECK(h > 0, "mlp: hidden sizes must be positive, got {}", h);
    s->push_back(nn::Linear(in, h));
    s->push_back(nn::ReLU());
    if (o["dropout"].get<double>() > 0) s->push_back(nn::Dropout(o["dropout"].get<double>()));
    in = h;
  }
  s->push_back(nn::Linear(in, c.num_classes));
  return make_network(s);
}

// Width-scalable VGG-style CNN: `stages` stages of conv-BN-ReLU (x convs_per_stage) + maxpool,
// channels doubling per stage from `width`, then global average pooling and one FC.
Network cnn(const nlohmann::json& o, const ArchContext& c) {
  const int64_t width = o["width"].get<int64_t>(), stages = o["stages"].get<int64_t>();
  const int64_t convs = o["convs_per_stage"].get<int64_t>();
  KD_CHECK(width > 0 && stages > 0 && convs > 0, "cnn: width, stages, convs_per_stage must be > 0");
  nn::Sequential s;
  int64_t in = c.channels;
  for (int64_t st = 0; st < stages; ++st) {
    const int64_t out = width << st;
    for (int64_t k = 0; k < convs; ++k) {
      s->push_back(conv3x3(k == 0 ? in : out, out, 1, false));
      s->push_back(nn::BatchNorm2d(out));
      s->push_back(nn::ReLU());
    }
    s->push_back(nn::MaxPool2d(2));
    in = out;
  }
  s->push_back(nn::AdaptiveAvgPool2d(1));
  s->push_back(nn::Flatten());
  s->push_back(nn::Linear(in, c.num_classes));
  return make_network(s);
}

// He et al. 2016 basic block (CIFAR form): two 3x3 convs, identity or 1x1 projection shortcut.
struct BasicBlockImpl : nn::Cloneable<BasicBlockImpl> {
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride) : in_(in), out_(out), stride_(stride) {
    reset();
  }
  void reset() override {
    conv1 = register_module("conv1", conv3x3(in_, out_, stride_, false));
    bn1 = register_module("bn1", nn::BatchNorm2d(out_));
    conv2 = register_module("conv2", conv3x3(out_, out_, 1, false));
    bn2 = register_module("bn2", nn::BatchNorm2d(out_));
    if (stride_ != 1 || in_ != out_) {
      shortcut = register_module(
          "shortcut",
          nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in_, out_, 1).stride(stride_).bias(false)),
                         nn::BatchNorm2d(out_)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = torch::relu(bn1(conv1(x)));
    y = bn2(conv2(y));
    return torch::relu(y + (shortcut ? shortcut->forward(x) : x));
  }
  int64_t in_, out_, stride_;
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  nn::Sequential shortcut{nullptr};
};
TORCH_MODULE(BasicBlock);

Network resnet(const nlohmann::json& o, const ArchContext& c) {
  const int64_t width = o["width"].get<int64_t>();
  auto blocks = o["blocks"].get<std::vector<int64_t>>();
  KD_CHECK(width > 0 && !blocks.empty(), "resnet: width must be > 0 and blocks non-empty");
  nn::Sequential s(conv3x3(c.channels, width, 1, false), nn::BatchNorm2d(width), nn::ReLU());
  int64_t in = width;
  for (size_t st = 0; st < blocks.size(); ++st) {
    const int64_t out = width << st;
    for (int64_t b = 0; b < blocks[st]; ++b) {
      s->push_back(BasicBlock(in, out, (b == 0 && st > 0) ? 2 : 1));
      in = out;
    }
  }
  s->push_back(nn::AdaptiveAvgPool2d(1));
  s->push_back(nn::Flatten());
  s->push_back(nn::Linear(in, c.num_classes));
  return make_network(s);
}

}  // namespace

std::string module_type(const nn::Module& m) {
  std::string type = m.name();
  if (const auto colon = type.rfind("::"); colon != std::string::npos)
    type = type.substr(colon + 2);
  if (type.size() > 4 && type.compare(type.size() - 4, 4, "Impl") == 0)
    type.resize(type.size() - 4);
  return type;
}

void StagedNetwork::step(std::string name, std::string type, Step fn) {
  names_.push_back(std::move(name));
  types_.push_back(std::move(type));
  steps_.push_back(std::move(fn));
}

void StagedNetwork::sequential(const std::string& name, nn::Sequential seq) {
  if (!name.empty()) root_->register_module(name, seq);
  const auto children = seq->named_children();
  for (size_t k = 0; k < seq->size(); ++k) {
    auto layer = *(seq->begin() + static_cast<std::ptrdiff_t>(k));
    const std::string& key = children[k].key();
    step(name.empty() ? key : name + "." + key, module_type(*children[k].value()),
         [layer](const torch::Tensor& x) mutable { return layer.forward(x); });
  }
  if (!name.empty()) aliases_.emplace_back(name, steps_.size() - 1);
}

Network StagedNetwork::build() {
  Network net;
  net.module = root_;
  auto steps = steps_;
  net.forward = [steps](const torch::Tensor& x) {
    auto h = x;
    for (const auto& s : steps) h = s(h);
    return h;
  };
  // Step i's output is tapped by its own name or by a container's name ending at it.
  std::vector<std::vector<std::string>> tap_names(steps_.size());
  for (size_t i = 0; i < steps_.size(); ++i) tap_names[i].push_back(names_[i]);
  for (const auto& [alias, i] : aliases_) tap_names[i].push_back(alias);
  net.forward_features = [steps, tap_names](const torch::Tensor& x,
                                            const std::vector<std::string>& layers) {
    std::vector<torch::Tensor> taps(layers.size());
    auto h = x;
    for (size_t i = 0; i < steps.size(); ++i) {
      h = steps[i](h);
      for (size_t k = 0; k < layers.size(); ++k)
        for (const auto& n : tap_names[i])
          if (layers[k] == n) taps[k] = h;
    }
    return Network::Features{h, taps};
  };
  for (size_t i = 0; i < steps_.size(); ++i) {
    net.layers.emplace_back(names_[i], types_[i]);
    for (const auto& [alias, last] : aliases_)
      if (last == i) net.layers.emplace_back(alias, "Sequential");
  }
  return net;
}

Network make_network(nn::Sequential seq) {
  StagedNetwork net(seq.ptr());
  net.sequential("", seq);
  return net.build();
}

namespace {

// A deque: registering an architecture never moves the others (find_architecture hands out
// references to them).
std::deque<ArchInfo>& registry() {
  static std::deque<ArchInfo> archs = [] {
    std::deque<ArchInfo> v = {
        {Task::classify,
         "fmnist-teacher",
         "reference teacher: 3x [conv3x3, BN, ReLU, maxpool] (64-128-256), FC 256, dropout, FC",
         {{"width", 64}, {"hidden", 256}, {"dropout", 0.3}},
         reference_teacher},
        {Task::classify,
         "fmnist-student",
         "reference student: 2x [conv3x3, ReLU, maxpool] (8-16), FC",
         {{"width", 8}},
         reference_student},
        {Task::classify,
         "mlp",
         "multi-layer perceptron",
         {{"hidden", {256, 128}}, {"dropout", 0.0}},
         mlp},
        {Task::classify,
         "cnn",
         "width-scalable CNN: stages of conv-BN-ReLU + maxpool, global pool, FC",
         {{"width", 16}, {"stages", 3}, {"convs_per_stage", 1}},
         cnn},
        {Task::classify,
         "resnet",
         "CIFAR-style ResNet of basic blocks (blocks per stage, width doubles per stage)",
         {{"width", 16}, {"blocks", {2, 2, 2}}},
         resnet},
    };
    for (auto& a : reference_architectures()) v.push_back(a);
    for (auto& d : detector_architectures()) v.push_back(d);
    return v;
  }();
  return archs;
}

}  // namespace

const std::deque<ArchInfo>& architectures() { return registry(); }

void register_architecture(ArchInfo arch) {
  KD_CHECK(!arch.name.empty() && static_cast<bool>(arch.build),
           "an architecture needs a name and a build function");
  for (const auto& a : registry())
    KD_CHECK(a.name != arch.name, "architecture {} is registered already", arch.name);
  registry().push_back(std::move(arch));
}

}  // namespace kd
