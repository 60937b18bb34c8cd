#pragma once
// summary.json, written last: its presence marks a run complete (kd/runs/run.h reads it).
#include <string>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "kd/distill/trainer.h"
#include "kd/models/model.h"
#include "kd/models/quantize.h"
#include "kd/runs/config.h"

namespace kd {

// What every run's summary holds, whatever its task: the run (name, task, mode, seed, epochs),
// the best model (arch, options, params, MACs), the training (best epoch and its score under
// `score_name`, seconds, img/s, ranks), the teacher, the date and the device.
nlohmann::json run_summary(const RunConfig& cfg, const std::string& task, Model& best,
                           const TrainResult& result, const std::string& score_name,
                           torch::Device device);

// Adds the latency when the config asks for it and writes summary.json into cfg.out atomically.
void write_summary(const RunConfig& cfg, nlohmann::json& summary, Model& best,
                   torch::Device device);

// An INT8 model's recorded ops as summary.json's "ops": {"int8": {op: calls}, "fp32": {...}}.
nlohmann::json ops_summary(const QuantizedOps& ops);

}  // namespace kd
