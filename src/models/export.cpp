#include "kd/models/export.h"

#include <set>

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "export_access.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/version.h"
#include "kd/models/input.h"
#include "kd/models/model.h"

namespace kd {
namespace {

using torch::jit::Module;

// The module that owns `name`'s last component, creating the submodules on the way, so the
// exported module's state_dict() keys are kd's parameter names ("features.0.weight").
Module owner_of(Module root, const std::string& name, std::string* leaf,
                const std::shared_ptr<torch::jit::CompilationUnit>& cu) {
  size_t start = 0;
  for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', start)) {
    const std::string part = name.substr(start, dot - start);
    if (!root.hasattr(part)) {
      Module sub(c10::QualifiedName("__torch__.kd.Submodule"), cu, /*shouldMangle=*/true);
      root.register_module(part, sub);
    }
    root = root.attr(part).toModule();
    start = dot + 1;
  }
  *leaf = name.substr(start);
  return root;
}

}  // namespace

fs::path export_description_path(const std::string& path) { return fs::path(path + ".json"); }

std::optional<std::string> not_an_export_description(const fs::path& path) {
  if (auto what = special_file(path)) return "is " + *what;
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  try {
    const auto j = nlohmann::json::parse(read_text(path));
    if (j.is_object() && j.value("produced_by", "").find("kd export") != std::string::npos)
      return std::nullopt;
  } catch (const nlohmann::json::exception&) {
  }
  return "is not a model description kd export wrote";
}

void check_description_replaceable(const fs::path& path) {
  if (auto why = not_an_export_description(path))
    fail("{} {}: not replacing it with the export's description", path.string(), *why);
}

nlohmann::json describe_export(Model& model, int64_t outputs_per_row, const char* format) {
  const ModelSpec& s = model.spec();
  const auto& in = s.input_shape;
  const int64_t params = model.num_parameters();
  nlohmann::json d = {
      {"format", format},
      {"produced_by", "kd export (traced)"},
      {"task", s.task},
      {"arch", s.arch},
      {"options", s.options},
      {"class_names", s.class_names},
      {"input_shape", in},
      {"mean", s.norm.mean},
      {"std", s.norm.std},
      {"parameters", params},
      {"precision", s.precision},
      {"input",
       {{"shape", {-1, in.at(0), in.at(1), in.at(2)}},
        {"dtype", "float32"},
        {"preprocess", "pixels scaled to [0, 1], then (x - mean) / std per channel"}}}};
  if (s.task == Task::detect) {
    d["output"] = {
        {"shape", {-1, outputs_per_row, s.num_classes() + 4}},
        {"dtype", "float32"},
        {"layout",
         "per anchor: one logit per class (sigmoid, no background class), then box deltas "
         "(dy, dx, dh, dw) relative to the anchor: cy = cya + dy * ha, cx = cxa + dx * wa, "
         "h = ha * exp(dh), w = wa * exp(dw)"},
        {"anchors",
         "levels 3..5 (stride 2^l), row, column, then 3 scales (2^0, 2^(1/3), 2^(2/3)) x 3 "
         "aspect ratios (1:1, 1.4:0.7, 0.7:1.4); side anchor_scale * stride * scale, "
         "centred on the cells (options.anchor_scale)"}};
  } else {
    d["output"] = {
        {"shape", {-1, s.num_classes()}}, {"dtype", "float32"}, {"layout", "class logits"}};
  }
  return d;
}

torch::jit::Module trace_for_export(Model& model) {
  const ModelSpec& spec = model.spec();
  KD_CHECK(spec.input_shape.size() == 3, "model {}: no input shape to export with", spec.arch);
  model.train(false);
  torch::NoGradGuard no_grad;

  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  Module root(c10::QualifiedName("__torch__.kd.ExportedModel"), cu, /*shouldMangle=*/true);
  std::set<const void*> params;
  for (const auto& p : model.parameters()) params.insert(p.unsafeGetTensorImpl());
  for (auto& [name, t] : model.state()) {
    std::string leaf;
    Module owner = owner_of(root, name, &leaf, cu);
    owner.register_parameter(leaf, t, /*is_buffer=*/params.count(t.unsafeGetTensorImpl()) == 0);
  }

  // The tracer maps each parameter used by the forward pass to an attribute read on `root`
  // (it is given `root` as self), so weights stay parameters instead of graph constants.
  const auto& in = spec.input_shape;
  torch::manual_seed(0);
  auto example = torch::randn({2, in[0], in[1], in[2]});
  auto traced = torch::jit::tracer::trace(
      {example},
      [&](torch::jit::Stack inputs) -> torch::jit::Stack {
        return {ExportAccess::forward(model, inputs.at(0).toTensor())};
      },
      [](const torch::autograd::Variable&) { return std::string(); }, /*strict=*/false,
      /*force_outplace=*/false, &root);
  auto forward =
      cu->create_function(c10::QualifiedName(*root.type()->name(), "forward"), traced.first->graph);
  root.type()->addMethod(forward);
  return root;
}

ExportResult export_torchscript(Model& model, const std::string& path) {
  const ModelSpec& spec = model.spec();
  const auto& in = spec.input_shape;

  ExportResult r;
  r.module_path = path;
  r.description_path = export_description_path(path).string();
  check_description_replaceable(r.description_path);
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
  if (spec.precision == "int8") {
    // Already a TorchScript module of quantized kernels (taking normalized input): saved as it
    // is, packed weights and all.
    write_atomically(path, [&](const fs::path& tmp) { model.save(tmp.string()); });
  } else {
    Module root = trace_for_export(model);
    write_atomically(path, [&](const fs::path& tmp) {
      write_serialized(tmp, [&](std::ostream& out) { root.save(out); });
    });
  }

  // Check the file as a user will load it, at a batch size other than the traced one.
  auto reloaded = torch::jit::load(path, torch::kCPU);
  reloaded.eval();
  for (int64_t batch : {1, 3}) {
    auto x = torch::randn({batch, in[0], in[1], in[2]});
    auto want = ExportAccess::forward(model, x.to(model.device())).to(torch::kCPU);
    auto got = reloaded.forward({x}).toTensor();
    KD_CHECK(got.sizes() == want.sizes(), "{}: exported module gives shape {} where kd gives {}",
             path, c10::str(got.sizes()), c10::str(want.sizes()));
    r.max_abs_diff = std::max(r.max_abs_diff, (got - want).abs().max().item<double>());
    KD_CHECK(torch::allclose(got, want, 1e-4, 1e-5),
             "{}: exported module differs from kd (max |diff| {:.3g})", path, r.max_abs_diff);
    if (batch == 1) r.description = describe_export(model, want.size(1), "torchscript");
  }
  if (spec.precision == "int8") {
    r.description["produced_by"] = "kd quantize, saved by kd export";
    r.description["quantization"] = spec.quantization;
    r.description["load"] = "torch.backends.quantized.engine = '" +
                            spec.quantization.value("engine", "onednn") + "' before torch.jit.load";
  }
  r.description["check_max_abs_diff"] = r.max_abs_diff;
  write_text_atomically(r.description_path, r.description.dump(2) + "\n");
  return r;
}

std::unique_ptr<Model> optimize_for_inference(Model& model, double* max_abs_diff) {
  KD_CHECK(model.device().is_cpu(), "optimizing for inference is for the CPU, not {}",
           model.device().str());
  KD_CHECK(model.spec().precision == "fp32", "the model is {}: already optimized",
           model.spec().precision);
  Module traced = trace_for_export(model);
  traced.eval();
  Module frozen = torch::jit::freeze(traced);
  auto optimized = make_script_model(model.spec(), torch::jit::optimize_for_inference(frozen, {}));
  torch::NoGradGuard no_grad;
  double worst = 0;
  for (int64_t batch : {1, 5}) {
    auto x = random_input(model.spec(), batch);
    const torch::Tensor want = model.forward(x);
    const torch::Tensor got = optimized->forward(x);
    KD_CHECK(got.sizes() == want.sizes(), "optimized model gives shape {} where kd gives {}",
             c10::str(got.sizes()), c10::str(want.sizes()));
    worst = std::max(worst, (got - want).abs().max().item<double>());
    KD_CHECK(torch::allclose(got, want, 1e-3, 1e-4), "optimized model differs (max |diff| {:.3g})",
             worst);
  }
  if (max_abs_diff) *max_abs_diff = worst;
  return optimized;
}

#if !KD_WITH_ONNX
// onnx_export.cpp is left out of this build; library users get the reason, not a link error.
ExportResult export_onnx(Model&, const std::string& path) {
  throw Error(fmt::format("{}: this kd was built without ONNX export (KD_WITH_ONNX=OFF)", path));
}
#endif

}  // namespace kd
