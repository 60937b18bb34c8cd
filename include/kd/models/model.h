#pragma once
/// @file
/// kd::Model: one interface over registry architectures and TorchScript modules, so every
/// strategy, evaluator and server treats a .pt from PyTorch like a model kd built itself.
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "kd/core/kinds.h"
#include "kd/data/dataset.h"

namespace kd {

/// Everything needed to rebuild a model without extra flags; saved as model.json in a run.
struct ModelSpec {
  std::string kind = "native";  ///< native | torchscript
  Task task = Task::classify;   ///< detect: outputs in kd/models/effdet.h
  std::string arch;             ///< registry name (native) or the source .pt (torchscript)
  nlohmann::json options = nlohmann::json::object();  ///< architecture options, fully resolved
  std::vector<int64_t> input_shape;                   ///< C, H, W
  /// Trained on streamed photos: an image is resized (shorter side) to this, then its centre
  /// H x W cropped, as the eval transform does. 0: resized to H x W.
  int64_t resize = 0;
  std::vector<std::string> class_names;
  Normalization norm;
  std::string precision = "fp32";                          ///< fp32 | int8 (kd/models/quantize.h)
  nlohmann::json quantization = nlohmann::json::object();  ///< int8: engine, observer, ...

  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
  nlohmann::json to_json() const;
  static ModelSpec from_json(const nlohmann::json& j, const std::string& where);
};

struct ExportResult;

class Model {
 public:
  explicit Model(ModelSpec spec);
  virtual ~Model() = default;

  /// x: float [B, C, H, W] with pixels in [0, 1]; the stored normalization is applied here.
  torch::Tensor forward(const torch::Tensor& x);
  /// The logits plus the outputs of the named layers (feature hints), in the order asked.
  /// Native models run their top-level layers in order; a TorchScript module runs its children
  /// in order from the input down to each named layer (descending into nested modules), which
  /// is what nn.Sequential and the usual features -> classifier modules compute.
  std::pair<torch::Tensor, std::vector<torch::Tensor>> forward_with_features(
      const torch::Tensor& x, const std::vector<std::string>& layers);
  const ModelSpec& spec() const { return spec_; }

  virtual std::vector<torch::Tensor> parameters() = 0;
  /// Parameters and buffers by name: what a checkpoint holds and what the teacher cache hashes.
  virtual std::vector<std::pair<std::string, torch::Tensor>> state() = 0;
  virtual void train(bool on) = 0;
  virtual void to(torch::Device device);
  virtual void save(const std::string& path) = 0;  ///< weights (native) or the whole module (TS)
  virtual void load(const std::string& path) = 0;
  virtual std::unique_ptr<Model> clone() const = 0;  ///< deep copy (snapshot teachers, EMA)
  /// Module paths usable as hint layers and their types, as `kd models --layers` lists them.
  virtual std::vector<std::pair<std::string, std::string>> layers() const = 0;
  /// Throws, listing the valid names, unless `name` is one of layers().
  void check_layer(const std::string& name) const;
  torch::Device device() const { return mean_.device(); }

  int64_t num_parameters();

 protected:
  /// Export traces the network itself: the exported file takes normalized input
  /// (src/models/export_access.h).
  friend struct ExportAccess;
  virtual torch::Tensor forward_normalized(const torch::Tensor& x) = 0;
  virtual std::pair<torch::Tensor, std::vector<torch::Tensor>> forward_features_normalized(
      const torch::Tensor& x, const std::vector<std::string>& layers) = 0;
  virtual void move_to(torch::Device device) = 0;
  ModelSpec spec_;
  torch::Tensor mean_, inv_std_;  ///< [1, C, 1, 1]
};

/// Builds a fresh model from the registry (spec.kind == native) or loads a TorchScript file.
std::unique_ptr<Model> create_model(const ModelSpec& spec);
/// Loads a TorchScript module saved by torch.jit.save. Class names and normalization come from
/// a sidecar "<file>.json" (keys task, class_names, mean, std, input_shape, options) when present,
/// which is what `kd export` writes beside its .pt.
std::unique_ptr<Model> load_torchscript(const std::string& path);
/// Rebuilds a model from a run directory (model.json + model.pt) or a TorchScript file.
std::unique_ptr<Model> load_model(const std::string& run_or_pt);

/// Writes model.json and model.pt into `dir`, each atomically.
void save_model(Model& model, const std::string& dir);

/// The model's buffers (state() minus parameters: BatchNorm running statistics), in state order.
std::vector<torch::Tensor> model_buffers(Model& model);

}  // namespace kd
