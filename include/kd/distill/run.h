#pragma once
// One `kd train` / `kd distill` run from a resolved config to a complete run directory:
//   config.yaml     the resolved configuration (written first)
//   metrics.jsonl   one JSON record per epoch
//   model.json      model description (architecture, options, classes, normalization)
//   model.pt        best weights by eval top-1 (or the TorchScript module)
//   checkpoints/    last.pt, last-optimizer.pt, best.pt
//   generations/    self-distillation with --generations: one such folder per generation
//   summary.json    test metrics, params, MACs, latency (written last: its presence means the
//                   run is complete; error.txt instead means it failed)
#include <nlohmann/json.hpp>

#include "kd/distill/config.h"
#include "kd/data/dataset.h"

namespace kd {

struct RunData {
  Dataset train, eval, test;  // test is the source's test part, or eval when it has none
  std::string test_name;      // "test" or "eval"
};

// Loads the source and applies the split (manifest or ratio + seed), the slice limit, the class
// selection, and the labeled fraction and unlabeled data as `mode` uses them (semi keeps the
// unlabeled rest with label kUnlabeled; merge hides every training label).
RunData load_run_data(const DataConfig& cfg, const std::string& mode = "train");

// Fills what the config implies but does not say (a detector architecture: task detect), as
// execute_run does before writing config.yaml; experiments compare configs after it.
void resolve_task(RunConfig& cfg);

// Executes the run and returns its summary. `overwrite` removes an existing run directory.
nlohmann::json execute_run(const RunConfig& cfg, bool overwrite, bool resume = false);

// Reads a run's summary.json; throws naming the run if it is missing (incomplete run).
nlohmann::json read_summary(const std::string& run_dir);
// The name `kd compare` groups a teacher under: its run's name, or a .pt file's stem.
std::string teacher_name(const std::string& teacher);
RunConfig read_run_config(const std::string& run_dir);

}  // namespace kd
