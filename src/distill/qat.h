#pragma once
// Quantization-aware training after a run's fp32 epochs (`--qat int8`), for classifiers and
// detectors alike: the run's best fp32 model (kept in OUT/fp32) is fine-tuned with fake
// quantization under the run's own objective, the activation ranges frozen for the last epochs,
// then converted; OUT/model.pt becomes the INT8 model. The quantization-aware epochs leave their
// own records in OUT/qat (and OUT/qat-frozen).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "kd/models/model.h"
#include "kd/runs/config.h"

namespace kd {

// Trains `qat` for q.epochs into `dir` (a run directory of its own), as the run's fp32 epochs
// were trained; returns the training seconds.
using QatPhase =
    std::function<double(Model& qat, const TrainConfig& q, uint64_t seed, const std::string& dir)>;

// Before any epoch: fails (naming them) when the student has ops without an INT8 kernel and
// cfg.qat does not allow them in fp32, rather than after the training.
void check_quantizable(const RunConfig& cfg, Model& student);

// The quantization-aware epochs and the conversion; summary gains "qat" and "ops". `fp32_test`
// scores the fp32 model on the test set, for summary["fp32_test"]; `eval_score` a model on the
// eval split (the task's score: top-1, mAP). The converted model must score within
// kMaxInt8Drop of the fake-quantized one it came from, or the run fails naming both (a
// conversion that lost what training simulated, which once gave 10 % top-1 and exit 0).
// Returns the INT8 model.
constexpr double kMaxInt8Drop = 0.03;
std::unique_ptr<Model> train_quantization_aware(
    const RunConfig& cfg, bool resume, const std::function<nlohmann::json(Model&)>& fp32_test,
    const std::function<double(Model&)>& eval_score, const QatPhase& phase,
    nlohmann::json& summary);

}  // namespace kd
