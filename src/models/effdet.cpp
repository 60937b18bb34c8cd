#include "kd/models/effdet.h"

#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "kd/core/error.h"

namespace kd {
namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;
using torch::Tensor;

// Conv (no bias) + batch norm (+ ReLU6). BN eps 1e-3 as EfficientDet; momentum 0.1 (not its 0.01):
// runs here are a few thousand steps, and slow running statistics lag the weights at eval time.
struct ConvBnImpl : nn::Module {
  ConvBnImpl(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups, bool act)
      : act(act) {
    conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(in, out, k)
                                                  .stride(stride)
                                                  .padding(k / 2)
                                                  .groups(groups)
                                                  .bias(false)));
    bn =
        register_module("bn", nn::BatchNorm2d(nn::BatchNorm2dOptions(out).momentum(0.1).eps(1e-3)));
  }
  Tensor forward(const Tensor& x) {
    auto y = bn(conv(x));
    return act ? torch::relu6(y) : y;
  }
  nn::Conv2d conv{nullptr};
  nn::BatchNorm2d bn{nullptr};
  bool act;
};
TORCH_MODULE(ConvBn);

// Inverted residual: 1x1 expand, depthwise kxk, 1x1 linear projection; identity shortcut when
// the shape is kept.
struct MBConvImpl : nn::Module {
  MBConvImpl(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t expand) {
    const int64_t mid = in * expand;
    if (expand != 1) expand_conv = register_module("expand", ConvBn(in, mid, 1, 1, 1, true));
    depthwise = register_module("depthwise", ConvBn(mid, mid, k, stride, mid, true));
    project = register_module("project", ConvBn(mid, out, 1, 1, 1, false));
    residual = stride == 1 && in == out;
  }
  Tensor forward(const Tensor& x) {
    auto h = expand_conv ? expand_conv->forward(x) : x;
    h = project(depthwise(h));
    return residual ? h + x : h;
  }
  ConvBn expand_conv{nullptr}, depthwise{nullptr}, project{nullptr};
  bool residual;
};
TORCH_MODULE(MBConv);

// Depthwise 3x3 + pointwise 1x1 (+ BN): every BiFPN and head convolution.
struct SeparableConvImpl : nn::Module {
  SeparableConvImpl(int64_t in, int64_t out, bool norm, bool bias) {
    depthwise = register_module(
        "depthwise", nn::Conv2d(nn::Conv2dOptions(in, in, 3).padding(1).groups(in).bias(false)));
    pointwise = register_module("pointwise", nn::Conv2d(nn::Conv2dOptions(in, out, 1).bias(bias)));
    if (norm)
      bn = register_module("bn",
                           nn::BatchNorm2d(nn::BatchNorm2dOptions(out).momentum(0.1).eps(1e-3)));
  }
  Tensor forward(const Tensor& x) {
    auto y = pointwise(depthwise(x));
    return bn ? bn(y) : y;
  }
  nn::Conv2d depthwise{nullptr}, pointwise{nullptr};
  nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(SeparableConv);

int64_t round_channels(double c) {
  // Multiples of 8 as in EfficientNet, never below 8.
  return std::max<int64_t>(8, static_cast<int64_t>(std::lround(c / 8.0)) * 8);
}

// (expand, kernel, stride, channels, repeats) of the base backbone: EfficientNet-B0's stages up
// to stride 32, one block fewer per stage and the 320-channel stage dropped.
struct StageDef {
  int64_t expand, kernel, stride, channels, repeats;
};
const std::vector<StageDef> kStages = {{1, 3, 1, 16, 1}, {4, 3, 2, 24, 1},  {4, 5, 2, 40, 2},
                                       {4, 3, 2, 80, 2}, {4, 5, 1, 112, 2}, {4, 5, 2, 192, 2}};
// Stages whose outputs are C3 (stride 8), C4 (stride 16) and C5 (stride 32).
const std::vector<size_t> kTapStages = {2, 4, 5};

struct BackboneImpl : nn::Module {
  BackboneImpl(double width, double depth) {
    int64_t in = round_channels(32 * width);
    stem = register_module("stem", ConvBn(3, in, 3, 2, 1, true));
    for (size_t s = 0; s < kStages.size(); ++s) {
      const auto& d = kStages[s];
      const int64_t out = round_channels(static_cast<double>(d.channels) * width);
      const auto n = static_cast<int64_t>(std::ceil(static_cast<double>(d.repeats) * depth));
      nn::Sequential stage;
      for (int64_t b = 0; b < n; ++b) {
        stage->push_back(MBConv(b == 0 ? in : out, out, d.kernel, b == 0 ? d.stride : 1, d.expand));
      }
      stages.push_back(register_module(fmt::format("stage{}", s + 1), stage));
      in = out;
    }
    for (size_t s : kTapStages) out_channels.push_back(in_of(s, width));
  }
  static int64_t in_of(size_t stage, double width) {
    return round_channels(static_cast<double>(kStages[stage].channels) * width);
  }
  std::vector<Tensor> forward(const Tensor& x) {
    std::vector<Tensor> taps;
    auto h = stem(x);
    for (size_t s = 0; s < stages.size(); ++s) {
      h = stages[s]->forward(h);
      if (std::find(kTapStages.begin(), kTapStages.end(), s) != kTapStages.end()) taps.push_back(h);
    }
    return taps;
  }
  ConvBn stem{nullptr};
  std::vector<nn::Sequential> stages;
  std::vector<int64_t> out_channels;
};
TORCH_MODULE(Backbone);

// A BiFPN node: fast normalized fusion of its inputs (w_i = relu(v_i) / (sum_j relu(v_j) + eps)),
// ReLU6, separable conv + BN.
struct FusionImpl : nn::Module {
  FusionImpl(int64_t inputs, int64_t width) {
    weights = register_parameter("weights", torch::ones({inputs}));
    conv = register_module("conv", SeparableConv(width, width, true, false));
  }
  Tensor forward(const std::vector<Tensor>& xs) {
    auto w = torch::relu(weights);
    w = w / (w.sum() + 1e-4);
    Tensor sum = xs[0] * w[0];
    for (size_t i = 1; i < xs.size(); ++i) sum = sum + xs[i] * w[static_cast<int64_t>(i)];
    return conv(torch::relu6(sum));
  }
  Tensor weights;
  SeparableConv conv{nullptr};
};
TORCH_MODULE(Fusion);

Tensor upsample_to(const Tensor& x, const Tensor& like) {
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{like.size(2), like.size(3)})
                               .mode(torch::kNearest));
}
Tensor downsample(const Tensor& x) {
  return F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2).padding(1));
}

// One BiFPN layer over P3, P4, P5: a top-down pass then a bottom-up pass with the same-level
// input as an extra edge.
struct BiFPNLayerImpl : nn::Module {
  explicit BiFPNLayerImpl(int64_t w) {
    p4_td = register_module("p4_td", Fusion(2, w));
    p3_out = register_module("p3_out", Fusion(2, w));
    p4_out = register_module("p4_out", Fusion(3, w));
    p5_out = register_module("p5_out", Fusion(2, w));
  }
  std::vector<Tensor> forward(const std::vector<Tensor>& p) {
    auto td4 = p4_td->forward({p[1], upsample_to(p[2], p[1])});
    auto o3 = p3_out->forward({p[0], upsample_to(td4, p[0])});
    auto o4 = p4_out->forward({p[1], td4, downsample(o3)});
    auto o5 = p5_out->forward({p[2], downsample(o4)});
    return std::vector<Tensor>{o3, o4, o5};
  }
  Fusion p4_td{nullptr}, p3_out{nullptr}, p4_out{nullptr}, p5_out{nullptr};
};
TORCH_MODULE(BiFPNLayer);

// Class or box head: `depth` separable convs shared across levels, batch norm per level, then
// a shared predictor with `outputs` values per anchor.
struct HeadImpl : nn::Module {
  HeadImpl(int64_t width, int64_t depth, int64_t levels, int64_t anchors, int64_t outputs,
           double bias)
      : anchors(anchors), outputs(outputs) {
    for (int64_t i = 0; i < depth; ++i) {
      convs.push_back(
          register_module(fmt::format("conv{}", i), SeparableConv(width, width, false, true)));
      for (int64_t l = 0; l < levels; ++l)
        bns.push_back(register_module(
            fmt::format("bn{}_{}", i, l),
            nn::BatchNorm2d(nn::BatchNorm2dOptions(width).momentum(0.1).eps(1e-3))));
    }
    predict = register_module("predict", SeparableConv(width, anchors * outputs, false, true));
    torch::NoGradGuard no_grad;
    predict->pointwise->bias.fill_(bias);
  }
  // [B, sum over levels of H*W*anchors, outputs]
  Tensor forward(const std::vector<Tensor>& levels) {
    std::vector<Tensor> out;
    const auto n_levels = static_cast<int64_t>(levels.size());
    for (int64_t l = 0; l < n_levels; ++l) {
      auto h = levels[static_cast<size_t>(l)];
      for (size_t i = 0; i < convs.size(); ++i)
        h = torch::relu6(bns[i * static_cast<size_t>(n_levels) + static_cast<size_t>(l)]->forward(
            convs[i]->forward(h)));
      h = predict(h);
      // No size() here: a traced export (kd export) must keep the batch dimension free.
      out.push_back(h.permute({0, 2, 3, 1}).flatten(1).unflatten(1, {-1, outputs}));
    }
    return torch::cat(out, 1);
  }
  std::vector<SeparableConv> convs;
  std::vector<nn::BatchNorm2d> bns;
  SeparableConv predict{nullptr};
  int64_t anchors, outputs;
};
TORCH_MODULE(Head);

constexpr int64_t kAnchorsPerLocation = 9;

struct EffDetImpl : nn::Module {
  EffDetImpl(const nlohmann::json& o, int64_t num_classes) {
    const double width = o["width"].get<double>(), depth = o["depth"].get<double>();
    const int64_t w = o["fpn_width"].get<int64_t>();
    KD_CHECK(width > 0 && depth > 0 && w > 0 && o["fpn_repeats"].get<int64_t>() > 0 &&
                 o["head_depth"].get<int64_t>() >= 0,
             "effdet: width, depth, fpn_width and fpn_repeats must be positive");
    backbone = register_module("backbone", Backbone(width, depth));
    for (size_t l = 0; l < backbone->out_channels.size(); ++l)
      lateral.push_back(register_module(fmt::format("lateral{}", l + kMinLevel),
                                        ConvBn(backbone->out_channels[l], w, 1, 1, 1, false)));
    for (int64_t r = 0; r < o["fpn_repeats"].get<int64_t>(); ++r)
      bifpn.push_back(register_module(fmt::format("bifpn{}", r), BiFPNLayer(w)));
    const int64_t levels = kMaxLevel - kMinLevel + 1, hd = o["head_depth"].get<int64_t>();
    // Focal-loss prior: every anchor starts at probability 0.01 for every class.
    class_head = register_module("class_head", Head(w, hd, levels, kAnchorsPerLocation, num_classes,
                                                    -std::log((1 - 0.01) / 0.01)));
    box_head = register_module("box_head", Head(w, hd, levels, kAnchorsPerLocation, 4, 0.0));
  }
  // Output, BiFPN levels, backbone levels.
  std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> run(const Tensor& x) {
    auto c = backbone(x);
    std::vector<Tensor> p;
    for (size_t l = 0; l < c.size(); ++l) p.push_back(lateral[l]->forward(c[l]));
    for (auto& layer : bifpn) p = layer->forward(p);
    return {torch::cat({class_head->forward(p), box_head->forward(p)}, 2), p, c};
  }
  Backbone backbone{nullptr};
  std::vector<ConvBn> lateral;
  std::vector<BiFPNLayer> bifpn;
  Head class_head{nullptr}, box_head{nullptr};
};
TORCH_MODULE(EffDet);

Network effdet(const nlohmann::json& o, const ArchContext& c) {
  KD_CHECK(c.channels == 3, "effdet: expects 3-channel images, got {}", c.channels);
  KD_CHECK(c.height >= 32 && c.width >= 32, "effdet: input {}x{} is below 32x32", c.height,
           c.width);
  EffDet net(o, c.num_classes);
  Network n;
  n.module = net.ptr();
  n.forward = [net](const Tensor& x) mutable { return std::get<0>(net->run(x)); };
  n.forward_features = [net](const Tensor& x, const std::vector<std::string>& layers) mutable {
    auto [out, p, cb] = net->run(x);
    std::vector<Tensor> taps;
    for (const auto& name : layers) {
      Tensor t;
      for (int64_t l = kMinLevel; l <= kMaxLevel; ++l) {
        if (name == fmt::format("P{}", l)) t = p[static_cast<size_t>(l - kMinLevel)];
        if (name == fmt::format("C{}", l)) t = cb[static_cast<size_t>(l - kMinLevel)];
      }
      taps.push_back(t);
    }
    return Network::Features{out, taps};
  };
  for (int64_t l = kMinLevel; l <= kMaxLevel; ++l)
    n.layers.emplace_back(fmt::format("C{}", l), "backbone");
  for (int64_t l = kMinLevel; l <= kMaxLevel; ++l)
    n.layers.emplace_back(fmt::format("P{}", l), "BiFPN");
  return n;
}

nlohmann::json scale(int64_t image_size, double width, double depth, int64_t fpn_width,
                     int64_t fpn_repeats, int64_t head_depth) {
  return {{"image_size", image_size},
          {"width", width},
          {"depth", depth},
          {"fpn_width", fpn_width},
          {"fpn_repeats", fpn_repeats},
          {"head_depth", head_depth},
          {"anchor_scale", 2.0}};
}

}  // namespace

const std::vector<ArchInfo>& detector_architectures() {
  // Compound scaling as in the paper (input +, BiFPN width x1.35 per step, repeats +1, head
  // depth every other step), scaled down: the paper's d0 is 512 px, BiFPN 64 x 3, head 3.
  static const std::vector<ArchInfo> archs = {
      {Task::detect, "effdet-d0",
       "EfficientDet-Lite d0 (student): MBConv backbone, BiFPN, shared heads",
       scale(128, 0.5, 1.0, 32, 2, 2), effdet},
      {Task::detect, "effdet-d1", "EfficientDet-Lite d1", scale(160, 0.625, 1.1, 40, 3, 2), effdet},
      {Task::detect, "effdet-d2", "EfficientDet-Lite d2", scale(192, 0.75, 1.2, 56, 3, 3), effdet},
      {Task::detect, "effdet-d3", "EfficientDet-Lite d3 (teacher)", scale(224, 1.0, 1.4, 72, 4, 3),
       effdet},
  };
  return archs;
}

}  // namespace kd
