#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/core/runtime.h"
#include "kd/distill/quantize_run.h"
#include "options.h"

namespace kd::cli {
namespace {

struct QuantizeArgs {
  QuantizeRunOptions run;
  std::string observer = "minmax";
  RuntimeConfig runtime{"cpu", 0};
};

void run(QuantizeArgs& a) {
  a.run.quant.observer = parse_observer(a.observer);
  init_runtime({a.runtime.device, a.runtime.threads, a.runtime.seed, false, "fp32"});
  auto s = quantize_run(a.run);
  const auto& t = s["test"];
  const auto& src = s["source_test"];
  const bool det = s["task"] == "detect";
  const char* metric = det ? "mAP" : "top1";
  auto score = [&](const nlohmann::json& m) {
    return m.is_object() ? m.value(det ? "map" : "top1", 0.0) : 0.0;
  };
  fmt::print("{} -> {}: {} {:.2f}% (fp32 {:.2f}%), model.pt {:.0f} kB (fp32 {:.0f} kB)\n",
             a.run.source, s["name"].get<std::string>(), metric, 100 * score(t), 100 * score(src),
             s["model_bytes"].get<double>() / 1e3, s["source_model_bytes"].get<double>() / 1e3);
  if (s.contains("latency"))
    fmt::print(
        "batch-256 throughput {:.0f} img/s (fp32 {:.0f}), batch-1 median {:.3f} ms (fp32 "
        "{:.3f})\n",
        s["latency"]["throughput_per_s"].get<double>(),
        s["source_latency"]["throughput_per_s"].get<double>(),
        s["latency"]["batch1_median_ms"].get<double>(),
        s["source_latency"]["batch1_median_ms"].get<double>());
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  auto* c = app.add_subcommand(
      "quantize",
      "post-training static INT8 of a finished run on the oneDNN engine, as a new run directory");
  c->footer(
      "Example: kd quantize runs/fmnist/distilled-s0            (writes "
      "runs/fmnist/distilled-s0-int8)\n"
      "         kd quantize runs/fmnist/teacher-s0 --calibration 2048 --observer percentile\n"
      "The INT8 run works wherever a run does: kd eval, compare, report, serve, predict, export.");
  c->add_option("run", a->run.source, "a finished run directory")->required();
  c->add_option("--out,-o", a->run.out,
                "the INT8 run directory (default RUN-int8; must not exist)");
  c->add_option("--calibration", a->run.calibration,
                "training images (seeded sample) the activation ranges are taken from")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  c->add_option("--observer", a->observer,
                "activation ranges: minmax, or percentile (each batch's 0.01 % tails clipped)")
      ->check(CLI::IsMember({"minmax", "percentile"}))
      ->capture_default_str();
  c->add_flag("--allow-fp32-layers", a->run.quant.allow_fp32_layers,
              "keep ops without an INT8 kernel in fp32 instead of refusing the model");
  c->add_flag("!--no-latency", a->run.measure_latency, "skip the latency measurement");
  c->add_option("--threads", a->runtime.threads, "intra-op threads (0: one per core)");
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
