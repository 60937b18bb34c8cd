#pragma once
/// @file
/// Resume checkpoints: after every epoch a run writes checkpoints/epoch-NNNN/ with the student,
/// the optimizer, the strategy's own state, the RNG and state.json (the epoch, the best epoch so
/// far, the metrics history, and each file's size and CRC-32). The folder is written under a
/// temporary name and renamed, so it is complete or absent; the last two are kept. A resume takes
/// the newest one whose files match state.json, reporting any corrupt one by name.
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace torch::optim {
class Optimizer;
}

namespace kd {

class Model;

struct ResumeState {
  int64_t epoch = 0;         ///< epochs completed
  double best_score = -1.0;  ///< of the best epoch so far: eval top-1, or eval mAP for detection
  int64_t best_epoch = 0;
  double images_per_s_sum = 0.0;
  std::vector<nlohmann::json> history;  ///< metrics.jsonl lines so far
};

/// write_files(folder) writes the checkpoint's files into the (temporary) folder.
void write_checkpoint(const std::filesystem::path& run_dir, const ResumeState& state,
                      const std::function<void(const std::filesystem::path&)>& write_files);

struct FoundCheckpoint {
  std::filesystem::path folder;
  ResumeState state;
};
/// The newest verified checkpoint of a run that `load` accepts, if any; corrupt or unreadable
/// ones, and ones whose load throws a kd::Error (a forged CRC over a damaged archive), are warned
/// about (by file) and skipped for the one before.
std::optional<FoundCheckpoint> find_checkpoint(
    const std::filesystem::path& run_dir,
    const std::function<void(const FoundCheckpoint&)>& load = {});

/// What every training loop puts in a checkpoint folder: model.pt, optimizer.pt, strategy.pt (the
/// learned tensors outside the model, e.g. hint adapters: p0, p1, ...) and rng.pt (torch's CPU
/// generator). load_training_state restores them in place.
void save_training_state(const std::filesystem::path& folder, Model& model,
                         torch::optim::Optimizer& optimizer,
                         const std::vector<torch::Tensor>& extra);
void load_training_state(const std::filesystem::path& folder, Model& model,
                         torch::optim::Optimizer& optimizer,
                         const std::vector<torch::Tensor>& extra, torch::Device device);

}  // namespace kd
