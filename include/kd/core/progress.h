#pragma once
/// @file
/// Training progress: a live bar on a terminal, plain log lines otherwise (CI, files, pipes).
#include <chrono>
#include <cstdint>
#include <string>

namespace kd {

class Progress {
 public:
  Progress(std::string label, int64_t total);
  /// Call after each unit of work; `items` counts images for the rate; acc < 0: none shown.
  void update(int64_t done, int64_t items, double loss, double acc);
  void finish();

 private:
  std::string label_;
  int64_t total_;
  int64_t items_ = 0;
  bool tty_;
  int64_t next_log_ = 0;  ///< non-tty: log at each quarter
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace kd
