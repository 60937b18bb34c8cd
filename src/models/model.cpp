#include "kd/models/model.h"
#include "kd/models/input.h"
#include "kd/models/quantize.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <spdlog/spdlog.h>

#include "kd/core/crc.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/core/json.h"
#include "kd/core/runtime.h"
#include "kd/models/registry.h"

namespace kd {

Model::Model(ModelSpec spec) : spec_(std::move(spec)) {
  if (spec_.norm.mean.empty()) spec_.norm = {{0.0}, {1.0}};
  auto to_t = [](const std::vector<double>& v) {
    return torch::tensor(v, torch::kFloat32).view({1, -1, 1, 1});
  };
  mean_ = to_t(spec_.norm.mean);
  inv_std_ = 1.0 / to_t(spec_.norm.std);
}

torch::Tensor Model::forward(const torch::Tensor& x) {
  if (!bf16_autocast()) return forward_normalized((x - mean_) * inv_std_);
  AutocastScope bf16(mean_.device());
  return forward_normalized((x - mean_) * inv_std_).to(torch::kFloat32);
}

void Model::to(torch::Device device) {
  mean_ = mean_.to(device);
  inv_std_ = inv_std_.to(device);
  move_to(device);
}

std::pair<torch::Tensor, std::vector<torch::Tensor>> Model::forward_with_features(
    const torch::Tensor& x, const std::vector<std::string>& layers) {
  if (!bf16_autocast()) return forward_features_normalized((x - mean_) * inv_std_, layers);
  AutocastScope bf16(mean_.device());
  auto [logits, feats] = forward_features_normalized((x - mean_) * inv_std_, layers);
  for (auto& f : feats) f = f.to(torch::kFloat32);
  return {logits.to(torch::kFloat32), std::move(feats)};
}

void Model::check_layer(const std::string& name) const {
  std::vector<std::string> names;
  for (const auto& [n, type] : layers()) {
    if (n == name) return;
    names.push_back(n);
  }
  fail("model {} has no layer '{}' (layers: {})", spec_.arch, name, fmt::join(names, ", "));
}

int64_t Model::num_parameters() {
  // Quantized kernels keep their weights packed, out of parameters(): the count is the fp32
  // model's, taken when it was converted.
  if (spec_.precision == "int8") return spec_.quantization.value("parameters", int64_t{0});
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

namespace {

// torch.jit.save writes an uncompressed zip; LibTorch inflates whatever an entry claims. The
// central directory is read first (bounded: 64 KiB of end record, one entry at a time) and a
// compressed entry that expands more than 100-fold, or more than 16 GiB in all, is refused: a
// 4 MB zip bomb otherwise costs 4.4 GB before LibTorch gives up.
void check_zip_sizes(const std::string& path) {
  KD_CHECK(fs::is_regular_file(path), "{}: not a regular file", path);
  std::ifstream in(path, std::ios::binary);
  KD_CHECK(in, "{}: cannot read", path);
  const uint64_t size = fs::file_size(path);
  const uint64_t tail = std::min<uint64_t>(size, 22 + 65535);
  std::string end(tail, '\0');
  in.seekg(static_cast<std::streamoff>(size - tail));
  in.read(end.data(), static_cast<std::streamsize>(tail));
  auto u16 = [](const std::string& b, size_t at) {
    return uint32_t(uint8_t(b[at])) | (uint32_t(uint8_t(b[at + 1])) << 8);
  };
  auto u32 = [&](const std::string& b, size_t at) { return u16(b, at) | (u16(b, at + 2) << 16); };
  const auto eocd = end.rfind(std::string("PK\x05\x06", 4));
  if (eocd == std::string::npos || eocd + 22 > end.size()) return;  // not a zip: LibTorch says so
  const uint32_t entries = u16(end, eocd + 10), dir_size = u32(end, eocd + 12),
                 dir_at = u32(end, eocd + 16);
  if (dir_size == 0xFFFFFFFFu || dir_at == 0xFFFFFFFFu || uint64_t(dir_at) + dir_size > size)
    return;  // zip64: sizes below
  std::string dir(dir_size, '\0');
  in.seekg(dir_at);
  in.read(dir.data(), dir_size);
  KD_CHECK(in, "{}: cannot read its zip directory", path);
  uint64_t total = 0;
  size_t at = 0;
  for (uint32_t i = 0; i < entries && at + 46 <= dir.size(); ++i) {
    if (u32(dir, at) != 0x02014b50u) break;
    const uint32_t method = u16(dir, at + 10), packed = u32(dir, at + 20),
                   unpacked = u32(dir, at + 24);
    total += unpacked;
    KD_CHECK(
        method == 0 || unpacked <= 100ull * packed + (1u << 20),
        "{}: a zip entry expands {} bytes to {} (a zip bomb? torch.jit.save does not compress)",
        path, packed, unpacked);
    KD_CHECK(total <= (uint64_t(16) << 30), "{}: its zip entries hold more than 16 GiB", path);
    at += 46 + u16(dir, at + 28) + u16(dir, at + 30) + u16(dir, at + 32);
  }
}

torch::jit::Module load_script_module(const std::string& path, torch::Device device) {
  check_zip_sizes(path);
  try {
    return torch::jit::load(path, device);
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    std::replace(why.begin(), why.end(), '\n', ' ');
    fail("{}: not a TorchScript module saved by torch.jit.save ({})", path, why.substr(0, 200));
  } catch (const std::exception& e) {  // the TorchScript parser's ErrorReport is no c10::Error
    std::string why = e.what();
    std::replace(why.begin(), why.end(), '\n', ' ');
    fail("{}: not a TorchScript module saved by torch.jit.save ({})", path, why.substr(0, 200));
  }
}

class NativeModel final : public Model {
 public:
  NativeModel(ModelSpec spec, Network net) : Model(std::move(spec)), net_(std::move(net)) {
    to_channels_last();
  }

  std::vector<torch::Tensor> parameters() override { return net_.module->parameters(); }
  std::vector<std::pair<std::string, torch::Tensor>> state() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& p : net_.module->named_parameters()) out.emplace_back(p.key(), p.value());
    for (const auto& b : net_.module->named_buffers()) out.emplace_back(b.key(), b.value());
    return out;
  }
  void train(bool on) override { net_.module->train(on); }
  void save(const std::string& path) override {
    torch::serialize::OutputArchive archive;
    net_.module->save(archive);
    write_serialized(path, [&](std::ostream& out) { archive.save_to(out); });
  }
  void load(const std::string& path) override {
    torch::serialize::InputArchive archive;
    try {
      archive.load_from(path, device());
      net_.module->load(archive);
    } catch (const c10::Error& e) {
      fail("{}: cannot load weights for {} ({})", path, spec_.arch,
           std::string(e.what_without_backtrace()).substr(0, 200));
    }
  }
  std::unique_ptr<Model> clone() const override {
    // Rebuild from the spec and copy the state by name: works for every architecture without
    // each module implementing Cloneable.
    auto copy = create_model(spec_);
    copy->to(device());
    torch::NoGradGuard no_grad;
    auto src = const_cast<NativeModel*>(this)->state();
    auto dst = copy->state();
    for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_(src[i].second);
    return copy;
  }
  std::vector<std::pair<std::string, std::string>> layers() const override { return net_.layers; }

 protected:
  torch::Tensor forward_normalized(const torch::Tensor& x) override {
    return net_.forward(x.dim() == 4 ? x.contiguous(at::MemoryFormat::ChannelsLast) : x);
  }
  std::pair<torch::Tensor, std::vector<torch::Tensor>> forward_features_normalized(
      const torch::Tensor& x, const std::vector<std::string>& layers) override {
    auto out = net_.forward_features(
        x.dim() == 4 ? x.contiguous(at::MemoryFormat::ChannelsLast) : x, layers);
    for (size_t k = 0; k < layers.size(); ++k)
      if (!out.second[k].defined()) check_layer(layers[k]);
    return out;
  }
  void move_to(torch::Device device) override {
    net_.module->to(device);
    to_channels_last();
  }

 private:
  // oneDNN's convolutions run 12-15% faster on NHWC than on NCHW here (bench/README.md), in
  // both directions; 4-D weights and inputs are kept channels-last. The strides are spelled out
  // because contiguous(ChannelsLast) leaves a weight with one input channel in NCHW strides (the
  // same memory), while its gradients come back with NHWC strides, and DDP's Reducer compares
  // strides literally (a warning per rank, and a strided copy each step).
  void to_channels_last() {
    torch::NoGradGuard no_grad;
    for (auto& p : net_.module->parameters()) {
      if (p.dim() != 4) continue;
      const int64_t C = p.size(1), H = p.size(2), W = p.size(3);
      auto nhwc = torch::empty_strided(p.sizes(), {H * W * C, 1, W * C, C}, p.options());
      p.set_data(nhwc.copy_(p));
    }
  }

  Network net_;
};

class ScriptModel final : public Model {
 public:
  ScriptModel(ModelSpec spec, torch::jit::Module module)
      : Model(std::move(spec)), module_(std::move(module)) {}
  torch::jit::Module& module() { return module_; }

  std::vector<torch::Tensor> parameters() override {
    std::vector<torch::Tensor> out;
    for (const auto& p : module_.parameters()) out.push_back(p);
    return out;
  }
  std::vector<std::pair<std::string, torch::Tensor>> state() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& p : module_.named_parameters()) out.emplace_back(p.name, p.value);
    for (const auto& b : module_.named_buffers()) out.emplace_back(b.name, b.value);
    return out;
  }
  void train(bool on) override {
    module_.train(on);
    // torch.jit.load keeps requires_grad as saved; a TorchScript student trains through them.
    if (on)
      for (auto p : module_.parameters()) p.requires_grad_(true);
  }
  void save(const std::string& path) override {
    write_serialized(path, [&](std::ostream& out) { module_.save(out); });
  }
  void load(const std::string& path) override {
    module_ = load_script_module(path, device());
    taps_.clear();
  }
  std::unique_ptr<Model> clone() const override {
    auto copy = std::make_unique<ScriptModel>(spec_, module_.deepcopy());
    copy->Model::to(device());
    return copy;
  }
  std::vector<std::pair<std::string, std::string>> layers() const override {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& m : module_.named_modules()) {
      if (m.name.empty()) continue;
      auto type = m.value.type()->name();
      out.emplace_back(m.name, type ? type->name() : "?");
    }
    return out;
  }

 protected:
  // Foreign code runs here: its exceptions (a Python traceback) become one line naming the
  // model, and an output that is not one row per image is refused before it is indexed.
  torch::Tensor forward_normalized(const torch::Tensor& x) override {
    c10::IValue out;
    try {
      out = module_.forward({x});
    } catch (const c10::Error& e) {
      fail("TorchScript model {} raised: {}", spec_.arch, last_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      fail("TorchScript model {} raised: {}", spec_.arch, last_line(e.what()));
    }
    torch::Tensor y;
    if (out.isTensor())
      y = out.toTensor();
    else if (out.isTuple() && !out.toTupleRef().elements().empty() &&
             out.toTupleRef().elements()[0].isTensor())
      y = out.toTupleRef().elements()[0].toTensor();
    else
      fail("TorchScript model {}: forward must return a tensor (or a tuple starting with one)",
           spec_.arch);
    KD_CHECK(y.dim() >= 2 && y.size(0) == x.size(0),
             "TorchScript model {}: returned shape {} for a batch of {} images", spec_.arch,
             c10::str(y.sizes()), x.size(0));
    return y;
  }
  // A TorchScript error ends with the raised exception ("RuntimeError: ..."), after the traceback.
  static std::string last_line(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    const auto nl = text.rfind('\n');
    std::string line = nl == std::string::npos ? text : text.substr(nl + 1);
    while (!line.empty() && line.front() == ' ') line.erase(0, 1);
    return line.substr(0, 300);
  }
  // One forward that also returns the taps, when forward's graph calls each tapped module
  // (tap_function); otherwise each tap runs the layers before it in order, then forward runs.
  std::pair<torch::Tensor, std::vector<torch::Tensor>> forward_features_normalized(
      const torch::Tensor& x, const std::vector<std::string>& layers) override {
    for (const auto& name : layers) check_layer(name);
    if (torch::jit::Function* f = tap_function(layers)) {
      c10::IValue out;
      try {
        out = torch::jit::Method(module_._ivalue(), f)({x});
      } catch (const std::exception& e) {
        fail("TorchScript model {} raised: {}", spec_.arch, last_line(e.what()));
      }
      const auto& items = out.toTupleRef().elements();
      std::vector<torch::Tensor> taps;
      for (size_t k = 1; k < items.size(); ++k) taps.push_back(items[k].toTensor());
      return {items[0].toTensor(), taps};
    }
    std::vector<torch::Tensor> taps;
    for (const auto& name : layers) taps.push_back(run_to(module_, name, x));
    return {forward_normalized(x), taps};
  }
  void move_to(torch::Device device) override { module_.to(device); }

 private:
  // A copy of forward whose graph returns (output, the taps' outputs): each tap is the output of
  // the call to the module on its path, found by following prim::GetAttr from self; a call into
  // a container on the way (features, to tap features.6) is inlined first. Compiled once per
  // list of layers; null when some tap is not such a call (or forward returns no tensor).
  torch::jit::Function* tap_function(const std::vector<std::string>& layers) {
    const std::string key = fmt::format("{}", fmt::join(layers, ","));
    if (auto it = taps_.find(key); it != taps_.end()) return it->second;
    torch::jit::Function* fn = nullptr;
    try {
      fn = build_tap_function(layers);
    } catch (const std::exception& e) {
      spdlog::debug("{}: taps by running layers in order ({})", spec_.arch, e.what());
    }
    taps_[key] = fn;
    return fn;
  }
  torch::jit::Function* build_tap_function(const std::vector<std::string>& layers) {
    using namespace torch::jit;
    auto graph = toGraphFunction(module_.get_method("forward").function()).graph()->copy();
    auto paths = [&] {
      std::unordered_map<Value*, std::string> path{{graph->inputs()[0], ""}};
      for (Node* n : graph->nodes())
        if (n->kind() == prim::GetAttr && path.count(n->input(0))) {
          const std::string base = path[n->input(0)];  // a copy: the insertion may rehash
          path[n->output()] = base.empty() ? n->s(attr::name) : base + "." + n->s(attr::name);
        }
      return path;
    };
    std::vector<Value*> taps;
    for (const auto& layer : layers) {
      Value* tap = nullptr;
      while (!tap) {
        auto path = paths();
        Node* container = nullptr;
        size_t longest = 0;
        for (Node* n : graph->nodes()) {
          if (n->kind() != prim::CallMethod || n->s(attr::name) != "forward") continue;
          auto it = path.find(n->input(0));
          if (it == path.end()) continue;
          if (it->second == layer) {
            tap = n->output();
            break;
          }
          if (layer.rfind(it->second + ".", 0) == 0 && it->second.size() + 1 > longest) {
            container = n;
            longest = it->second.size() + 1;
          }
        }
        if (tap) break;
        KD_CHECK(container, "forward calls no module on the path to '{}'", layer);
        Module sub = module_;
        const std::string prefix = layer.substr(0, longest - 1);
        for (size_t b = 0, e; b <= prefix.size(); b = e + 1) {
          e = prefix.find('.', b);
          if (e == std::string::npos) e = prefix.size();
          sub = sub.attr(prefix.substr(b, e - b)).toModule();
        }
        // Its own graph, not the optimized one: that has every call below inlined already.
        auto& callee = toGraphFunction(sub.get_method("forward").function());
        inlineCallTo(container, &callee, callee.graph().get());
      }
      KD_CHECK(tap->type()->isSubtypeOf(*TensorType::get()), "'{}' returns no tensor", layer);
      taps.push_back(tap);
    }
    Node* ret = graph->return_node();
    KD_CHECK(ret->input(0)->type()->isSubtypeOf(*TensorType::get()), "forward returns no tensor");
    std::vector<Value*> outputs{ret->input(0)};
    outputs.insert(outputs.end(), taps.begin(), taps.end());
    WithInsertPoint guard(ret);
    ret->replaceInput(0, graph->insertNode(graph->createTuple(outputs))->output());
    auto cu = module_._ivalue()->compilation_unit();
    return cu->create_function(c10::QualifiedName(*module_.type()->name(), "kd_forward_taps"),
                               graph, /*shouldMangle=*/true);
  }

  // Runs the children of `m` in order on `x` until the one on `path` (dot-separated), descending
  // into the child that contains it.
  torch::Tensor run_to(torch::jit::Module m, const std::string& path, torch::Tensor x) {
    const auto dot = path.find('.');
    const std::string head = path.substr(0, dot);
    for (const auto& child : m.named_children()) {
      auto sub = child.value;
      if (child.name == head && dot != std::string::npos)
        return run_to(sub, path.substr(dot + 1), x);
      try {
        x = sub.forward({x}).toTensor();
      } catch (const std::exception& e) {  // c10::Error or the interpreter's JITException
        const std::string why = first_line(e.what());
        fail(
            "TorchScript model {}: cannot reach layer '{}' by running the layers before it in "
            "order ({} fails: {})",
            spec_.arch, path, child.name, why.substr(0, 120));
      }
      if (child.name == head) return x;
    }
    fail("TorchScript model {}: no layer '{}'", spec_.arch, path);
  }

  torch::jit::Module module_;
  std::map<std::string, torch::jit::Function*> taps_;  // by list of layers; null: run_to
};

}  // namespace

torch::jit::Module& script_module_of(Model& model) {
  auto* script = dynamic_cast<ScriptModel*>(&model);
  KD_CHECK(script, "model {} is not a TorchScript module", model.spec().arch);
  return script->module();
}

std::unique_ptr<Model> make_script_model(ModelSpec spec, torch::jit::Module module) {
  return std::make_unique<ScriptModel>(std::move(spec), std::move(module));
}

std::unique_ptr<Model> create_model(const ModelSpec& spec) {
  if (spec.kind == "torchscript") {
    KD_CHECK(fs::is_regular_file(spec.arch), "{}: no such TorchScript file", spec.arch);
    if (spec.precision == "int8") {
      use_int8_engine();
      check_int8_runs_here(spec, spec.arch);
    }
    return std::make_unique<ScriptModel>(spec, load_script_module(spec.arch, torch::kCPU));
  }
  KD_CHECK(spec.input_shape.size() == 3, "model {}: input shape must be [C, H, W]", spec.arch);
  const ArchInfo& arch = find_architecture(spec.arch);
  ArchContext ctx{spec.input_shape[0], spec.input_shape[1], spec.input_shape[2],
                  spec.num_classes()};
  KD_CHECK(ctx.num_classes > 0, "model {}: no classes", spec.arch);
  ModelSpec resolved = spec;
  resolved.task = arch.task;
  resolved.options = resolve_arch_options(spec.arch, spec.options);
  return std::make_unique<NativeModel>(resolved, arch.build(resolved.options, ctx));
}

std::unique_ptr<Model> load_torchscript(const std::string& path) {
  ModelSpec spec;
  spec.kind = "torchscript";
  spec.arch = path;
  bool described = false;
  for (const std::string& sidecar :
       {path + ".json", fs::path(path).replace_extension(".json").string()}) {
    if (!fs::exists(sidecar)) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_text(sidecar));
      spec.task = parse_kind<Task>(j.value("task", "classify"), sidecar);
      spec.options = j.value("options", nlohmann::json::object());
      spec.class_names = j.value("class_names", std::vector<std::string>{});
      spec.input_shape = j.value("input_shape", std::vector<int64_t>{});
      spec.norm.mean = j.value("mean", std::vector<double>{});
      spec.norm.std = j.value("std", std::vector<double>{});
      spec.precision = j.value("precision", "fp32");
      spec.quantization = j.value("quantization", nlohmann::json::object());
    } catch (const nlohmann::json::exception& e) {
      fail("{}: bad TorchScript sidecar ({})", sidecar, e.what());
    }
    std::string missing;
    for (const char* key : {"class_names", "input_shape", "mean", "std"})
      if (!j.contains(key)) missing += (missing.empty() ? "" : ", ") + std::string(key);
    if (!missing.empty())
      spdlog::warn(
          "{}: no {} (kd feeds a TorchScript model float32 NCHW pixels in [0, 1], then "
          "(x - mean) / std; docs/guide/training.md)",
          sidecar, missing);
    described = true;
    break;
  }
  if (!described)
    spdlog::warn(
        "{}: no description beside it ({}.json with class_names, input_shape, mean, std): "
        "its input is fed unnormalized and its classes are unnamed",
        path, path);
  return create_model(spec);
}

namespace {

// model.json records model.pt's size and CRC-32 (save_model): flipped bytes or a swapped file
// fail here with one line instead of loading wrong weights.
void verify_weights(const nlohmann::json& desc, const fs::path& weights,
                    const fs::path& desc_path) {
  if (!desc.contains("weights")) {
    spdlog::warn("{}: no checksum for model.pt (written by an older kd); loading it unverified",
                 desc_path.string());
    return;
  }
  const auto& w = desc["weights"];
  KD_CHECK(w.is_object(), "{}: 'weights' must be an object", desc_path.string());
  uint64_t bytes = 0;
  const uint32_t crc = file_crc32(weights, &bytes);
  const auto want_bytes = json_int<uint64_t>(w.value("bytes", nlohmann::json()),
                                             desc_path.string() + ": weights.bytes");
  const auto want_crc = json_int<uint32_t>(w.value("crc32", nlohmann::json()),
                                           desc_path.string() + ": weights.crc32");
  KD_CHECK(bytes == want_bytes, "{}: {} bytes, but model.json says {} (truncated or replaced)",
           weights.string(), bytes, want_bytes);
  KD_CHECK(crc == want_crc, "{}: CRC-32 mismatch with model.json (the file is corrupt)",
           weights.string());
}

}  // namespace

std::unique_ptr<Model> load_model(const std::string& run_or_pt) {
  fs::path p(run_or_pt);
  if (fs::is_regular_file(p)) return load_torchscript(run_or_pt);
  KD_CHECK(fs::is_directory(p), "{}: neither a run directory nor a TorchScript file", run_or_pt);
  fs::path desc = p / "model.json", weights = p / "model.pt";
  KD_CHECK(fs::exists(desc), "{}: no model.json (is the run incomplete?)", run_or_pt);
  KD_CHECK(fs::exists(weights), "{}: no model.pt (is the run incomplete?)", run_or_pt);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(desc));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", desc.string(), e.what());
  }
  ModelSpec spec = ModelSpec::from_json(j, desc.string());
  verify_weights(j, weights, desc);
  std::unique_ptr<Model> model;
  // Quantized weights are packed for the current engine as the module loads.
  if (spec.precision == "int8") {
    use_int8_engine();
    check_int8_runs_here(spec, desc.string());
  }
  if (spec.kind == "torchscript") {
    model = std::make_unique<ScriptModel>(spec, load_script_module(weights.string(), torch::kCPU));
  } else {
    model = create_model(spec);
    model->load(weights.string());
  }
  return model;
}

std::vector<torch::Tensor> model_buffers(Model& model) {
  std::vector<torch::Tensor> out;
  const auto params = model.parameters();
  for (auto& [name, t] : model.state()) {
    const bool is_param = std::any_of(params.begin(), params.end(),
                                      [&](const torch::Tensor& p) { return p.is_same(t); });
    if (!is_param) out.push_back(t);
  }
  return out;
}

void save_model(Model& model, const std::string& dir) {
  const fs::path weights = fs::path(dir) / "model.pt";
  write_atomically(weights, [&](const fs::path& tmp) { model.save(tmp.string()); });
  nlohmann::json j = model.spec().to_json();
  uint64_t bytes = 0;
  const uint32_t crc = file_crc32(weights, &bytes);
  j["weights"] = {{"file", "model.pt"}, {"bytes", bytes}, {"crc32", crc}};
  write_text_atomically(fs::path(dir) / "model.json", j.dump(2) + "\n");
}

torch::Tensor random_input(const ModelSpec& spec, int64_t batch, torch::Device device) {
  KD_CHECK(spec.input_shape.size() == 3, "model {}: no input shape [C, H, W]", spec.arch);
  const auto& in = spec.input_shape;
  return torch::rand({batch, in[0], in[1], in[2]}, torch::TensorOptions().device(device));
}

}  // namespace kd
