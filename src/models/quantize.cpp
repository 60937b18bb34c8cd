#include "kd/models/quantize.h"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/record_function.h>
#include <fmt/format.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/quantization/finalize.h>
#include <torch/csrc/jit/passes/quantization/insert_observers.h>
#include <torch/csrc/jit/passes/quantization/insert_quant_dequant.h>
#include <torch/csrc/jit/passes/subgraph_rewrite.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "export_access.h"
#include "kd/core/error.h"
#include "kd/models/input.h"
#include "kd/models/macs.h"

namespace kd {
namespace {

using torch::jit::Module;
using torch::jit::Node;
using torch::jit::Value;

// Observers are TorchScript modules, as LibTorch's graph-mode passes expect: InsertObservers
// clones one per observed tensor and calls its forward; InsertQuantDeQuant reads its dtype,
// qscheme and ch_axis attributes and calls calculate_qparams(). Written here in TorchScript
// rather than exported from PyTorch Python, so kd needs no Python to quantize.
constexpr const char* kEps = "1.1920928955078125e-07";  // float32 epsilon, as PyTorch's observers

// uint8 activations, affine: scale and zero point cover [min(lo, 0), max(hi, 0)] with the
// levels 0..qmax (255, or 127 where the kernels saturate: int8_activation_bits).
std::string affine_qparams(const std::string& lo, const std::string& hi, int qmax) {
  return fmt::format(R"(
def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
    lo = torch.clamp({0}, max=0.0)
    hi = torch.clamp({1}, min=0.0)
    scale = torch.clamp((hi - lo) / {3}.0, min={2})
    zero_point = torch.clamp(torch.round(-lo / scale), 0, {3}).long()
    return scale.reshape([1]), zero_point.reshape([1])
)",
                     lo, hi, kEps, qmax);
}

int activation_qmax() { return (1 << int8_activation_bits()) - 1; }

// fake_quant: the observer's forward returns its input as INT8 would represent it (fake
// quantization, straight-through gradients): quantization-aware training. Otherwise it returns
// its input: calibration.
Module observer_module(const std::string& name, at::ScalarType dtype, at::QScheme qscheme,
                       int64_t ch_axis, bool fake_quant) {
  Module m(c10::QualifiedName("__torch__.kd.quantization." + name));
  m.register_attribute("training", c10::BoolType::get(), false);
  m.register_attribute("fake_quant", c10::BoolType::get(), fake_quant);
  m.register_attribute("observe", c10::BoolType::get(), true);
  m.register_attribute("dtype", c10::IntType::get(), static_cast<int64_t>(dtype));
  m.register_attribute("qscheme", c10::IntType::get(), static_cast<int64_t>(qscheme));
  m.register_attribute("ch_axis", c10::IntType::get(), ch_axis);
  return m;
}

// Activation ranges. Calibration: the smallest and largest value seen. Training (fake_quant):
// an exponential moving average of each batch's, as PyTorch's MovingAverageMinMaxObserver,
// updated in training mode until freeze_observers().
Module minmax_observer(bool fake_quant) {
  Module m = observer_module("MinMaxObserver", at::kQUInt8, at::kPerTensorAffine, -1, fake_quant);
  m.register_buffer("min_val", torch::tensor(std::numeric_limits<float>::infinity()));
  m.register_buffer("max_val", torch::tensor(-std::numeric_limits<float>::infinity()));
  m.register_buffer("batches", torch::zeros({}));
  m.define(R"(
def forward(self, x: Tensor) -> Tensor:
    if self.observe and (self.training or not self.fake_quant) and x.numel() > 0:
        y = x.detach().float()
        lo = y.min()
        hi = y.max()
        if self.fake_quant and bool(self.batches > 0):
            self.min_val = self.min_val + 0.01 * (lo - self.min_val)
            self.max_val = self.max_val + 0.01 * (hi - self.max_val)
        else:
            self.min_val = torch.min(self.min_val, lo)
            self.max_val = torch.max(self.max_val, hi)
        self.batches = self.batches + 1
    if self.fake_quant and bool(self.batches > 0):
        q = self.calculate_qparams()
        return torch.fake_quantize_per_tensor_affine(x, float(q[0]), int(q[1]), 0, )" +
           std::to_string(activation_qmax()) + R"()
    return x
)" + affine_qparams("self.min_val", "self.max_val", activation_qmax()));
  return m;
}

// TensorRT's and Intel Neural Compressor's percentile calibration: each batch's extreme 0.01 %
// on either side is clipped, the rest averaged over batches. Large tensors are subsampled with
// a fixed stride (torch.quantile takes at most 16M values).
Module percentile_observer() {
  Module m = observer_module("PercentileObserver", at::kQUInt8, at::kPerTensorAffine, -1, false);
  m.register_buffer("lo_sum", torch::zeros({}));
  m.register_buffer("hi_sum", torch::zeros({}));
  m.register_buffer("batches", torch::zeros({}));
  m.define(R"(
def forward(self, x: Tensor) -> Tensor:
    if x.numel() > 0:
        y = x.detach().float().flatten()
        step = y.numel() // 4000000 + 1
        y = y[::step]
        self.lo_sum = self.lo_sum + torch.quantile(y, 0.0001)
        self.hi_sum = self.hi_sum + torch.quantile(y, 0.9999)
        self.batches = self.batches + 1
    return x
)" + affine_qparams("self.lo_sum / torch.clamp(self.batches, min=1.0)",
                    "self.hi_sum / torch.clamp(self.batches, min=1.0)", activation_qmax()));
  return m;
}

// int8 weights, per output channel, symmetric (zero point 0), as PyTorch's default for oneDNN.
// The ranges are the weights' own, taken at every forward pass.
Module weight_observer(bool fake_quant) {
  Module m = observer_module("PerChannelWeightObserver", at::kQInt8, at::kPerChannelSymmetric, 0,
                             fake_quant);
  m.register_buffer("min_val", torch::zeros({0}));
  m.register_buffer("max_val", torch::zeros({0}));
  m.define(fmt::format(R"(
def forward(self, w: Tensor) -> Tensor:
    y = w.detach().float().flatten(1)
    self.min_val = y.min(1)[0]
    self.max_val = y.max(1)[0]
    if self.fake_quant:
        q = self.calculate_qparams()
        return torch.fake_quantize_per_channel_affine(w, q[0], q[1].int(), 0, -128, 127)
    return w

def calculate_qparams(self) -> Tuple[Tensor, Tensor]:
    amax = torch.max(-torch.clamp(self.min_val, max=0.0), torch.clamp(self.max_val, min=0.0))
    scale = torch.clamp(amax / 127.5, min={})
    return scale, torch.zeros_like(scale).long()
)",
                       kEps));
  return m;
}

// The module and attribute a prim::GetAttr chain starting at the graph's `self` reads.
struct AttrRef {
  Module owner;
  std::string name;
  Value* owner_value = nullptr;
};

std::optional<AttrRef> attr_ref(Module& root, Value* v) {
  Node* n = v->node();
  if (n->kind() != c10::prim::GetAttr) return std::nullopt;
  std::vector<std::string> path;
  Value* owner_value = n->input(0);
  for (Value* cur = owner_value; cur->node()->kind() == c10::prim::GetAttr;
       cur = cur->node()->input(0))
    path.push_back(cur->node()->s(c10::attr::name));
  Module owner = root;
  for (auto it = path.rbegin(); it != path.rend(); ++it) owner = owner.attr(*it).toModule();
  return AttrRef{owner, n->s(c10::attr::name), owner_value};
}

std::optional<double> constant_double(Value* v) {
  auto c = torch::jit::toIValue(v);
  if (!c) return std::nullopt;
  if (c->isDouble()) return c->toDouble();
  if (c->isInt()) return static_cast<double>(c->toInt());
  return std::nullopt;
}

// Folds each inference-mode batch norm that reads only a convolution's output into that
// convolution's weight and bias (new tensors; the traced model's own are not touched). On the
// traced, not yet frozen graph, so the folded weights are still attributes the weight observers
// see; quantized kernels then run conv + bias (+ ReLU) with no separate BN.
int fold_batch_norms(Module& root) {
  auto graph = root.get_method("forward").graph();
  int folded = 0;
  std::vector<Node*> norms;
  // Convolution weights by the number of calls that read them. A module called at several places
  // (EfficientDet's heads share their convolutions across pyramid levels, with a batch norm per
  // level) is not folded: folding rewrites its one weight, and every level's batch norm would
  // rescale it again (d0 in INT8 fell from 30.1 to 2.1 mAP that way).
  std::map<std::pair<const void*, std::string>, int> calls;
  auto weight_key = [](const AttrRef& w) {
    return std::make_pair(static_cast<const void*>(w.owner._ivalue().get()), w.name);
  };
  for (Node* n : graph->nodes()) {
    if (n->kind() == c10::aten::batch_norm) norms.push_back(n);
    if (n->kind() == c10::aten::_convolution || n->kind() == c10::aten::conv2d)
      if (auto w = attr_ref(root, n->input(1))) ++calls[weight_key(*w)];
  }
  for (Node* bn : norms) {
    Node* conv = bn->input(0)->node();
    if ((conv->kind() != c10::aten::_convolution && conv->kind() != c10::aten::conv2d) ||
        bn->input(0)->uses().size() != 1)
      continue;
    auto training = torch::jit::toIValue(bn->input(5));
    const auto eps = constant_double(bn->input(7));
    auto w = attr_ref(root, conv->input(1));
    auto gamma = attr_ref(root, bn->input(1)), beta = attr_ref(root, bn->input(2));
    auto mean = attr_ref(root, bn->input(3)), var = attr_ref(root, bn->input(4));
    if (!training || !training->isBool() || training->toBool() || !eps || !w || !gamma || !beta ||
        !mean || !var || calls[weight_key(*w)] > 1)
      continue;
    torch::NoGradGuard no_grad;
    const auto W = w->owner.attr(w->name).toTensor();
    const auto scale = gamma->owner.attr(gamma->name).toTensor() /
                       torch::sqrt(var->owner.attr(var->name).toTensor() + *eps);
    const auto m = mean->owner.attr(mean->name).toTensor();
    const auto b = beta->owner.attr(beta->name).toTensor();
    std::vector<int64_t> shape(static_cast<size_t>(W.dim()), 1);
    shape[0] = -1;
    w->owner.setattr(w->name, (W * scale.view(shape)).contiguous());
    const auto bias_in = conv->input(2);
    if (auto bias = attr_ref(root, bias_in)) {
      const auto old = bias->owner.attr(bias->name).toTensor();
      bias->owner.setattr(bias->name, (old - m) * scale + b);
    } else {
      // No bias before: one named "bias" (what the quantization passes look for), read from the
      // convolution's own module.
      KD_CHECK(!w->owner.hasattr("bias"),
               "cannot fold a batch norm: the convolution's module "
               "has a 'bias' that is not its bias");
      w->owner.register_parameter("bias", (b - m * scale).contiguous(), false);
      torch::jit::WithInsertPoint guard(conv);
      conv->replaceInput(2, graph->insertGetAttr(w->owner_value, "bias"));
    }
    bn->output()->replaceAllUsesWith(conv->output());
    bn->destroy();
    ++folded;
  }
  return folded;
}

// ReLU6 as hardtanh(0, 6): LibTorch's graph-mode quantization has a quantized hardtanh (a clamp
// of the INT8 values, with its input's scale) but leaves aten::relu6 in fp32 between a
// dequantize and a quantize (EfficientDet: 40 such islands, which made d0 4x slower in INT8).
void relu6_as_hardtanh(Module& root) {
  torch::jit::SubgraphRewriter rewriter;
  for (const char* relu6 : {"aten::relu6", "aten::relu6_"})
    rewriter.RegisterRewritePattern(fmt::format(R"(
graph(%x):
    %y = {}(%x)
    return (%y))",
                                                relu6),
                                    R"(
graph(%x):
    %lo : float = prim::Constant[value=0.]()
    %hi : float = prim::Constant[value=6.]()
    %y = aten::hardtanh(%x, %lo, %hi)
    return (%y))");
  auto graph = root.get_method("forward").graph();
  rewriter.runOnGraph(graph);
}

// A multiplication of an activation by a one-element tensor computed from parameters alone
// (EfficientDet's BiFPN fusion weights, w_i = relu(v_i) / (sum_j relu(v_j) + eps)) becomes a
// multiplication by that number: quantized::mul_scalar, a change of scale, where a tensor
// operand keeps the product in fp32. The weights are read once, when the model is quantized (in
// quantization-aware training they stay at their fp32 values). Values are computed by running
// the graph's own ops on what depends only on constants and the module's attributes.
void fold_parameter_scalars(Module& root) {
  auto graph = root.get_method("forward").graph();
  std::unordered_map<Value*, c10::IValue> known;
  for (Node* n : graph->nodes()) {
    if (n->kind() == c10::prim::Constant) {
      if (auto v = torch::jit::toIValue(n->output())) known[n->output()] = *v;
    } else if (n->kind() == c10::prim::GetAttr) {
      if (auto a = attr_ref(root, n->output())) known[n->output()] = a->owner.attr(a->name);
    } else if (n->kind().is_aten() && n->maybeSchema() && !n->schema().is_mutable() &&
               std::all_of(n->inputs().begin(), n->inputs().end(), [&](Value* v) {
                 auto it = known.find(v);
                 return it != known.end() && !it->second.isObject();
               })) {
      torch::jit::Stack stack;
      for (Value* v : n->inputs()) stack.push_back(known.at(v));
      n->getOperation()(stack);
      for (size_t i = 0; i < n->outputs().size(); ++i) known[n->output(i)] = stack.at(i);
    }
  }
  std::vector<Node*> muls;
  for (Node* n : graph->nodes())
    if (n->kind() == c10::aten::mul && n->inputs().size() == 2) muls.push_back(n);
  for (Node* mul : muls) {
    for (size_t side : {size_t{1}, size_t{0}}) {
      auto it = known.find(mul->input(side));
      Value* other = mul->input(1 - side);
      if (it == known.end() || !it->second.isTensor() || it->second.toTensor().numel() != 1 ||
          known.count(other) || !other->type()->isSubtypeOf(*c10::TensorType::get()))
        continue;
      torch::jit::WithInsertPoint guard(mul);
      Value* scalar = graph->insertConstant(it->second.toTensor().item<double>());
      Value* product = graph->insert(c10::aten::mul, {other, scalar});
      mul->output()->replaceAllUsesWith(product);
      mul->destroy();
      break;
    }
  }
  torch::jit::EliminateDeadCode(graph);
}

// A ReLU after a quantized convolution becomes the convolution's own (quantized::conv2d_relu
// requantizes with the same scale and zero point, then clamps at the zero point: the same
// values, one kernel and one pass over memory fewer). The observers only fuse the two when the
// network calls Conv2d and ReLU modules; kd's traced graph calls the ops.
void fuse_conv_relu(Module& quantized) {
  torch::jit::SubgraphRewriter rewriter;
  for (const char* relu : {"aten::relu", "aten::relu_"})
    rewriter.RegisterRewritePattern(fmt::format(R"(
graph(%x, %w, %scale, %zero_point):
    %y = quantized::conv2d(%x, %w, %scale, %zero_point)
    %r = {}(%y)
    return (%r))",
                                                relu),
                                    R"(
graph(%x, %w, %scale, %zero_point):
    %r = quantized::conv2d_relu(%x, %w, %scale, %zero_point)
    return (%r))");
  auto graph = quantized.get_method("forward").graph();
  rewriter.runOnGraph(graph);
}

torch::Tensor normalize(const ModelSpec& spec, const torch::Tensor& x) {
  auto mean = torch::tensor(spec.norm.mean, torch::kFloat).view({1, -1, 1, 1});
  auto std = torch::tensor(spec.norm.std, torch::kFloat).view({1, -1, 1, 1});
  return (x - mean) / std;
}

std::string op_list(const std::vector<std::pair<std::string, int64_t>>& ops) {
  std::string out;
  for (const auto& [name, n] : ops)
    out += fmt::format("{}{} (x{})", out.empty() ? "" : ", ", name, n);
  return out;
}

}  // namespace

const char* to_string(Observer o) { return o == Observer::minmax ? "minmax" : "percentile"; }

Observer parse_observer(const std::string& word) {
  if (word == "minmax") return Observer::minmax;
  if (word == "percentile") return Observer::percentile;
  fail("observer '{}': expected minmax or percentile", word);
}

void use_int8_engine() {
  auto& ctx = at::globalContext();
  const auto& engines = ctx.supportedQEngines();
  if (std::find(engines.begin(), engines.end(), at::QEngine::ONEDNN) == engines.end()) {
    std::string have;
    for (auto e : engines) have += (have.empty() ? "" : ", ") + c10::toString(e);
    fail("this LibTorch has no oneDNN quantized engine (it has: {})", have.empty() ? "none" : have);
  }
  ctx.setQEngine(at::QEngine::ONEDNN);
}

int int8_activation_bits() {
  static const int bits = [] {
    use_int8_engine();
    // A 3x3 convolution over 64 channels of 255 x 127: every pair of products is 64,770, past
    // what a 16-bit register holds. Exact: 64 * 9 * 255 * 127 = 18,653,760, quantized to 200;
    // summed in saturating 16-bit pairs it comes out near half that.
    const double exact = 64 * 9 * 255.0 * 127.0, out_scale = exact / 200.0;
    torch::NoGradGuard no_grad;
    const auto qx = at::quantize_per_tensor(torch::full({1, 64, 3, 3}, 255.0), 1.0, 0, at::kQUInt8);
    const auto qw = at::quantize_per_tensor(torch::full({1, 64, 3, 3}, 127.0), 1.0, 0, at::kQInt8);
    // The ops as quantized models call them, through the dispatcher (boxed: the packed weights'
    // C++ type is internal to ATen).
    auto& ops = c10::Dispatcher::singleton();
    torch::jit::Stack stack = {qw,
                               c10::IValue(),
                               c10::List<int64_t>({1, 1}),
                               c10::List<int64_t>({0, 0}),
                               c10::List<int64_t>({1, 1}),
                               int64_t{1}};
    ops.findSchemaOrThrow("quantized::conv2d_prepack", "").callBoxed(&stack);
    stack = {qx, stack.at(0), out_scale, int64_t{0}};
    ops.findSchemaOrThrow("quantized::conv2d", "new").callBoxed(&stack);
    const double y = stack.at(0).toTensor().dequantize().item<double>();
    return std::abs(y / out_scale - 200.0) <= 1.0 ? 8 : 7;
  }();
  return bits;
}

void check_int8_runs_here(const ModelSpec& spec, const std::string& where) {
  if (spec.precision != "int8" || spec.kind != "torchscript") return;
  // Models quantized before the key existed used the full range.
  const int bits = spec.quantization.value("activation_bits", 8);
  if (bits > int8_activation_bits())
    fail(
        "{}: INT8 with {}-bit activations (calibrated on a CPU whose INT8 kernels have VNNI), but "
        "this CPU's oneDNN kernels add products in saturating 16-bit registers and compute "
        "{}-bit activations only: its answers would be wrong. Quantize the fp32 model again on "
        "this CPU (kd quantize), or run it on a CPU with AVX512-VNNI or AVX-VNNI",
        where, bits, int8_activation_bits());
}

std::string int8_engine() {
  std::string name = c10::toString(at::globalContext().qEngine());
  std::transform(name.begin(), name.end(), name.begin(), ::tolower);
  return name;
}

QuantizedOps quantized_ops(Model& model, const torch::Tensor& x) {
  // Only the ops the model's graph calls (depth 1), not what they call in turn.
  static const std::set<std::string> kCompute = {"aten::_convolution",
                                                 "aten::conv2d",
                                                 "aten::linear",
                                                 "aten::addmm",
                                                 "aten::matmul",
                                                 "aten::mm",
                                                 "aten::bmm",
                                                 "aten::batch_norm",
                                                 "aten::add",
                                                 "aten::add_",
                                                 "aten::mul",
                                                 "aten::mul_",
                                                 "aten::div",
                                                 "aten::sub",
                                                 "aten::sum",
                                                 "aten::mean",
                                                 "aten::relu",
                                                 "aten::relu_",
                                                 "aten::relu6",
                                                 "aten::hardtanh",
                                                 "aten::hardtanh_",
                                                 "aten::clamp",
                                                 "aten::sigmoid",
                                                 "aten::silu",
                                                 "aten::hardswish",
                                                 "aten::tanh",
                                                 "aten::gelu",
                                                 "aten::max_pool2d",
                                                 "aten::avg_pool2d",
                                                 "aten::adaptive_avg_pool2d",
                                                 "aten::upsample_nearest2d",
                                                 "aten::cat",
                                                 "aten::softmax"};
  struct Record {
    std::map<std::string, int64_t> int8, fp32;
    int depth = 0;
  };
  static thread_local Record* record = nullptr;
  const torch::Tensor input = normalize(model.spec(), x);
  Record r;
  record = &r;
  auto handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(
          [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
            if (!record || ++record->depth != 1) return nullptr;
            const std::string name = fn.name();
            bool quantized = false, floating = false;
            for (const auto& v : fn.inputs()) {
              if (!v.isTensor() || !v.toTensor().defined()) continue;
              quantized |= v.toTensor().is_quantized();
              floating |= v.toTensor().is_floating_point();
            }
            if (name.rfind("quantized::", 0) == 0 || (kCompute.count(name) && quantized))
              ++record->int8[name];
            else if (kCompute.count(name) && floating)
              ++record->fp32[name];
            return nullptr;
          },
          [](const at::RecordFunction&, at::ObserverContext*) {
            if (record) --record->depth;
          })
          .needsInputs(true)
          .scopes({at::RecordScope::FUNCTION}));
  {
    torch::NoGradGuard no_grad;
    ExportAccess::forward(model, input);
  }
  at::removeCallback(handle);
  record = nullptr;
  QuantizedOps ops;
  ops.int8.assign(r.int8.begin(), r.int8.end());
  ops.fp32.assign(r.fp32.begin(), r.fp32.end());
  return ops;
}

namespace {

// The traced network with its batch norms folded and an observer on every tensor a quantized
// kernel will read: for calibration, or (fake_quant) for quantization-aware training.
Module observed_network(Model& model, Observer observer, bool fake_quant, int* folded) {
  KD_CHECK(model.device().is_cpu(), "INT8 quantization runs on the CPU, not {}",
           model.device().str());
  KD_CHECK(model.spec().precision != "int8", "the model is already INT8");
  use_int8_engine();
  // The passes clone the module; under autograd a clone of a parameter is not a leaf, and
  // quantization-aware training could not optimize it.
  torch::NoGradGuard no_grad;
  Module traced = trace_for_export(model);
  traced.eval();
  *folded = fold_batch_norms(traced);
  relu6_as_hardtanh(traced);
  fold_parameter_scalars(traced);
  torch::jit::QConfigDict qconfig{
      {"", torch::jit::QConfig{
               observer == Observer::minmax ? minmax_observer(fake_quant) : percentile_observer(),
               weight_observer(fake_quant)}}};
  return torch::jit::InsertObservers(traced, "forward", qconfig, /*inplace=*/false,
                                     torch::jit::QuantType::STATIC);
}

// Observed network -> INT8 model: each observer's ranges become quantize calls, and the
// dequantize-op-quantize patterns quantized kernels.
std::unique_ptr<Model> convert(Module observed, const ModelSpec& spec, int64_t parameters,
                               int64_t macs, nlohmann::json how, const QuantizeOptions& options,
                               QuantizedOps* ops_out) {
  Module quant = torch::jit::InsertQuantDeQuant(observed, "forward", /*inplace=*/false,
                                                /*debug=*/false, torch::jit::QuantType::STATIC);
  quant = torch::jit::Finalize(quant, torch::jit::QuantType::STATIC);
  fuse_conv_relu(quant);

  ModelSpec qspec = spec;
  qspec.kind = "torchscript";
  qspec.precision = "int8";
  qspec.quantization = nlohmann::json::object();
  auto result = make_script_model(qspec, quant);
  const QuantizedOps ops = quantized_ops(*result, random_input(spec, 2));
  KD_CHECK(!ops.int8.empty(), "nothing in the model could be quantized (fp32 ops: {})",
           op_list(ops.fp32));
  if (!ops.fp32.empty() && !options.allow_fp32_layers)
    fail(
        "these ops have no INT8 kernel on the {} engine and would run in fp32 between a "
        "dequantize and a quantize: {}; pass --allow-fp32-layers to keep them in fp32",
        int8_engine(), op_list(ops.fp32));
  nlohmann::json fp32 = nlohmann::json::object();
  for (const auto& [name, n] : ops.fp32) fp32[name] = n;
  how.update({{"engine", int8_engine()},
              {"parameters", parameters},
              {"macs", macs},
              {"weights", "int8, per output channel, symmetric"},
              {"activations", fmt::format("uint8, per tensor, affine, {}-bit range",
                                          how.value("activation_bits", 8))},
              {"fp32_ops", fp32},
              {"from", spec.arch}});
  qspec.quantization = how;
  if (ops_out) *ops_out = ops;
  return make_script_model(qspec, quant);
}

}  // namespace

std::unique_ptr<Model> quantize_int8(Model& model,
                                     const std::function<bool(torch::Tensor&)>& next_batch,
                                     const QuantizeOptions& options, QuantizedOps* ops_out) {
  int folded = 0;
  Module observed = observed_network(model, options.observer, /*fake_quant=*/false, &folded);
  const ModelSpec& spec = model.spec();
  const auto& in = spec.input_shape;
  int64_t images = 0;
  {
    torch::NoGradGuard no_grad;
    torch::Tensor x;
    while (next_batch(x)) {
      KD_CHECK(x.dim() == 4 && x.size(1) == in[0] && x.size(2) == in[1] && x.size(3) == in[2],
               "calibration batch of shape {} does not match the model's input [N, {}, {}, {}]",
               c10::str(x.sizes()), in[0], in[1], in[2]);
      observed.forward({normalize(spec, x.to(torch::kFloat))});
      images += x.size(0);
    }
  }
  KD_CHECK(images > 0, "no calibration images");
  return convert(observed, spec, model.num_parameters(), count_macs(model, torch::kCPU),
                 {{"method", "post-training static"},
                  {"activation_bits", int8_activation_bits()},
                  {"observer", to_string(options.observer)},
                  {"calibration_images", images},
                  {"batch_norms_folded", folded}},
                 options, ops_out);
}

std::unique_ptr<Model> prepare_qat(Model& model) {
  int folded = 0;
  Module observed = observed_network(model, Observer::minmax, /*fake_quant=*/true, &folded);
  ModelSpec spec = model.spec();
  spec.kind = "torchscript";
  spec.quantization = {{"method", "quantization-aware training"},
                       {"fp32_parameters", model.num_parameters()},
                       {"fp32_macs", count_macs(model, torch::kCPU)},
                       {"observer", "moving-average minmax"},
                       {"activation_bits", int8_activation_bits()},
                       {"batch_norms_folded", folded},
                       {"from", model.spec().arch}};
  return make_script_model(spec, observed);
}

void freeze_observers(Model& qat) {
  for (auto m : script_module_of(qat).modules())  // handles: the modules themselves change
    if (m.hasattr("observe")) m.setattr("observe", false);
}

std::unique_ptr<Model> convert_qat(Model& qat, const QuantizeOptions& options, QuantizedOps* ops) {
  const ModelSpec& spec = qat.spec();
  KD_CHECK(spec.quantization.value("method", "") == "quantization-aware training",
           "{}: not a quantization-aware model (kd::prepare_qat)", spec.arch);
  Module observed = script_module_of(qat).deepcopy();
  observed.eval();
  {
    // The weight observers take the trained weights' ranges.
    torch::NoGradGuard no_grad;
    const auto& in = spec.input_shape;
    observed.forward({torch::zeros({1, in[0], in[1], in[2]})});
  }
  nlohmann::json how = spec.quantization;
  const int64_t parameters = how.value("fp32_parameters", int64_t{0});
  const int64_t macs = how.value("fp32_macs", int64_t{0});
  how.erase("fp32_parameters");
  how.erase("fp32_macs");
  return convert(observed, spec, parameters, macs, how, options, ops);
}

}  // namespace kd
