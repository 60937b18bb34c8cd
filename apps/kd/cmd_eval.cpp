#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.h"
#include "kd/core/runtime.h"
#include "kd/distill/run.h"
#include "kd/eval/classify.h"
#include "kd/eval/profile.h"
#include "kd/models/model.h"
#include "options.h"

namespace kd::cli {
namespace {

struct EvalArgs {
  std::string run;
  std::string data;
  std::string part = "test";
  bool latency = false;
  bool json = false;
  RuntimeConfig runtime;
};

void print_report(const ClassificationReport& r, const std::vector<std::string>& names) {
  fmt::print("samples {}  loss {:.4f}  top-1 {:.2f}%  top-5 {:.2f}%\n", r.samples, r.loss,
             100 * r.top1, 100 * r.top5);
  fmt::print("\nper-class accuracy:\n");
  for (size_t c = 0; c < r.per_class.size(); ++c)
    fmt::print("  {:>3} {:<14} {:6.2f}%\n", c, c < names.size() ? names[c] : "", 100 * r.per_class[c]);
  fmt::print("\nconfusion matrix (rows: true, columns: predicted):\n");
  for (const auto& row : r.confusion) {
    for (int64_t v : row) fmt::print("{:6}", v);
    fmt::print("\n");
  }
}

void run(const EvalArgs& a) {
  torch::Device device = init_runtime({a.runtime.device, a.runtime.threads, a.runtime.seed, false});
  auto model = load_model(a.run);
  model->to(device);
  DataConfig data;
  if (!a.data.empty()) {
    data.source = a.data;
  } else {
    data = read_run_config(a.run).data;
    data.limit = 0;
    data.labeled_fraction = 1.0;  // labels and unlabeled extras only matter for training
    data.unlabeled.clear();
  }
  if (model->spec().input_shape.size() == 3) {
    data.channels = static_cast<int>(model->spec().input_shape[0]);
    data.height = static_cast<int>(model->spec().input_shape[1]);
    data.width = static_cast<int>(model->spec().input_shape[2]);
  }
  RunData d = load_run_data(data);
  const Dataset& set = a.part == "eval" ? d.eval : d.test;
  ClassificationReport r = evaluate_classifier(*model, set, 1000, device);
  nlohmann::json out = {{"run", a.run}, {"data", data.source}, {"part", a.part == "eval" ? "eval" : d.test_name},
                        {"params", model->num_parameters()}, {"macs", count_macs(*model, device)},
                        {"metrics", r.to_json(model->spec().class_names)}};
  if (a.latency) out["latency"] = measure_latency(*model, device).to_json();
  if (a.json) {
    std::cout << out.dump(2) << std::endl;
    return;
  }
  fmt::print("{} on {} ({}): params {}  MACs {}\n", a.run, data.source, out["part"].get<std::string>(),
             out["params"].get<int64_t>(), out["macs"].get<int64_t>());
  print_report(r, model->spec().class_names);
  if (a.latency)
    fmt::print("\nlatency batch 1: median {:.3f} ms  p95 {:.3f} ms; throughput batch 256: {:.0f} img/s\n",
               out["latency"]["batch1_median_ms"].get<double>(), out["latency"]["batch1_p95_ms"].get<double>(),
               out["latency"]["throughput_per_s"].get<double>());
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* c = app.add_subcommand("eval", "evaluate a run (or a TorchScript .pt) on its test data");
  c->footer("Example: kd eval runs/distilled --latency");
  c->add_option("run", a->run, "run directory or TorchScript .pt")->required();
  c->add_option("--data", a->data, "data to evaluate on (default: the run's own data source)");
  c->add_option("--part", a->part, "test (the source's test set) or eval (the held-out split)")
      ->check(CLI::IsMember({"test", "eval"}))->capture_default_str();
  c->add_flag("--latency", a->latency, "also measure batch-1 latency and batch-256 throughput");
  c->add_flag("--json", a->json, "print the report as JSON");
  add_runtime_options(*c, a->runtime);
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
