#include "kd/serve/metrics.h"

#include <algorithm>

#include <fmt/format.h>

namespace kd {
namespace {

// Label values escape backslash, double quote and newline (exposition format).
std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string labels(std::initializer_list<std::pair<const char*, std::string>> kv) {
  std::string out;
  for (const auto& [k, v] : kv)
    out += fmt::format("{}{}=\"{}\"", out.empty() ? "" : ",", k, escape_label(v));
  return out;
}

const std::vector<double> kLatencyBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const std::vector<double> kBatchBounds = {1, 2, 4, 8, 16, 32, 64, 128, 256};

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const auto i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  ++counts_[static_cast<size_t>(i)];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& lbl) const {
  const std::string sep = lbl.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, lbl, sep, bounds_[i], cumulative);
  }
  out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, lbl, sep, count_);
  out += fmt::format("{}_sum{{{}}} {}\n", name, lbl, sum_);
  out += fmt::format("{}_count{{{}}} {}\n", name, lbl, count_);
}

void Metrics::request(const std::string& model, const std::string& route, int code,
                      double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{model, route, code}];
  auto it = latency_.try_emplace({model, route}, kLatencyBounds).first;
  it->second.observe(seconds);
}

void Metrics::batch(const std::string& model, int64_t size, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  batch_size_.try_emplace(model, kBatchBounds).first->second.observe(static_cast<double>(size));
  inference_.try_emplace(model, kLatencyBounds).first->second.observe(seconds);
}

void Metrics::set_queue_depth(
    std::function<std::vector<std::pair<std::string, int64_t>>()> source) {
  std::lock_guard<std::mutex> lock(mu_);
  queue_depth_ = std::move(source);
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out += "# HELP kd_http_requests_total HTTP requests answered, by model, route and status code.\n";
  out += "# TYPE kd_http_requests_total counter\n";
  for (const auto& [key, n] : requests_) {
    const auto& [model, route, code] = key;
    out += fmt::format("kd_http_requests_total{{{}}} {}\n",
                       labels({{"model", model}, {"route", route}, {"code", std::to_string(code)}}),
                       n);
  }
  out +=
      "# HELP kd_http_errors_total HTTP requests answered with a 4xx or 5xx status, by model and "
      "code.\n";
  out += "# TYPE kd_http_errors_total counter\n";
  std::map<std::pair<std::string, int>, uint64_t> errors;
  for (const auto& [key, n] : requests_)
    if (std::get<2>(key) >= 400) errors[{std::get<0>(key), std::get<2>(key)}] += n;
  for (const auto& [key, n] : errors)
    out += fmt::format("kd_http_errors_total{{{}}} {}\n",
                       labels({{"model", key.first}, {"code", std::to_string(key.second)}}), n);
  out += "# HELP kd_http_request_duration_seconds Time from request parsed to response ready.\n";
  out += "# TYPE kd_http_request_duration_seconds histogram\n";
  for (const auto& [key, h] : latency_)
    h.render(out, "kd_http_request_duration_seconds",
             labels({{"model", key.first}, {"route", key.second}}));
  out += "# HELP kd_batch_size Inputs per batch run by a model (dynamic batching).\n";
  out += "# TYPE kd_batch_size histogram\n";
  for (const auto& [model, h] : batch_size_)
    h.render(out, "kd_batch_size", labels({{"model", model}}));
  out += "# HELP kd_inference_duration_seconds Time of one batched forward pass.\n";
  out += "# TYPE kd_inference_duration_seconds histogram\n";
  for (const auto& [model, h] : inference_)
    h.render(out, "kd_inference_duration_seconds", labels({{"model", model}}));
  if (queue_depth_) {
    out += "# HELP kd_queue_depth Requests waiting for a batch slot.\n";
    out += "# TYPE kd_queue_depth gauge\n";
    for (const auto& [model, depth] : queue_depth_())
      out += fmt::format("kd_queue_depth{{{}}} {}\n", labels({{"model", model}}), depth);
  }
  return out;
}

}  // namespace kd
