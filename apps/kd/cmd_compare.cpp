#include <iostream>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "kd/distill/run.h"
#include "kd/eval/compare.h"

namespace kd::cli {
namespace {

struct CompareArgs {
  std::vector<std::string> runs;
  bool json = false;
};

void run(const CompareArgs& a) {
  std::vector<nlohmann::json> summaries;
  for (const auto& r : a.runs) summaries.push_back(read_summary(r));
  Comparison c = compare_runs(summaries);
  if (a.json)
    std::cout << c.to_json().dump(2) << std::endl;
  else
    std::cout << c.markdown();
}

}  // namespace

void add_compare_command(CLI::App& app) {
  auto a = std::make_shared<CompareArgs>();
  auto* c = app.add_subcommand(
      "compare", "table of accuracy, params, MACs and latency; share of the gap distillation closed");
  c->footer("Example: kd compare runs/teacher runs/student runs/distilled\n"
            "Runs with the same name (seeds of one recipe) are pooled into mean ± std.");
  c->add_option("runs", a->runs, "run directories")->required()->check(CLI::ExistingDirectory);
  c->add_flag("--json", a->json, "print JSON instead of a Markdown table");
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
