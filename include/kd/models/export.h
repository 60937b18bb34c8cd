#pragma once
/// @file
/// `kd export`: a model as a TorchScript file that PyTorch Python loads with torch.jit.load, or as
/// an ONNX file, and its description beside it.
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace kd {

class Model;

struct ExportResult {
  std::string module_path;       ///< the .pt
  std::string description_path;  ///< the description beside it (export_description_path)
  nlohmann::json description;
  double max_abs_diff = 0;  ///< reloaded file vs kd's forward on the check inputs
};

/// Where the description of an export at `path` goes: PATH.json (student.pt -> student.pt.json),
/// so that a .pt and an .onnx of one name keep one each and a user's model.json beside
/// model.pt is left alone. kd::load_torchscript reads it (and the older student.json).
std::filesystem::path export_description_path(const std::string& path);
/// Why `path` is not a description kd export wrote, and so must not be replaced; nullopt when it
/// is one or does not exist.
std::optional<std::string> not_an_export_description(const std::filesystem::path& path);

/// Traces the network (input: normalized pixels, float [N, C, H, W]; the batch size is free)
/// into a TorchScript module whose parameters and buffers keep kd's names, so its state_dict()
/// matches the run's checkpoint. Writes `path` and the description (task, classes,
/// normalization, input shape, output layout, architecture options; also the sidecar that
/// kd::load_torchscript reads) as export_description_path(path), each atomically, after
/// reloading the written module and checking it reproduces kd's outputs at two batch sizes.
ExportResult export_torchscript(Model& model, const std::string& path);

/// The same network as ONNX (opset 13; input "input" [batch, C, H, W] of normalized pixels,
/// output "output"), for ONNX Runtime, OpenVINO, TensorRT or OpenCV's DNN module: weights as
/// initializers, batch norms folded into their convolutions, constant subgraphs folded, the file
/// passed through ONNX's checker; the description JSON beside it as for TorchScript. kd's own
/// architectures only (a TorchScript model is exported with PyTorch's torch.onnx).
ExportResult export_onnx(Model& model, const std::string& path);

/// The model for serving on the CPU: its network traced, frozen and passed through LibTorch's
/// optimize_for_inference (convolutions on oneDNN's blocked layouts from the first to the last,
/// with prepacked weights, BN folded, ReLU fused), the same input and outputs as
/// model.forward. Checked against model.forward at two batch sizes; kd::Error when it cannot be
/// built or differs. `max_abs_diff` gets the largest difference seen.
std::unique_ptr<Model> optimize_for_inference(Model& model, double* max_abs_diff = nullptr);

}  // namespace kd
