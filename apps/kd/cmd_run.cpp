#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <fmt/ranges.h>

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
  bool plan = false;
};

// What a run trains: "offline fmnist-student from runs/demo/teacher-s0, losses dist, 15 epochs".
std::string recipe(const RunConfig& c) {
  std::string out = fmt::format("{} {}", c.mode, c.arch);
  if (!c.arch_options.empty()) out += fmt::format(" ({})", fmt::join(c.arch_options, ", "));
  std::vector<std::string> teachers = c.distill.teachers;
  if (!c.distill.teacher.empty()) teachers.insert(teachers.begin(), c.distill.teacher);
  if (!teachers.empty()) out += fmt::format(" from {}", fmt::join(teachers, " + "));
  std::vector<std::string> losses;  // their names; config.yaml has every option
  for (const auto& l : c.distill.losses) losses.push_back(l.substr(0, l.find(':')));
  if (!losses.empty()) out += fmt::format(", losses {}", fmt::join(losses, " + "));
  out += fmt::format(", {} epoch{} on {}", c.train.epochs, c.train.epochs == 1 ? "" : "s",
                     c.data.source);
  if (c.data.labeled_fraction < 1)
    out += fmt::format(" ({:g} of the labels)", c.data.labeled_fraction);
  if (!c.qat.precision.empty()) out += fmt::format(", then --qat {}", c.qat.precision);
  return out;
}

// Two lines a run: what `kd run` would do with it and why, and what it trains; then the teachers
// it would wait for.
void print_plan(const ExperimentPlan& plan, const std::vector<PlannedRun>& actions) {
  static const char* const kNames[] = {"keep", "resume", "run", "skip"};
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    fmt::print("{:<7}{}  ({})\n", kNames[actions[i].action], plan.runs[i].out, actions[i].why);
    fmt::print("       {}\n", recipe(plan.runs[i]));
  }
  for (const auto& t : plan.missing_teachers)
    fmt::print(
        "missing teacher: {} (another experiment makes it; kd run refuses to start "
        "without it)\n",
        t);
}

void run(const RunArgs& a) {
  if (a.plan) {
    const ExperimentPlan plan = load_experiment(a.file, a.seeds, TeacherPaths::may_be_missing);
    if (dist::is_main()) print_plan(plan, plan_actions(plan, a.force, a.stages));
    return;
  }
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
  c->add_flag(
      "--plan", a->plan,
      "check the file and print what each run would do (keep, resume, run, skip), run nothing");
  c->callback([a] { run(*a); });
}

}  // namespace kd::cli
