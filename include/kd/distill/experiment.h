#pragma once
/// @file
/// `kd run EXPERIMENT.yaml`: a whole experiment (teacher, student, distilled student, ...) over
/// one or more seeds, then a comparison table.
/// @code{.yaml}
///   out: runs/fmnist            # each stage writes out/<stage>-s<seed>
///   seeds: [0, 1, 2]
///   defaults: {train: {epochs: 10}, data: {source: fashion-mnist}}   # any RunConfig keys
///   stages:
///     - {name: teacher, arch: fmnist-teacher}
///     - {name: student, arch: fmnist-student}
///     - {name: distilled, mode: offline, arch: fmnist-student, distill: {teacher: teacher}}
/// @endcode
/// A distill.teacher naming an earlier stage means that stage's run with the same seed.
/// Stages whose run directory already holds a summary.json made with the same configuration are
/// kept (an interrupted experiment resumes at stage granularity) unless `force`.
#include <string>
#include <vector>

#include "kd/eval/compare.h"
#include "kd/runs/config.h"

namespace kd {

struct ExperimentPlan {
  std::string out;
  std::vector<RunConfig> runs;  ///< in execution order
  /// Teachers that are neither an earlier stage nor an existing path ("stage (seed N): PATH"):
  /// filled only under TeacherPaths::may_be_missing.
  std::vector<std::string> missing_teachers;
};

/// A teacher from another experiment must exist before a run starts (kd never runs half an
/// experiment that cannot finish); a plan to show may name it before it exists.
enum class TeacherPaths { must_exist, may_be_missing };

ExperimentPlan load_experiment(const std::string& path, const std::vector<uint64_t>& seeds_override,
                               TeacherPaths teachers = TeacherPaths::must_exist);

/// What run_experiment would do with one run, read from the disk alone.
struct PlannedRun {
  enum Action { keep, resume, run, skip };
  Action action;
  std::string why;  ///< "complete with this configuration", "configuration changed", ...
};
/// The action for each run of the plan, in order. Runs not in a non-empty `only` are skipped, or
/// kept (in the table, never redone) when complete with their configuration.
std::vector<PlannedRun> plan_actions(const ExperimentPlan& plan, bool force,
                                     const std::vector<std::string>& only = {});
/// Runs the plan (only the stages named in `only`, when it is not empty: the table then also
/// holds the other stages that are complete with their configuration); writes out/compare.md and
/// out/compare.json atomically and returns the table. An unknown name in `only` is a UsageError
/// listing the stages.
Comparison run_experiment(const ExperimentPlan& plan, bool force,
                          const std::vector<std::string>& only = {});

}  // namespace kd
