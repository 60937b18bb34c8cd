#pragma once
// Private to the models area: what the exporters (export.cpp, onnx_export.cpp) share.
#include <cstdint>

#include <nlohmann/json.hpp>
#include <torch/script.h>

#include "kd/models/model.h"

namespace kd {

// The network on normalized input, which is what an exported file computes.
struct ExportAccess {
  static torch::Tensor forward(Model& m, const torch::Tensor& x) { return m.forward_normalized(x); }
};

// A module whose forward is the traced network (batch size free), parameters and buffers under
// kd's names.
torch::jit::Module trace_for_export(Model& model);
// A model whose network is `module` (taking normalized input), described by `spec`.
std::unique_ptr<Model> make_script_model(ModelSpec spec, torch::jit::Module module);
// The TorchScript module of a model made by make_script_model or loaded from TorchScript;
// kd::Error for kd's own (native) models.
torch::jit::Module& script_module_of(Model& model);
// The description JSON written beside an export (task, classes, normalization, input and output).
/// kd::Error unless `path` is absent or a description kd export wrote (not_an_export_description).
void check_description_replaceable(const std::filesystem::path& path);
nlohmann::json describe_export(Model& model, int64_t outputs_per_row, const char* format);

}  // namespace kd
