#pragma once
/// @file
/// A run as the commands that read one see it (report, serve, eval, compare, run): its files,
/// and the data its config names, split as training split it. kd/distill/run.h writes runs:
/// @verbatim
///   config.yaml     the resolved configuration (written first)
///   metrics.jsonl   one JSON record per epoch
///   model.json      model description (architecture, options, classes, normalization)
///   model.pt        best weights by the eval score (or the TorchScript module)
///   checkpoints/    last.pt, last-optimizer.pt, best.pt
///   generations/    self-distillation with --generations: one such folder per generation
///   summary.json    test metrics, params, MACs, latency (written last: its presence means the
///                   run is complete; error.txt instead means it failed)
/// @endverbatim
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kd/data/dataset.h"
#include "kd/data/detection.h"
#include "kd/models/model.h"
#include "kd/runs/config.h"

namespace kd {

/// Reads a run's summary.json; throws naming the run if it is missing (incomplete run).
nlohmann::json read_summary(const std::string& run_dir);
RunConfig read_run_config(const std::string& run_dir);
/// The name `kd compare` groups a teacher under: its run's name, or a .pt file's stem.
std::string teacher_name(const std::string& teacher);
/// Whether a run's summary names `teacher` (a run directory or a file) as its one teacher.
bool learned_from(const nlohmann::json& run_summary, const std::string& teacher);
/// A TorchScript teacher as a run summary for kd compare, kd report and kd run: its name (the
/// file's stem), parameters, and test top-1 as the classifier runs in `runs` distilled from it
/// alone recorded it; none when no run did.
std::optional<nlohmann::json> torchscript_teacher_summary(const std::string& pt,
                                                          const std::vector<nlohmann::json>& runs);
/// The same, failing with what to do instead when no run in `runs` scored the teacher.
nlohmann::json require_torchscript_teacher_summary(const std::string& pt,
                                                   const std::vector<nlohmann::json>& runs);

/// A teacher from a run directory or a TorchScript file; a run without summary.json did not
/// finish, which is said (its best weights so far are what it teaches with).
std::shared_ptr<Model> load_teacher_model(const std::string& run_or_pt);

/// Fills what the config implies but does not say (a detector architecture: task detect), as
/// execute_run does before writing config.yaml; experiments compare configs after it.
void resolve_task(RunConfig& cfg);

struct RunData {
  Dataset train, eval, test;  ///< test is the source's test part, or eval when it has none
  std::string test_name;      ///< "test" or "eval"
};

/// Loads the source and applies the split (manifest or ratio + seed), the slice limit, the class
/// selection, and the labeled fraction and unlabeled data as `mode` uses them (semi keeps the
/// unlabeled rest with label kUnlabeled; merge hides every training label).
RunData load_run_data(const DataConfig& cfg, Mode mode = Mode::train);

struct DetectionRunData {
  DetectionDataset train, eval, test;
  std::string test_name;  ///< "test" or "eval"
};

/// Input side of a detection run: data.height when set, else the architecture's image_size.
int64_t detection_input_size(const RunConfig& cfg);
DetectionRunData load_detection_run_data(const DataConfig& cfg, int64_t size);

}  // namespace kd
