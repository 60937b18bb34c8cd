#include <filesystem>
#include <iostream>
#include <set>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "kd/eval/compare.h"
#include "kd/runs/run.h"
#include "options.h"

namespace kd::cli {
namespace {

struct CompareArgs {
  std::vector<std::string> runs;
  bool json = false;
  std::string on = "test";
};

void run(const CompareArgs& a) {
  std::vector<nlohmann::json> summaries;
  std::vector<std::string> torchscript_teachers;
  std::set<std::filesystem::path> seen;
  for (const auto& r : runs_and_teachers(a.runs)) {
    // A run named twice (a shell glob and a path, a symbolic link) is one run, not two seeds.
    if (!seen.insert(std::filesystem::canonical(r)).second) {
      spdlog::warn("{}: given more than once; counted once", r);
      continue;
    }
    if (std::filesystem::is_regular_file(r))
      torchscript_teachers.push_back(r);
    else
      summaries.push_back(read_summary(r));
  }
  // A TorchScript teacher's row comes from the runs distilled from it; it leads, as a teacher run.
  for (auto it = torchscript_teachers.rbegin(); it != torchscript_teachers.rend(); ++it)
    summaries.insert(summaries.begin(), require_torchscript_teacher_summary(*it, summaries));
  Comparison c = compare_runs(summaries, a.on == "eval" ? ScoreOn::eval : ScoreOn::test);
  if (a.json)
    std::cout << c.to_json().dump(2) << std::endl;
  else
    std::cout << c.markdown();
}

}  // namespace

void add_compare_command(CLI::App& app) {
  auto a = std::make_shared<CompareArgs>();
  auto* c = app.add_subcommand(
      "compare",
      "table of accuracy, params, MACs and latency; share of the gap distillation closed");
  c->footer(
      "Example: kd compare runs/teacher runs/student runs/distilled\n"
      "Runs with the same name (seeds of one recipe) are pooled into mean ± std.\n"
      "Tuning: kd compare --on eval runs/sweep/* picks knobs on the eval split.");
  c->add_option(
       "runs", a->runs,
       "run directories; a TorchScript teacher (.pt) too, given with runs distilled from it")
      ->required()
      ->check(CLI::ExistingPath);
  c->add_flag("--json", a->json, "print JSON instead of a Markdown table");
  c->add_option("--on", a->on,
                "score compared: test (the result) or eval (each run's best eval-split score: tune "
                "and select recipes on it, never on test)")
      ->check(CLI::IsMember({"test", "eval"}))
      ->capture_default_str();
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
