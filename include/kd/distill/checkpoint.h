#pragma once
// Resume checkpoints: after every epoch a run writes checkpoints/epoch-NNNN/ with the student,
// the optimizer, the strategy's own state, the RNG and state.json (the epoch, the best epoch so
// far, the metrics history, and each file's size and CRC-32). The folder is written under a
// temporary name and renamed, so it is complete or absent; the last two are kept. A resume takes
// the newest one whose files match state.json, reporting any corrupt one by name.
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

namespace kd {

struct ResumeState {
  int64_t epoch = 0;  // epochs completed
  double best_eval_top1 = -1.0;
  int64_t best_epoch = 0;
  double images_per_s_sum = 0.0;
  std::vector<nlohmann::json> history;  // metrics.jsonl lines so far
};

// write_files(folder) writes the checkpoint's files into the (temporary) folder.
void write_checkpoint(const std::filesystem::path& run_dir, const ResumeState& state,
                      const std::function<void(const std::filesystem::path&)>& write_files);

struct FoundCheckpoint {
  std::filesystem::path folder;
  ResumeState state;
};
// The newest verified checkpoint of a run, if any; corrupt or unreadable ones are warned about
// (by file) and skipped.
std::optional<FoundCheckpoint> find_checkpoint(const std::filesystem::path& run_dir);

}  // namespace kd
