#include "summary.h"

#include "kd/core/distributed.h"
#include "kd/core/fs.h"
#include "kd/eval/profile.h"
#include "kd/runs/run.h"

namespace kd {

nlohmann::json run_summary(const RunConfig& cfg, const std::string& task, Model& best,
                           const TrainResult& result, const std::string& score_name,
                           torch::Device device) {
  nlohmann::json s = {{"name", cfg.name.empty() ? fs::path(cfg.out).filename().string() : cfg.name},
                      {"task", task},
                      {"mode", cfg.mode},
                      {"seed", cfg.runtime.seed},
                      {"epochs", cfg.train.epochs},
                      {"arch", best.spec().arch},
                      {"options", best.spec().options},
                      {"params", best.num_parameters()},
                      {"macs", count_macs(best, device)},
                      {"best_epoch", result.best_epoch},
                      {score_name, result.best_score},
                      {"train_seconds", result.train_seconds},
                      {"train_images_per_s", result.train_images_per_s},
                      {"ranks", dist::world_size()},
                      {"finished", utc_timestamp()},
                      {"device", device.str()},
                      {"precision", best.spec().precision}};
  if (!best.spec().quantization.empty()) s["quantization"] = best.spec().quantization;
  if (!cfg.distill.teacher.empty()) {
    s["teacher"] = cfg.distill.teacher;
    s["teacher_name"] = teacher_name(cfg.distill.teacher);
  }
  if (!cfg.distill.teachers.empty()) s["teachers"] = cfg.distill.teachers;
  return s;
}

void write_summary(const RunConfig& cfg, nlohmann::json& summary, Model& best,
                   torch::Device device) {
  if (cfg.measure_latency) summary["latency"] = measure_latency(best, device).to_json();
  write_text_atomically(fs::path(cfg.out) / "summary.json", summary.dump(2) + "\n");
}

nlohmann::json ops_summary(const QuantizedOps& ops) {
  nlohmann::json int8 = nlohmann::json::object(), fp32 = nlohmann::json::object();
  for (const auto& [name, n] : ops.int8) int8[name] = n;
  for (const auto& [name, n] : ops.fp32) fp32[name] = n;
  return {{"int8", int8}, {"fp32", fp32}};
}

}  // namespace kd
