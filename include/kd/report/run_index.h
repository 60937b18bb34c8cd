#pragma once
/// @file
/// The runs dashboard's data (`kd serve --runs DIR`): every run directory under DIR as one row
/// (its experiment, group and seed, state, scores, cost; for a run being trained its epoch, ETA
/// and current eval score; for a failed one error.txt's reason), every group of seeds pooled as
/// mean ± std with the share of the teacher-student gap it closed (kd compare's rules), and the
/// learning curves of chosen runs. Paths are relative to DIR. Rows are cached by the mtimes of
/// the files they are read from, so a refresh of a folder of thousands of runs costs a few stat()
/// calls per run; the document's `stamp` changes exactly when something shown changed.
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kd {

struct RunConfig;

/// metrics.jsonl: one record per epoch; a torn last line (a run killed while writing) is dropped.
std::vector<nlohmann::json> read_metrics(const std::string& path);

class RunIndex {
 public:
  explicit RunIndex(std::string root);

  /// {root, stamp, runs: [...], groups: [...]} (docs/guide/serving.md, the dashboard); nothing
  /// when its stamp would be `unless_stamp` (a client's copy is current: one scan, no document).
  std::optional<nlohmann::json> index(const std::string& unless_stamp = "");
  /// rel path -> the run's metrics.jsonl records; only runs index() lists (else an Error naming
  /// the path).
  nlohmann::json curves(const std::vector<std::string>& rel_paths);
  /// rel path -> run directory, for every run listed.
  std::map<std::string, std::string> runs();

  const std::string& root() const { return root_; }

 private:
  struct Entry {
    std::string stamp;  ///< mtimes (and lock state) of the files the row was read from
    nlohmann::json row;
    nlohmann::json summary;  ///< complete runs: summary.json, for the groups
  };
  struct Scan {
    std::vector<std::string> rels;  ///< sorted
    std::string stamp;
  };
  Scan scan();  ///< refreshes entries_ for every run found; under mu_
  std::string root_;
  std::mutex mu_;
  std::map<std::string, Entry> entries_;  ///< by rel path
  std::string groups_stamp_;
  nlohmann::json groups_;
};

/// What a run learns from, in a few words: "ce" (trained alone), the loss registry's names
/// ("dist", "kl+fitnet"), "kl T=4" for soft targets, "pseudo-labels", detection's terms.
std::string loss_label(const RunConfig& cfg);

}  // namespace kd
