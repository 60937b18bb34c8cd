#pragma once
/// @file
/// Cost of a model: parameters, multiply-accumulates per image, latency and throughput.
#include <cstdint>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "kd/models/macs.h"
#include "kd/models/model.h"

namespace kd {

struct LatencyOptions {
  int warmup = 10;
  int iterations = 200;  ///< batch-1 timings
  int64_t throughput_batch = 256;
  int throughput_iterations = 10;
};

struct LatencyReport {
  double batch1_median_ms = 0.0;
  double batch1_p95_ms = 0.0;
  double throughput_per_s = 0.0;  ///< images/s at throughput_batch
  int64_t throughput_batch = 0;
  nlohmann::json to_json() const;
};

LatencyReport measure_latency(Model& model, torch::Device device, const LatencyOptions& opts = {});

}  // namespace kd
