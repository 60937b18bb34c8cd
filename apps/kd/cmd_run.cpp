#include <iostream>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "kd/core/distributed.h"
#include "kd/distill/experiment.h"

namespace kd::cli {
namespace {

struct RunArgs {
  std::string file;
  std::vector<uint64_t> seeds;
  std::vector<std::string> stages;
  bool force = false;
};

void run(const RunArgs& a) {
  ExperimentPlan plan = load_experiment(a.file, a.seeds);
  Comparison c = run_experiment(plan, a.force, a.stages);
  if (dist::is_main()) std::cout << c.markdown();
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  auto* c = app.add_subcommand("run", "run a whole experiment described in one YAML file");
  c->footer(
      "Example: kd run experiments/fmnist.yaml --seeds 0,1,2\n"
      "See experiments/fmnist.yaml for the format.");
  c->add_option("experiment", a->file, "experiment YAML")->required();
  c->add_option("--seeds", a->seeds, "override the file's seeds")->delimiter(',');
  c->add_option("--stages", a->stages,
                "run only these stages (comma-separated); the table also holds the other stages "
                "already complete")
      ->delimiter(',');
  c->add_flag("--force", a->force, "redo stages that already completed");
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
