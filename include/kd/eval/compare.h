#pragma once
/// @file
/// `kd compare`: runs grouped by name (seeds of one recipe share a name), mean and spread of
/// each metric, and the share of the teacher-student gap that distillation closed.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kd/core/kinds.h"

namespace kd {

struct Stat {
  double mean = 0.0, std = 0.0;  ///< std: sample standard deviation (0 for one run)
  int n = 0;
};
Stat stat_of(const std::vector<double>& v);
/// {"mean", "std", "n"}: how reports, compare.json and the dashboard write a Stat.
void to_json(nlohmann::json& j, const Stat& s);

struct CompareRow {
  std::string name;
  Mode mode = Mode::train;
  std::string arch, teacher;       ///< teacher: the teacher group's name (distilled rows)
  Task task = Task::classify;      ///< classify: score is top-1; detect: mAP@[.5:.95]
  std::string precision = "fp32";  ///< fp32 | int8 (kd quantize)
  Stat score, score50, params, macs, latency_ms, throughput;  ///< score50: detect's mAP@.5
};

/// Which score the rows compare: the test split's (the result), or the best eval-split score of the
/// run (what recipes are tuned and selected on, never on test).
enum class ScoreOn { test, eval };

struct Comparison {
  ScoreOn on = ScoreOn::test;
  std::vector<CompareRow> rows;
  /// For each distilled group: (name, gap closed) where gap closed = (D - S) / (T - S) with S the
  /// plain-trained group of the same architecture and T its teacher's group, on the score.
  std::vector<std::pair<std::string, Stat>> gap_closed;
  /// What could not be compared and why (runs tested on different test sets or class lists):
  /// their gap is not computed, and the table says so.
  std::vector<std::string> notes;
  std::string markdown() const;
  nlohmann::json to_json() const;
};

/// `summaries` are summary.json documents; a distilled run names its teacher's group in
/// "teacher_name". The gap is computed only when the teacher, student and distilled runs were
/// tested on the same images (test set, image count) with the same classes; otherwise a note.
/// With ScoreOn::eval, a summary without a best eval score is an error naming it.
Comparison compare_runs(const std::vector<nlohmann::json>& summaries, ScoreOn on = ScoreOn::test);

}  // namespace kd
