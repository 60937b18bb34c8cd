#pragma once
/// @file
/// The server's Prometheus metrics, rendered in the text exposition format (version 0.0.4):
/// requests and errors by model, route and status code, request latency, batch sizes, inference
/// time, queue depth and rejections. Thread-safe; cheap enough to update on every request.
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace kd {

/// Cumulative buckets with fixed upper bounds (Prometheus `le`), plus sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds = {});
  void observe(double value);
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  ///< per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  /// One answered HTTP request; `model` is empty for routes that name none.
  void request(const std::string& model, const std::string& route, int code, double seconds);
  /// One batch run by a model's worker.
  void batch(const std::string& model, int64_t size, double seconds);
  /// Queue depth per model, read when the metrics are rendered.
  void set_queue_depth(std::function<std::vector<std::pair<std::string, int64_t>>()> source);
  std::string render() const;

 private:
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
  std::map<std::pair<std::string, std::string>, Histogram> latency_;  ///< (model, route)
  std::map<std::string, Histogram> batch_size_, inference_;
  std::function<std::vector<std::pair<std::string, int64_t>>()> queue_depth_;
};

}  // namespace kd
