#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/report/report.h"
#include "kd/runs/run_dir.h"
#include "options.h"

namespace kd::cli {
namespace {

struct ReportArgs {
  std::vector<std::string> runs;
  std::string out = "report.html";
  ReportOptions opts;
};

void run(const ReportArgs& a) {
  check_output_file(a.out, "-o");
  const std::vector<std::string> runs = runs_and_teachers(a.runs);
  if (runs.empty()) usage_fail("no run directories among the {} paths given", a.runs.size());
  auto report = collect_report(runs, a.opts);
  write_text_atomically(a.out, render_report(report));
  for (const auto& r : report["runs"])
    if (!r["complete"].get<bool>())
      spdlog::warn("{}: {}", r["path"].get<std::string>(), r["state"].get<std::string>());
  std::cout << a.out << std::endl;
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  auto* c = app.add_subcommand(
      "report",
      "one self-contained HTML report comparing runs: curves, trade-offs, per-class results");
  c->footer(
      "Example: kd report runs/fmnist/teacher-s0 runs/fmnist/student-s0 runs/fmnist/distilled-s0 "
      "-o report.html");
  c->add_option(
       "runs", a->runs,
       "run directories; a TorchScript teacher (.pt) too, given with runs distilled from it")
      ->required();
  c->add_option("-o,--out", a->out, "the HTML file to write")->capture_default_str();
  c->add_option("--samples", a->opts.samples, "detectors: test images shown with their boxes")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  c->add_option("--score", a->opts.score_threshold, "detectors: lowest score drawn on the samples")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
