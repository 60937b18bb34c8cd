#pragma once
/// @file
/// The runs dashboard of `kd serve --runs DIR`: GET /runs is the page (groups of seeds, charts,
/// live runs; see src/serve/web/runs.html); it draws from GET /runs/index.json (RunIndex's
/// document, with an ETag: a refresh while nothing changed is answered 304) and GET
/// /runs/curves?runs=A,B (their metrics.jsonl). GET /runs/report?runs=A,B renders kd report's
/// page for those runs. Paths are relative to DIR, and only runs the index lists are read.
#include <map>
#include <mutex>
#include <string>

#include "kd/report/run_index.h"

namespace kd {

struct HttpResponse;
struct HttpRequest;

class Dashboard {
 public:
  /// served: run directory (as given to kd serve) -> served model name.
  Dashboard(const std::string& root, const std::map<std::string, std::string>& served);
  HttpResponse page() const;
  HttpResponse index(const HttpRequest& req);
  HttpResponse curves(const std::string& runs_param);
  HttpResponse report(const std::string& runs_param);

 private:
  RunIndex index_;
  std::string page_;
  std::map<std::string, std::string> served_;  ///< rel path under the root -> served model
  /// Reports already made (a detector's evaluates its model on the test images), by the runs
  /// asked for, valid while the runs' summary.json and metrics.jsonl files are unchanged.
  struct Cached {
    std::string stamp, page;
  };
  std::mutex cache_mutex_;
  std::map<std::string, Cached> cache_;  ///< by the normalised run list
  size_t cache_bytes_ = 0;
};

}  // namespace kd
