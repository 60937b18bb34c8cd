// `kd export --format onnx`: the traced network (the TorchScript export's trace), frozen so that
// parameters become constants, with constant subgraphs folded (BiFPN fusion weights, transposed
// Linear weights) and batch norms folded into their convolutions, then translated op by op into
// an ONNX graph (opset 13) whose weights are initializers. kd's architectures use about twenty
// aten ops; anything else is refused by name.
#include <map>

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/passes/frozen_conv_folding.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "export_access.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/models/export.h"
#include "kd/models/model.h"

namespace kd {

namespace {

using torch::jit::Node;
using torch::jit::Value;

// Opset 10: what OpenCV 4.6's importer (Debian's) reads in full (Clip with min/max attributes,
// Resize with scales only, whose nearest mode is PyTorch's floor(dst * in / out)); ONNX Runtime,
// OpenVINO and TensorRT read it too.
constexpr int64_t kOpset = 10;

class Translator {
 public:
  explicit Translator(onnx::GraphProto& g) : g_(g) {}

  // `example`: an input batch the graph is run on as it is translated, node by node, for the
  // static sizes Reshape and Resize need (the batch dimension itself is left to the runtime).
  void run(const std::shared_ptr<torch::jit::Graph>& graph, const torch::Tensor& example) {
    // inputs()[0] is the module itself; [1] the image batch.
    Value* x = graph->inputs().at(1);
    names_[x] = "input";
    values_[x] = example;
    for (Node* n : graph->nodes()) {
      evaluate(n);
      translate(n);
    }
    Value* out = graph->outputs().at(0);
    add("Identity", {name(out)}, {"output"});
  }

 private:
  std::string fresh(const std::string& stem) { return fmt::format("{}_{}", stem, counter_++); }

  std::string name(Value* v) {
    auto it = names_.find(v);
    KD_CHECK(it != names_.end(), "ONNX export: value %{} has no ONNX counterpart", v->debugName());
    return it->second;
  }

  onnx::NodeProto* add(const std::string& op, const std::vector<std::string>& inputs,
                       const std::vector<std::string>& outputs) {
    auto* node = g_.add_node();
    node->set_op_type(op);
    node->set_name(fresh(op));
    for (const auto& i : inputs) node->add_input(i);
    for (const auto& o : outputs) node->add_output(o);
    return node;
  }

  static void attr(onnx::NodeProto* n, const std::string& key, const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void attr(onnx::NodeProto* n, const std::string& key, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& key, float v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& key, const std::string& v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(v);
  }

  // A constant tensor as an initializer (scalars as [1]: some runtimes mishandle rank 0).
  std::string initializer(const torch::Tensor& t, const std::string& stem = "const") {
    auto c = t.detach().to(torch::kCPU).contiguous();
    if (c.dim() == 0) c = c.reshape({1});
    const std::string n = fresh(stem);
    auto* init = g_.add_initializer();
    init->set_name(n);
    for (int64_t d : c.sizes()) init->add_dims(d);
    if (c.scalar_type() == torch::kLong) {
      init->set_data_type(onnx::TensorProto::INT64);
    } else {
      c = c.to(torch::kFloat).contiguous();
      init->set_data_type(onnx::TensorProto::FLOAT);
    }
    init->set_raw_data(std::string(static_cast<const char*>(c.data_ptr()),
                                   static_cast<size_t>(c.numel()) * c.element_size()));
    return n;
  }

  const c10::IValue& constant(Value* v) {
    auto it = constants_.find(v);
    KD_CHECK(it != constants_.end(), "ONNX export: %{} (an argument of {}) is not a constant",
             v->debugName(), v->node()->kind().toQualString());
    return it->second;
  }
  int64_t int_of(Value* v) { return constant(v).toInt(); }
  std::vector<int64_t> ints_of(Value* v) { return constant(v).toIntVector(); }

  void evaluate(Node* n) {
    if (n->kind() == c10::prim::Constant) {
      values_[n->output()] = *torch::jit::toIValue(n->output());
      return;
    }
    if (n->kind() == c10::prim::ListConstruct) {  // no operator to run: built here
      c10::impl::GenericList list(n->output()->type()->expectRef<c10::ListType>().getElementType());
      for (Value* i : n->inputs()) list.push_back(values_.at(i));
      values_[n->output()] = c10::IValue(list);
      return;
    }
    torch::jit::Stack stack;
    for (Value* i : n->inputs()) {
      auto it = values_.find(i);
      KD_CHECK(it != values_.end(), "ONNX export: {} reads %{}, which is not computed",
               n->kind().toQualString(), i->debugName());
      stack.push_back(it->second);
    }
    n->getOperation()(stack);
    KD_CHECK(stack.size() == n->outputs().size(), "ONNX export: {} gave {} values for {} outputs",
             n->kind().toQualString(), stack.size(), n->outputs().size());
    for (size_t i = 0; i < stack.size(); ++i) values_[n->outputs()[i]] = stack[i];
  }

  // Sizes of a value on the example batch.
  std::vector<int64_t> sizes_of(Value* v) { return values_.at(v).toTensor().sizes().vec(); }

  // A Reshape to `v`'s traced shape with the batch dimension copied from the input.
  void reshape_like(Node* n) {
    auto shape = sizes_of(n->output());
    shape[0] = 0;
    const std::string s = initializer(torch::tensor(shape, torch::kLong), "shape");
    add("Reshape", {name(n->input(0)), s}, {out(n)});
  }

  std::string out(Node* n) {
    const std::string o = fresh(n->kind().toUnqualString());
    names_[n->output()] = o;
    return o;
  }

  void translate(Node* n) {
    const std::string kind = n->kind().toQualString();
    if (kind == "prim::Constant") {
      auto v = torch::jit::toIValue(n->output());
      if (v && v->isTensor())
        names_[n->output()] = initializer(v->toTensor());
      else if (v)
        constants_[n->output()] = *v;
      return;
    }
    if (kind == "prim::ListConstruct") {
      // A list of constants (sizes, strides) or of tensors (cat's inputs).
      bool all_constant = true;
      for (Value* i : n->inputs()) all_constant = all_constant && constants_.count(i);
      if (all_constant) {
        std::vector<int64_t> values;
        for (Value* i : n->inputs()) values.push_back(constants_.at(i).toInt());
        constants_[n->output()] = c10::IValue(values);
      } else {
        lists_[n->output()] = std::vector<Value*>(n->inputs().begin(), n->inputs().end());
      }
      return;
    }
    if (kind == "aten::_convolution") {
      KD_CHECK(!constant(n->input(6)).toBool(), "ONNX export: transposed convolutions");
      const auto pad = ints_of(n->input(4));
      std::vector<std::string> in = {name(n->input(0)), name(n->input(1))};
      if (!constants_.count(n->input(2))) in.push_back(name(n->input(2)));  // None: no bias
      auto* c = add("Conv", in, {out(n)});
      const auto w = sizes_of(n->input(1));  // optional in ONNX, needed by OpenCV's importer
      attr(c, "kernel_shape", std::vector<int64_t>(w.begin() + 2, w.end()));
      attr(c, "strides", ints_of(n->input(3)));
      attr(c, "pads", std::vector<int64_t>{pad[0], pad[1], pad[0], pad[1]});
      attr(c, "dilations", ints_of(n->input(5)));
      attr(c, "group", int_of(n->input(8)));
      return;
    }
    if (kind == "aten::batch_norm") {
      auto* b = add("BatchNormalization",
                    {name(n->input(0)), name(n->input(1)), name(n->input(2)), name(n->input(3)),
                     name(n->input(4))},
                    {out(n)});
      attr(b, "epsilon", static_cast<float>(constant(n->input(7)).toScalar().toDouble()));
      return;
    }
    if (kind == "aten::relu") return void(add("Relu", {name(n->input(0))}, {out(n)}));
    if (kind == "aten::relu6") {
      auto* c = add("Clip", {name(n->input(0))}, {out(n)});
      attr(c, "min", 0.0f);
      attr(c, "max", 6.0f);
      return;
    }
    if (kind == "aten::sigmoid") return void(add("Sigmoid", {name(n->input(0))}, {out(n)}));
    // MobileNetV3's and EfficientNet's activations in standard ONNX ops: silu x * Sigmoid(x),
    // hardsigmoid HardSigmoid(alpha 1/6, beta 1/2), hardswish x * hardsigmoid(x).
    if (kind == "aten::silu" || kind == "aten::hardswish" || kind == "aten::hardsigmoid") {
      const std::string gate = kind == "aten::hardsigmoid" ? out(n) : fresh("gate");
      if (kind == "aten::silu") {
        add("Sigmoid", {name(n->input(0))}, {gate});
      } else {
        auto* h = add("HardSigmoid", {name(n->input(0))}, {gate});
        attr(h, "alpha", 1.0f / 6.0f);
        attr(h, "beta", 0.5f);
      }
      if (kind != "aten::hardsigmoid") add("Mul", {name(n->input(0)), gate}, {out(n)});
      return;
    }
    if (kind == "aten::max_pool2d") {
      const auto pad = ints_of(n->input(3));
      const auto dil = ints_of(n->input(4));
      KD_CHECK(dil == std::vector<int64_t>({1, 1}), "ONNX export: dilated max pooling");
      auto* p = add("MaxPool", {name(n->input(0))}, {out(n)});
      attr(p, "kernel_shape", ints_of(n->input(1)));
      auto stride = ints_of(n->input(2));
      attr(p, "strides", stride.empty() ? ints_of(n->input(1)) : stride);
      attr(p, "pads", std::vector<int64_t>{pad[0], pad[1], pad[0], pad[1]});
      attr(p, "ceil_mode", static_cast<int64_t>(constant(n->input(5)).toBool()));
      return;
    }
    if (kind == "aten::flatten" || kind == "aten::unflatten" || kind == "aten::reshape" ||
        kind == "aten::view")
      return reshape_like(n);
    if (kind == "aten::permute") {
      auto* t = add("Transpose", {name(n->input(0))}, {out(n)});
      attr(t, "perm", ints_of(n->input(1)));
      return;
    }
    if (kind == "aten::t") {
      auto* t = add("Transpose", {name(n->input(0))}, {out(n)});
      attr(t, "perm", std::vector<int64_t>{1, 0});
      return;
    }
    if (kind == "aten::addmm") {
      KD_CHECK(constant(n->input(3)).toScalar().toDouble() == 1.0 &&
                   constant(n->input(4)).toScalar().toDouble() == 1.0,
               "ONNX export: addmm with beta or alpha other than 1");
      // A Linear layer: x W^T + b, with W^T folded to a constant. Written as Gemm(x, W, b,
      // transB=1), the layout every runtime (OpenCV's included) maps to a fully connected layer.
      auto* gemm = add("Gemm",
                       {name(n->input(1)), initializer(values_.at(n->input(2)).toTensor().t()),
                        name(n->input(0))},
                       {out(n)});
      attr(gemm, "transB", int64_t{1});
      return;
    }
    if (kind == "aten::linear") {
      std::vector<std::string> in = {name(n->input(0)), name(n->input(1))};
      if (!constants_.count(n->input(2))) in.push_back(name(n->input(2)));
      auto* gemm = add("Gemm", in, {out(n)});
      attr(gemm, "transB", int64_t{1});
      return;
    }
    if (kind == "aten::add" || kind == "aten::sub") {
      KD_CHECK(!constants_.count(n->input(2)) || constant(n->input(2)).toScalar().toDouble() == 1.0,
               "ONNX export: {} with alpha other than 1", kind);
      return void(add(kind == "aten::add" ? "Add" : "Sub",
                      {operand(n->input(0)), operand(n->input(1))}, {out(n)}));
    }
    if (kind == "aten::mul")
      return void(add("Mul", {operand(n->input(0)), operand(n->input(1))}, {out(n)}));
    if (kind == "aten::div")
      return void(add("Div", {operand(n->input(0)), operand(n->input(1))}, {out(n)}));
    if (kind == "aten::cat") {
      std::vector<std::string> in;
      for (Value* v : lists_.at(n->input(0))) in.push_back(name(v));
      auto* c = add("Concat", in, {out(n)});
      attr(c, "axis", int_of(n->input(1)));
      return;
    }
    if (kind == "aten::upsample_nearest2d") {
      const auto in = sizes_of(n->input(0)), o = sizes_of(n->output());
      const std::string scales = initializer(
          torch::tensor({1.0f, 1.0f, static_cast<float>(o[2]) / static_cast<float>(in[2]),
                         static_cast<float>(o[3]) / static_cast<float>(in[3])}),
          "scales");
      // PyTorch's nearest: source index floor(dst * in / out).
      auto* r = add("Resize", {name(n->input(0)), scales}, {out(n)});
      attr(r, "mode", std::string("nearest"));
      return;
    }
    if (kind == "aten::adaptive_avg_pool2d") {
      const auto in = sizes_of(n->input(0)), o = sizes_of(n->output());
      if (o[2] == 1 && o[3] == 1)
        return void(add("GlobalAveragePool", {name(n->input(0))}, {out(n)}));
      // Equal windows: the input divides into the output grid (PyTorch's bins are then exact).
      KD_CHECK(in[2] % o[2] == 0 && in[3] % o[3] == 0,
               "ONNX export: adaptive average pooling from {}x{} to {}x{} has unequal windows",
               in[2], in[3], o[2], o[3]);
      const std::vector<int64_t> k = {in[2] / o[2], in[3] / o[3]};
      auto* p = add("AveragePool", {name(n->input(0))}, {out(n)});
      attr(p, "kernel_shape", k);
      attr(p, "strides", k);
      return;
    }
    if (kind == "aten::contiguous" || kind == "aten::dropout" || kind == "aten::feature_dropout" ||
        kind == "aten::detach")
      return void(add("Identity", {name(n->input(0))}, {out(n)}));
    std::string node = c10::str(*n);
    while (!node.empty() && (node.back() == '\n' || node.back() == ' ')) node.pop_back();
    fail("ONNX export: kd does not translate {} yet (in {})", kind, node);
  }

  // A tensor operand, or a number (scalar arithmetic on a tensor) as a [1] initializer.
  std::string operand(Value* v) {
    if (names_.count(v)) return names_.at(v);
    const auto& c = constant(v);
    return initializer(torch::tensor(static_cast<float>(c.toScalar().toDouble())));
  }

  onnx::GraphProto& g_;
  std::map<Value*, std::string> names_;
  std::map<Value*, c10::IValue> constants_;
  std::map<Value*, std::vector<Value*>> lists_;
  std::map<Value*, c10::IValue> values_;  // on the example batch
  int64_t counter_ = 0;
};

void value_info(onnx::ValueInfoProto* v, const std::string& name, std::vector<int64_t> shape) {
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  auto* s = t->mutable_shape();
  for (size_t i = 0; i < shape.size(); ++i) {
    auto* d = s->add_dim();
    if (i == 0)
      d->set_dim_param("batch");
    else
      d->set_dim_value(shape[i]);
  }
}

}  // namespace

ExportResult export_onnx(Model& model, const std::string& path) {
  const ModelSpec& spec = model.spec();
  KD_CHECK(spec.precision != "int8",
           "model {}: ONNX export of an INT8 model is not supported (its quantized kernels have "
           "no ONNX translation here): export the fp32 run it was made from, or export it as "
           "TorchScript (--format torchscript)",
           spec.arch);
  KD_CHECK(spec.kind == "native",
           "model {}: ONNX export is for kd's own architectures; a TorchScript model is exported "
           "with PyTorch's torch.onnx",
           spec.arch);
  torch::jit::Module traced = trace_for_export(model);
  traced.eval();
  torch::jit::Module frozen = torch::jit::freeze_module(traced);
  auto graph = frozen.get_method("forward").graph()->copy();
  torch::jit::Inline(*graph);
  torch::jit::ConstantPropagation(graph);
  torch::jit::FoldFrozenConvBatchnorm(graph);
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);

  onnx::ModelProto m;
  m.set_ir_version(onnx::IR_VERSION);
  m.set_producer_name("kd");
  m.set_model_version(1);
  m.add_opset_import()->set_version(kOpset);
  auto* g = m.mutable_graph();
  g->set_name(spec.arch);
  Translator(*g).run(
      graph, torch::randn({2, spec.input_shape[0], spec.input_shape[1], spec.input_shape[2]}));
  const auto& in = spec.input_shape;
  value_info(g->add_input(), "input", {-1, in[0], in[1], in[2]});
  torch::NoGradGuard no_grad;
  model.train(false);
  auto probe =
      ExportAccess::forward(model, torch::zeros({1, in[0], in[1], in[2]}).to(model.device()));
  value_info(g->add_output(), "output", probe.sizes().vec());
  try {
    onnx::checker::check_model(m);
  } catch (const std::exception& e) {
    fail("ONNX export of {}: the ONNX checker refuses the graph ({})", spec.arch, e.what());
  }

  ExportResult r;
  r.module_path = path;
  r.description_path = export_description_path(path).string();
  check_description_replaceable(r.description_path);
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
  write_atomically(path, [&](const fs::path& tmp) {
    std::ofstream f(tmp, std::ios::binary);
    KD_CHECK(m.SerializeToOstream(&f) && f.flush(), "{}: cannot write", tmp.string());
  });
  r.description = describe_export(model, probe.size(1), "onnx");
  write_text_atomically(r.description_path, r.description.dump(2) + "\n");
  return r;
}

}  // namespace kd
