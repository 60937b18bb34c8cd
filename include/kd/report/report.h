#pragma once
/// @file
/// `kd report` and the runs dashboard of `kd serve --runs`: what is known about runs, gathered
/// into one JSON document, and that document rendered as a self-contained HTML page (Chart.js
/// from Debian's libjs-chart.js is inlined at build time; the page needs no network).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kd {

struct ReportOptions {
  int samples = 8;               ///< detectors: test images shown with their predicted boxes
  double score_threshold = 0.3;  ///< detectors: lowest score drawn in the samples
};

/// One run directory: its summary, per-epoch metrics, resolved config, role (teacher, student,
/// distilled; set by collect_report), and for a classifier the confusion matrix and per-class
/// accuracy, for a detector per-class precision-recall curves and sample predictions (the model
/// runs on the test images). An incomplete run (no summary.json) is described as such, with
/// whatever metrics it has.
nlohmann::json collect_run(const std::string& dir, const ReportOptions& opts);

/// Several runs; teacher / student / distilled roles and the share of the gap distillation closed.
nlohmann::json collect_report(const std::vector<std::string>& dirs, const ReportOptions& opts);

/// The HTML page for collect_report's document.
std::string render_report(const nlohmann::json& report);

/// An HTML page with Debian's Chart.js put in place of its `/*KD_CHART_JS*/` marker.
std::string with_chart_js(std::string page);

/// Run directories (folders with config.yaml) under root, at most max_depth levels down, sorted.
std::vector<std::string> find_run_dirs(const std::string& root, int max_depth = 4);

}  // namespace kd
