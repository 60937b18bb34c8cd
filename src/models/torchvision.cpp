// The networks people distill, named and shaped as their origin so that a PyTorch state_dict
// loads by name and a feature tap names the same module in kd and in PyTorch:
//   torchvision 0.14: resnet18/34/50, mobilenet_v2, mobilenet_v3_small/large, efficientnet_b0;
//   RepDistiller (as mdistiller uses them): resnet8x4, resnet32x4, wrn_16_2, wrn_40_2.
// Each forward is a list of named steps (top-level modules, or `features.K` inside a features
// Sequential), so the taps of a hint are collected in the one forward pass.
#include <cmath>

#include <torch/torch.h>

#include "kd/core/error.h"
#include "kd/models/registry.h"
#include "networks.h"

namespace kd {
namespace {

namespace nn = torch::nn;
using torch::Tensor;

enum class Act { none, relu, relu6, silu, hardswish, hardsigmoid, sigmoid };

Tensor activate(const Tensor& x, Act a) {
  switch (a) {
    case Act::relu:
      return torch::relu(x);
    case Act::relu6:
      return torch::relu6(x);
    case Act::silu:
      return torch::silu(x);
    case Act::hardswish:
      return torch::hardswish(x);
    case Act::hardsigmoid:
      return torch::hardsigmoid(x);
    case Act::sigmoid:
      return torch::sigmoid(x);
    case Act::none:
      break;
  }
  return x;
}

struct Norm {
  double eps = 1e-5, momentum = 0.1;
};

nn::BatchNorm2d batch_norm(int64_t c, Norm n) {
  return nn::BatchNorm2d(nn::BatchNormOptions(c).eps(n.eps).momentum(n.momentum));
}

nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t groups = 1,
                bool bias = false) {
  return nn::Conv2d(
      nn::Conv2dOptions(in, out, k).stride(stride).padding((k - 1) / 2).groups(groups).bias(bias));
}

// torchvision.ops.Conv2dNormActivation: "0" the convolution, "1" the batch norm, the activation.
struct ConvNormActImpl : nn::Module {
  ConvNormActImpl(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups, Act a, Norm n)
      : act(a) {
    c = register_module("0", conv(in, out, k, stride, groups));
    bn = register_module("1", batch_norm(out, n));
  }
  Tensor forward(const Tensor& x) { return activate(bn(c(x)), act); }
  nn::Conv2d c{nullptr};
  nn::BatchNorm2d bn{nullptr};
  Act act;
};
TORCH_MODULE(ConvNormAct);

// torchvision.ops.SqueezeExcitation: fc1 and fc2 are 1x1 convolutions with bias.
struct SqueezeExciteImpl : nn::Module {
  SqueezeExciteImpl(int64_t channels, int64_t squeeze, Act a, Act scale) : act(a), gate(scale) {
    fc1 = register_module("fc1", conv(channels, squeeze, 1, 1, 1, true));
    fc2 = register_module("fc2", conv(squeeze, channels, 1, 1, 1, true));
  }
  Tensor forward(const Tensor& x) {
    auto s = torch::adaptive_avg_pool2d(x, {1, 1});
    return x * activate(fc2(activate(fc1(s), act)), gate);
  }
  nn::Conv2d fc1{nullptr}, fc2{nullptr};
  Act act, gate;
};
TORCH_MODULE(SqueezeExcite);

// torchvision.ops.StochasticDepth(p, "row"): drops the residual branch per sample in training.
Tensor stochastic_depth(const Tensor& x, double p, bool training) {
  if (!training || p == 0) return x;
  const double survival = 1 - p;
  auto keep = torch::empty({x.size(0), 1, 1, 1}, x.options()).bernoulli_(survival);
  return x * keep.div_(survival);
}

// A residual block's body: a Sequential whose output is added to the input when the shapes
// allow (MobileNet's InvertedResidual, EfficientNet's MBConv).
struct InvertedResidualImpl : nn::Module {
  InvertedResidualImpl(const std::string& body_name, nn::Sequential b, bool residual,
                       double drop = 0)
      : use_residual(residual), drop_prob(drop) {
    body = register_module(body_name, std::move(b));
  }
  Tensor forward(const Tensor& x) {
    auto y = body->forward(x);
    return use_residual ? x + stochastic_depth(y, drop_prob, is_training()) : y;
  }
  nn::Sequential body{nullptr};
  bool use_residual;
  double drop_prob;
};
TORCH_MODULE(InvertedResidual);

// torchvision's initialisation: convolutions He-normal over fan-out with zero bias, batch norm
// 1 and 0 (LibTorch's default), linear layers as each network says.
enum class LinearInit { pytorch, normal, uniform };
void init_like_torchvision(nn::Module& root, LinearInit linear) {
  torch::NoGradGuard no_grad;
  for (auto& m : root.modules(/*include_self=*/false)) {
    if (auto* c = m->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(c->weight, 0, torch::kFanOut, torch::kReLU);
      if (c->bias.defined()) c->bias.zero_();
    } else if (auto* l = m->as<nn::Linear>()) {
      if (linear == LinearInit::pytorch) continue;
      if (linear == LinearInit::normal) {
        l->weight.normal_(0, 0.01);
      } else {
        const double r = 1.0 / std::sqrt(static_cast<double>(l->weight.size(0)));
        l->weight.uniform_(-r, r);
      }
      l->bias.zero_();
    }
  }
}

// An nn.Sequential inside an nn.Sequential (LibTorch's Sequential cannot hold one): children
// "0", "1", ... run in order.
struct ChainImpl : nn::Module {
  void add(nn::AnyModule m) {
    register_module(std::to_string(items.size()), m.ptr());
    items.push_back(std::move(m));
  }
  Tensor forward(Tensor x) {
    for (auto& m : items) x = m.forward(x);
    return x;
  }
  std::vector<nn::AnyModule> items;
};
TORCH_MODULE(Chain);

int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t n =
      std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (static_cast<double>(n) < 0.9 * v) n += divisor;
  return n;
}

// ---- ResNet (torchvision) ----

struct ResidualBlockImpl : nn::Module {
  // Basic (two 3x3) when !bottleneck, else 1x1 -> 3x3 (stride) -> 1x1 x4 (ResNet v1.5).
  ResidualBlockImpl(int64_t in, int64_t planes, int64_t stride, bool bottleneck) {
    const int64_t out = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
      conv1 = register_module("conv1", conv(in, planes, 1));
      bn1 = register_module("bn1", batch_norm(planes, {}));
      conv2 = register_module("conv2", conv(planes, planes, 3, stride));
      bn2 = register_module("bn2", batch_norm(planes, {}));
      conv3 = register_module("conv3", conv(planes, out, 1));
      bn3 = register_module("bn3", batch_norm(out, {}));
    } else {
      conv1 = register_module("conv1", conv(in, planes, 3, stride));
      bn1 = register_module("bn1", batch_norm(planes, {}));
      conv2 = register_module("conv2", conv(planes, planes, 3));
      bn2 = register_module("bn2", batch_norm(planes, {}));
    }
    if (stride != 1 || in != out)
      downsample = register_module("downsample",
                                   nn::Sequential(conv(in, out, 1, stride), batch_norm(out, {})));
  }
  Tensor forward(const Tensor& x) {
    auto y = torch::relu(bn1(conv1(x)));
    y = bn2(conv2(y));
    if (conv3) y = bn3(conv3(torch::relu(y)));
    return torch::relu(y + (downsample ? downsample->forward(x) : x));
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  nn::Sequential downsample{nullptr};
};
TORCH_MODULE(ResidualBlock);

// The global average pool every network here ends with, flattened for its classifier.
void global_pool(StagedNetwork& net) {
  net.step("avgpool", "AdaptiveAvgPool2d", [](const Tensor& x) {
    return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  });
}

void relu(StagedNetwork& net) {
  net.step("relu", "ReLU", [](const Tensor& x) { return torch::relu(x); });
}

// ResNets: torchvision's (a 7x7 stride-2 stem and a max pool, stages 64 to 512 wide, basic or
// bottleneck blocks) and RepDistiller's CIFAR ones (a 3x3 stem, basic blocks); every stage after
// the first halves the resolution in its first block. RepDistiller's AvgPool2d(8) is global
// pooling at 32 px; global at any size here.
Network residual_network(const ArchContext& c, bool imagenet_stem, int64_t stem_width,
                         const std::vector<int64_t>& widths, const std::vector<int64_t>& blocks,
                         bool bottleneck) {
  auto root = std::make_shared<nn::Module>();
  StagedNetwork net(root);
  net.module("conv1", conv(c.channels, stem_width, imagenet_stem ? 7 : 3, imagenet_stem ? 2 : 1));
  net.module("bn1", batch_norm(stem_width, {}));
  relu(net);
  if (imagenet_stem)
    net.step("maxpool", "MaxPool2d", [](const Tensor& x) {
      return torch::max_pool2d(x, {3, 3}, {2, 2}, {1, 1}, {1, 1});
    });
  int64_t in = stem_width;
  for (size_t s = 0; s < blocks.size(); ++s) {
    nn::Sequential layer;
    for (int64_t b = 0; b < blocks[s]; ++b) {
      layer->push_back(ResidualBlock(in, widths[s], b == 0 && s > 0 ? 2 : 1, bottleneck));
      in = bottleneck ? widths[s] * 4 : widths[s];
    }
    net.module("layer" + std::to_string(s + 1), layer);
  }
  global_pool(net);
  net.module("fc", nn::Linear(in, c.num_classes));
  init_like_torchvision(*root, LinearInit::pytorch);
  return net.build();
}

// torchvision's MobileNet and EfficientNet layout: features, global pool, classifier.
Network features_classifier(nn::Sequential features, nn::Sequential classifier, LinearInit linear) {
  auto root = std::make_shared<nn::Module>();
  StagedNetwork net(root);
  net.sequential("features", features);
  global_pool(net);
  net.module("classifier", classifier);
  init_like_torchvision(*root, linear);
  return net.build();
}

// ---- MobileNetV2 (torchvision) ----

Network mobilenet_v2(const nlohmann::json& o, const ArchContext& c) {
  const double width = o["width_mult"].get<double>();
  const Norm bn{};
  nn::Sequential features;
  int64_t in = make_divisible(32 * width);
  const int64_t last = make_divisible(1280 * std::max(1.0, width));
  features->push_back(ConvNormAct(c.channels, in, 3, 2, 1, Act::relu6, bn));
  // t (expansion), c (channels), n (repeats), s (stride)
  const int64_t cfg[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                             {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  for (const auto& row : cfg) {
    const int64_t out = make_divisible(static_cast<double>(row[1]) * width);
    for (int64_t i = 0; i < row[2]; ++i) {
      const int64_t stride = i == 0 ? row[3] : 1, hidden = in * row[0];
      nn::Sequential body;
      if (row[0] != 1) body->push_back(ConvNormAct(in, hidden, 1, 1, 1, Act::relu6, bn));
      body->push_back(ConvNormAct(hidden, hidden, 3, stride, hidden, Act::relu6, bn));
      body->push_back(conv(hidden, out, 1));
      body->push_back(batch_norm(out, bn));
      features->push_back(InvertedResidual("conv", body, stride == 1 && in == out));
      in = out;
    }
  }
  features->push_back(ConvNormAct(in, last, 1, 1, 1, Act::relu6, bn));
  nn::Sequential classifier(nn::Dropout(o["dropout"].get<double>()),
                            nn::Linear(last, c.num_classes));
  return features_classifier(features, classifier, LinearInit::normal);
}

// ---- MobileNetV3 (torchvision) ----

struct V3Block {
  int64_t kernel, expanded, out;
  bool se;
  Act act;
  int64_t stride;
};

Network mobilenet_v3(const nlohmann::json& o, const ArchContext& c, bool large) {
  const Norm bn{0.001, 0.01};
  const Act RE = Act::relu, HS = Act::hardswish;
  const std::vector<V3Block> small_cfg = {
      {3, 16, 16, true, RE, 2},  {3, 72, 24, false, RE, 2}, {3, 88, 24, false, RE, 1},
      {5, 96, 40, true, HS, 2},  {5, 240, 40, true, HS, 1}, {5, 240, 40, true, HS, 1},
      {5, 120, 48, true, HS, 1}, {5, 144, 48, true, HS, 1}, {5, 288, 96, true, HS, 2},
      {5, 576, 96, true, HS, 1}, {5, 576, 96, true, HS, 1}};
  const std::vector<V3Block> large_cfg = {
      {3, 16, 16, false, RE, 1},  {3, 64, 24, false, RE, 2},  {3, 72, 24, false, RE, 1},
      {5, 72, 40, true, RE, 2},   {5, 120, 40, true, RE, 1},  {5, 120, 40, true, RE, 1},
      {3, 240, 80, false, HS, 2}, {3, 200, 80, false, HS, 1}, {3, 184, 80, false, HS, 1},
      {3, 184, 80, false, HS, 1}, {3, 480, 112, true, HS, 1}, {3, 672, 112, true, HS, 1},
      {5, 672, 160, true, HS, 2}, {5, 960, 160, true, HS, 1}, {5, 960, 160, true, HS, 1}};
  const auto& cfg = large ? large_cfg : small_cfg;
  const int64_t last_channel = large ? 1280 : 1024;
  nn::Sequential features;
  int64_t in = 16;
  features->push_back(ConvNormAct(c.channels, in, 3, 2, 1, HS, bn));
  for (const auto& b : cfg) {
    nn::Sequential body;
    if (b.expanded != in) body->push_back(ConvNormAct(in, b.expanded, 1, 1, 1, b.act, bn));
    body->push_back(ConvNormAct(b.expanded, b.expanded, b.kernel, b.stride, b.expanded, b.act, bn));
    if (b.se)
      body->push_back(SqueezeExcite(b.expanded, make_divisible(static_cast<double>(b.expanded / 4)),
                                    Act::relu, Act::hardsigmoid));
    body->push_back(ConvNormAct(b.expanded, b.out, 1, 1, 1, Act::none, bn));
    features->push_back(InvertedResidual("block", body, b.stride == 1 && in == b.out));
    in = b.out;
  }
  features->push_back(ConvNormAct(in, 6 * in, 1, 1, 1, HS, bn));
  nn::Sequential classifier(nn::Linear(6 * in, last_channel),
                            nn::Functional([](const Tensor& x) { return torch::hardswish(x); }),
                            nn::Dropout(o["dropout"].get<double>()),
                            nn::Linear(last_channel, c.num_classes));
  return features_classifier(features, classifier, LinearInit::normal);
}

// ---- EfficientNet-B0 (torchvision) ----

Network efficientnet_b0(const nlohmann::json& o, const ArchContext& c) {
  const Norm bn{};
  const double depth_prob = o["stochastic_depth"].get<double>();
  // expand, kernel, stride, in, out, layers
  const int64_t cfg[7][6] = {{1, 3, 1, 32, 16, 1},  {6, 3, 2, 16, 24, 2},  {6, 5, 2, 24, 40, 2},
                             {6, 3, 2, 40, 80, 3},  {6, 5, 1, 80, 112, 3}, {6, 5, 2, 112, 192, 4},
                             {6, 3, 1, 192, 320, 1}};
  int64_t total = 0;
  for (const auto& row : cfg) total += row[5];
  nn::Sequential features;
  features->push_back(ConvNormAct(c.channels, 32, 3, 2, 1, Act::silu, bn));
  int64_t id = 0;
  for (const auto& row : cfg) {
    Chain stage;
    for (int64_t i = 0; i < row[5]; ++i) {
      const int64_t in = i == 0 ? row[3] : row[4], stride = i == 0 ? row[2] : 1;
      const int64_t expanded = in * row[0];
      nn::Sequential body;
      if (expanded != in) body->push_back(ConvNormAct(in, expanded, 1, 1, 1, Act::silu, bn));
      body->push_back(ConvNormAct(expanded, expanded, row[1], stride, expanded, Act::silu, bn));
      body->push_back(
          SqueezeExcite(expanded, std::max<int64_t>(1, in / 4), Act::silu, Act::sigmoid));
      body->push_back(ConvNormAct(expanded, row[4], 1, 1, 1, Act::none, bn));
      const double p = depth_prob * static_cast<double>(id++) / static_cast<double>(total);
      stage->add(nn::AnyModule(InvertedResidual("block", body, stride == 1 && in == row[4], p)));
    }
    features->push_back(stage);
  }
  features->push_back(ConvNormAct(320, 1280, 1, 1, 1, Act::silu, bn));
  nn::Sequential classifier(nn::Dropout(o["dropout"].get<double>()),
                            nn::Linear(1280, c.num_classes));
  return features_classifier(features, classifier, LinearInit::uniform);
}

// ---- RepDistiller's CIFAR ResNets (resnet8x4, resnet32x4) ----

Network cifar_resnet(const ArchContext& c, int64_t depth, const std::vector<int64_t>& filters) {
  KD_CHECK((depth - 2) % 6 == 0, "a CIFAR ResNet's depth is 6n + 2, got {}", depth);
  const int64_t n = (depth - 2) / 6;
  return residual_network(c, false, filters[0], {filters[1], filters[2], filters[3]}, {n, n, n},
                          false);
}

// ---- RepDistiller's wide ResNets (wrn_16_2, wrn_40_2): pre-activation blocks ----

struct WideBlockImpl : nn::Module {
  WideBlockImpl(int64_t in, int64_t out, int64_t stride, double drop)
      : equal(in == out), drop_rate(drop) {
    bn1 = register_module("bn1", batch_norm(in, {}));
    conv1 = register_module("conv1", conv(in, out, 3, stride));
    bn2 = register_module("bn2", batch_norm(out, {}));
    conv2 = register_module("conv2", conv(out, out, 3));
    if (!equal) shortcut = register_module("convShortcut", conv(in, out, 1, stride));
  }
  Tensor forward(Tensor x) {
    auto pre = torch::relu(bn1(x));
    if (!equal) x = pre;  // the shortcut takes the pre-activated input, as in RepDistiller
    auto y = torch::relu(bn2(conv1(pre)));
    if (drop_rate > 0) y = torch::dropout(y, drop_rate, is_training());
    y = conv2(y);
    return (equal ? x : shortcut(x)) + y;
  }
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, shortcut{nullptr};
  bool equal;
  double drop_rate;
};
TORCH_MODULE(WideBlock);

struct NetworkBlockImpl : nn::Module {
  explicit NetworkBlockImpl(nn::Sequential l) { layer = register_module("layer", std::move(l)); }
  Tensor forward(const Tensor& x) { return layer->forward(x); }
  nn::Sequential layer{nullptr};
};
TORCH_MODULE(NetworkBlock);

Network wide_resnet(const nlohmann::json& o, const ArchContext& c, int64_t depth, int64_t widen) {
  KD_CHECK((depth - 4) % 6 == 0, "a wide ResNet's depth is 6n + 4, got {}", depth);
  const int64_t n = (depth - 4) / 6;
  const double drop = o["dropout"].get<double>();
  const int64_t ch[4] = {16, 16 * widen, 32 * widen, 64 * widen};
  auto root = std::make_shared<nn::Module>();
  StagedNetwork net(root);
  net.module("conv1", conv(c.channels, ch[0], 3));
  for (int64_t s = 0; s < 3; ++s) {
    nn::Sequential layer;
    for (int64_t b = 0; b < n; ++b)
      layer->push_back(
          WideBlock(b == 0 ? ch[s] : ch[s + 1], ch[s + 1], b == 0 && s > 0 ? 2 : 1, drop));
    net.module("block" + std::to_string(s + 1), NetworkBlock(layer));
  }
  net.module("bn1", batch_norm(ch[3], {}));
  relu(net);
  global_pool(net);
  net.module("fc", nn::Linear(ch[3], c.num_classes));
  init_like_torchvision(*root, LinearInit::pytorch);
  return net.build();
}

}  // namespace

std::vector<ArchInfo> reference_architectures() {
  const nlohmann::json none = nlohmann::json::object();
  const std::vector<int64_t> kImageNet = {3, 224, 224}, kCifar = {3, 32, 32};
  auto resnet = [](std::vector<int64_t> blocks, bool bottleneck) {
    return [blocks, bottleneck](const nlohmann::json&, const ArchContext& c) {
      return residual_network(c, true, 64, {64, 128, 256, 512}, blocks, bottleneck);
    };
  };
  return {
      {Task::classify, "resnet18", "torchvision ResNet-18 (basic blocks 2-2-2-2)", none,
       resnet({2, 2, 2, 2}, false), kImageNet, 1000},
      {Task::classify, "resnet34", "torchvision ResNet-34 (basic blocks 3-4-6-3)", none,
       resnet({3, 4, 6, 3}, false), kImageNet, 1000},
      {Task::classify, "resnet50", "torchvision ResNet-50 (bottlenecks 3-4-6-3, v1.5)", none,
       resnet({3, 4, 6, 3}, true), kImageNet, 1000},
      {Task::classify,
       "mobilenet_v2",
       "torchvision MobileNetV2 (inverted residuals, ReLU6)",
       {{"width_mult", 1.0}, {"dropout", 0.2}},
       mobilenet_v2,
       kImageNet,
       1000},
      {Task::classify,
       "mobilenet_v3_small",
       "torchvision MobileNetV3-Small (squeeze-excite, hard-swish)",
       {{"dropout", 0.2}},
       [](const nlohmann::json& o, const ArchContext& c) { return mobilenet_v3(o, c, false); },
       kImageNet,
       1000},
      {Task::classify,
       "mobilenet_v3_large",
       "torchvision MobileNetV3-Large (squeeze-excite, hard-swish)",
       {{"dropout", 0.2}},
       [](const nlohmann::json& o, const ArchContext& c) { return mobilenet_v3(o, c, true); },
       kImageNet,
       1000},
      {Task::classify,
       "efficientnet_b0",
       "torchvision EfficientNet-B0 (MBConv, squeeze-excite, SiLU, stochastic depth)",
       {{"dropout", 0.2}, {"stochastic_depth", 0.2}},
       efficientnet_b0,
       kImageNet,
       1000},
      {Task::classify, "resnet8x4", "RepDistiller CIFAR ResNet-8x4 (32-64-128-256, 1 block each)",
       none,
       [](const nlohmann::json&, const ArchContext& c) {
         return cifar_resnet(c, 8, {32, 64, 128, 256});
       },
       kCifar, 100},
      {Task::classify, "resnet32x4",
       "RepDistiller CIFAR ResNet-32x4 (32-64-128-256, 5 blocks each)", none,
       [](const nlohmann::json&, const ArchContext& c) {
         return cifar_resnet(c, 32, {32, 64, 128, 256});
       },
       kCifar, 100},
      {Task::classify,
       "wrn_16_2",
       "RepDistiller wide ResNet 16-2 (pre-activation)",
       {{"dropout", 0.0}},
       [](const nlohmann::json& o, const ArchContext& c) { return wide_resnet(o, c, 16, 2); },
       kCifar,
       100},
      {Task::classify,
       "wrn_40_2",
       "RepDistiller wide ResNet 40-2 (pre-activation)",
       {{"dropout", 0.0}},
       [](const nlohmann::json& o, const ArchContext& c) { return wide_resnet(o, c, 40, 2); },
       kCifar,
       100},
  };
}

}  // namespace kd
