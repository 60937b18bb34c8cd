#pragma once
/// @file
/// `kd quantize`: a finished run's model as an INT8 run directory of its own, beside it: the
/// source's config.yaml (its data and split), model.json (precision int8, how it was quantized)
/// and model.pt (the quantized TorchScript module), and summary.json with the test metrics on the
/// same test part, params, MACs, latency and the source's own score for comparison.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "kd/models/quantize.h"

namespace kd {

struct QuantizeRunOptions {
  std::string source;          ///< a complete run directory
  std::string out;             ///< empty: SOURCE-int8
  int64_t calibration = 1024;  ///< training images the activation ranges are taken from
  QuantizeOptions quant;
  bool measure_latency = true;
  uint64_t seed = 0;  ///< which training images calibrate
};

/// Writes the INT8 run and returns its summary. kd::Error when the source is not a complete fp32
/// run or OUT already exists (nothing of the user's is replaced).
nlohmann::json quantize_run(const QuantizeRunOptions& options);

}  // namespace kd
