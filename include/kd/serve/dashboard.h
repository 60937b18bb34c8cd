#pragma once
/// @file
/// The runs dashboard of `kd serve --runs DIR`: GET /runs lists the run directories under DIR
/// (name, task, mode, score, params, latency, date, state) with links to their reports, and
/// GET /runs/report?runs=A,B renders kd report's page for those runs (paths relative to DIR,
/// only ones the listing shows). Served models link to the prediction page.
#include <map>
#include <mutex>
#include <string>

namespace kd {

struct HttpResponse;

class Dashboard {
 public:
  /// served: run directory (as given to kd serve) -> served model name.
  Dashboard(std::string root, std::map<std::string, std::string> served);
  HttpResponse list(const std::string& key_param) const;
  HttpResponse report(const std::string& runs_param, const std::string& key_param) const;

 private:
  std::string root_;
  std::map<std::string, std::string> served_;
  /// Reports already made (a detector's evaluates its model on the test images), by the runs
  /// asked for, valid while the runs' summary.json and metrics.jsonl files are unchanged.
  struct Cached {
    std::string stamp, page;
  };
  mutable std::mutex cache_mutex_;
  mutable std::map<std::string, Cached> cache_;
};

}  // namespace kd
