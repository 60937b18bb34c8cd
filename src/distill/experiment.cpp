#include "kd/distill/experiment.h"

#include <algorithm>
#include <cctype>
#include <set>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include "kd/core/distributed.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/distill/run.h"
#include "kd/runs/run.h"

namespace kd {

namespace {

// A stage name becomes a folder name under `out`: no separators, no "..", nothing hidden.
void check_stage_name(const std::string& name, const std::string& where) {
  const bool ok =
      name.size() <= 100 && std::isalnum(static_cast<unsigned char>(name[0])) &&
      std::all_of(name.begin(), name.end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.';
      });
  KD_CHECK(ok,
           "{}: stage name '{}' must start with a letter or digit and hold only letters, digits, "
           "'-', '_', '.'",
           where, name.substr(0, 100));
}

// compare.md and compare.json are rewritten after every experiment; a compare.md that kd did
// not write (no compare.json of kd's beside it) is the user's and is never overwritten.
void check_comparison_is_ours(const std::string& out) {
  const fs::path md = fs::path(out) / "compare.md", js = fs::path(out) / "compare.json";
  if (!fs::exists(md) && !fs::exists(js)) return;
  bool ours = false;
  try {
    ours = fs::is_regular_file(js) && nlohmann::json::parse(read_text(js)).contains("rows");
  } catch (const std::exception&) {
  }
  KD_CHECK(ours && (!fs::exists(md) || fs::is_regular_file(md)),
           "{}: holds a compare.md or compare.json that kd did not write; not overwriting it (move "
           "it away)",
           out);
}

}  // namespace

ExperimentPlan load_experiment(const std::string& path, const std::vector<uint64_t>& seeds_override,
                               TeacherPaths teachers) {
  KD_CHECK(fs::is_regular_file(path), "{}: no such experiment file", path);
  YAML::Node doc;
  try {
    const auto docs = YAML::LoadAllFromFile(path);
    KD_CHECK(docs.size() <= 1,
             "{}: holds {} YAML documents (separated by ---); an experiment is one document", path,
             docs.size());
    if (!docs.empty()) doc = docs[0];
  } catch (const YAML::Exception& e) {
    fail("{}: {}", path, e.what());
  }
  KD_CHECK(doc.IsMap(), "{}: expected a mapping with out, seeds, defaults, stages", path);
  std::set<std::string> keys;
  for (const auto& kv : doc) {
    const auto key = kv.first.as<std::string>();
    if (key != "out" && key != "seeds" && key != "defaults" && key != "stages")
      fail("{}: unknown key '{}' (expected out, seeds, defaults, stages)", path, key);
    if (!keys.insert(key).second) fail("{}: key '{}' appears twice", path, key);
  }
  ExperimentPlan plan;
  KD_CHECK(doc["out"] && doc["out"].IsScalar(), "{}: missing 'out' (the experiment's folder)",
           path);
  plan.out = doc["out"].as<std::string>();
  std::vector<uint64_t> seeds = {0};
  try {
    if (doc["seeds"]) seeds = doc["seeds"].as<std::vector<uint64_t>>();
  } catch (const YAML::Exception&) {
    fail("{}: seeds must be a list of non-negative integers", path);
  }
  if (!seeds_override.empty()) seeds = seeds_override;
  KD_CHECK(!seeds.empty(), "{}: seeds must not be empty", path);
  for (uint64_t s : seeds)
    KD_CHECK(s <= kMaxSeed, "{}: seed {} is too large: seeds must be below 2^32 = 4294967296", path,
             s);
  for (size_t i = 0; i < seeds.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      KD_CHECK(seeds[i] != seeds[j], "{}: seed {} is listed twice", path, seeds[i]);
  KD_CHECK(doc["stages"] && doc["stages"].IsSequence() && doc["stages"].size() > 0,
           "{}: 'stages' must be a non-empty list", path);
  std::set<std::string> names;
  for (uint64_t seed : seeds) {
    for (size_t i = 0; i < doc["stages"].size(); ++i) {
      const std::string where = fmt::format("{}: stages[{}]", path, i);
      RunConfig cfg;
      apply_yaml(cfg, doc["defaults"], path + ": defaults");
      apply_yaml(cfg, doc["stages"][i], where);
      KD_CHECK(!cfg.name.empty(), "{}: every stage needs a name", where);
      check_stage_name(cfg.name, where);
      KD_CHECK(!names.count(cfg.name),
               "{}: stage name '{}' is used twice (each stage writes {}-s<seed>)", where, cfg.name,
               cfg.name);
      cfg.runtime.seed = seed;
      cfg.out = (fs::path(plan.out) / fmt::format("{}-s{}", cfg.name, seed)).string();
      // A teacher is an earlier stage (same seed) or an existing path, where "{seed}" stands
      // for the seed (a teacher from another experiment).
      auto resolve = [&](std::string& teacher) {
        for (size_t at; (at = teacher.find("{seed}")) != std::string::npos;)
          teacher.replace(at, 6, std::to_string(seed));
        if (names.count(teacher))
          teacher = (fs::path(plan.out) / fmt::format("{}-s{}", teacher, seed)).string();
        else if (teachers == TeacherPaths::may_be_missing && !fs::exists(teacher))
          plan.missing_teachers.push_back(fmt::format("{} (seed {}): {}", cfg.name, seed, teacher));
        else
          KD_CHECK(fs::exists(teacher),
                   "{}: teacher '{}' is neither an earlier stage nor an existing path", where,
                   teacher);
      };
      if (!cfg.distill.teacher.empty()) resolve(cfg.distill.teacher);
      for (auto& t : cfg.distill.teachers) resolve(t);
      resolve_task(cfg);
      validate(cfg);
      names.insert(cfg.name);
      plan.runs.push_back(cfg);
    }
    names.clear();  // a later seed's teachers are its own earlier stages
  }
  check_comparison_is_ours(plan.out);
  return plan;
}

std::vector<PlannedRun> plan_actions(const ExperimentPlan& plan, bool force,
                                     const std::vector<std::string>& only) {
  std::set<std::string> stages, selected(only.begin(), only.end());
  for (const auto& cfg : plan.runs) stages.insert(cfg.name);
  for (const auto& name : selected)
    if (!stages.count(name))
      usage_fail("--stages: the experiment has no stage '{}' (stages: {})", name,
                 fmt::join(stages, ", "));
  std::vector<PlannedRun> actions;
  for (const auto& cfg : plan.runs) {
    const bool complete = fs::exists(fs::path(cfg.out) / "summary.json");
    // A finished stage is kept only if it ran with exactly this configuration.
    const bool same = complete && to_yaml(read_run_config(cfg.out)) == to_yaml(cfg);
    // An interrupted stage with this configuration continues from its last checkpoint.
    const bool interrupted = !complete && fs::exists(fs::path(cfg.out) / "config.yaml") &&
                             fs::exists(fs::path(cfg.out) / "checkpoints") &&
                             to_yaml(read_run_config(cfg.out)) == to_yaml(cfg);
    if (!selected.empty() && !selected.count(cfg.name))
      actions.push_back(
          same ? PlannedRun{PlannedRun::keep, "not in --stages; complete, in the table"}
               : PlannedRun{PlannedRun::skip, "not in --stages"});
    else if (same)
      actions.push_back(force ? PlannedRun{PlannedRun::run, "complete, redone (--force)"}
                              : PlannedRun{PlannedRun::keep, "complete with this configuration"});
    else if (interrupted && !force)
      actions.push_back({PlannedRun::resume, "interrupted, from its last checkpoint"});
    else if (complete)
      actions.push_back({PlannedRun::run, "configuration changed"});
    else if (fs::exists(cfg.out))
      actions.push_back({PlannedRun::run, "incomplete, started over"});
    else
      actions.push_back({PlannedRun::run, "new"});
  }
  return actions;
}

Comparison run_experiment(const ExperimentPlan& plan, bool force,
                          const std::vector<std::string>& only) {
  const std::vector<PlannedRun> actions = plan_actions(plan, force, only);
  const std::set<std::string> selected(only.begin(), only.end());
  std::vector<nlohmann::json> summaries;
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    const RunConfig& cfg = plan.runs[i];
    auto action = actions[i].action;
    // A stage left out by --stages is only read, by each rank from its own disk: no collective.
    if (!selected.empty() && !selected.count(cfg.name)) {
      if (action == PlannedRun::keep) summaries.push_back(read_summary(cfg.out));
      continue;
    }
    // Under data parallelism rank 0's reading of the disk decides for every rank.
    if (dist::active())
      action = static_cast<PlannedRun::Action>(
          dist::sum({dist::is_main() ? static_cast<double>(action) : 0.0})[0]);
    if (action == PlannedRun::keep) {
      spdlog::info("{}: {}, kept", cfg.out, actions[i].why);
    } else {
      try {
        if (action == PlannedRun::resume) {
          spdlog::info("{}: interrupted, resuming", cfg.out);
          execute_run(cfg, /*overwrite=*/false, /*resume=*/true);
        } else {
          spdlog::info("{}: {}, running it", cfg.out, actions[i].why);
          execute_run(cfg, /*overwrite=*/true);
        }
      } catch (const Interrupted&) {
        throw;
      } catch (const UsageError& e) {
        usage_fail("stage {} (seed {}): {}", cfg.name, cfg.runtime.seed, e.what());
      } catch (const Error& e) {
        fail("stage {} (seed {}): {}", cfg.name, cfg.runtime.seed, e.what());
      }
    }
    summaries.push_back(read_summary(cfg.out));
  }
  // A TorchScript teacher from outside the experiment is a row too (the gap needs it), scored by
  // the runs distilled from it.
  std::vector<std::string> files;
  for (const auto& cfg : plan.runs)
    if (!cfg.distill.teacher.empty() && fs::is_regular_file(cfg.distill.teacher) &&
        std::find(files.begin(), files.end(), cfg.distill.teacher) == files.end())
      files.push_back(cfg.distill.teacher);
  std::vector<nlohmann::json> teachers;
  for (const auto& pt : files)
    if (auto t = torchscript_teacher_summary(pt, summaries)) teachers.push_back(*t);
  summaries.insert(summaries.begin(), teachers.begin(), teachers.end());
  Comparison c = compare_runs(summaries);
  if (dist::is_main()) {
    write_text_atomically(fs::path(plan.out) / "compare.md", c.markdown());
    write_text_atomically(fs::path(plan.out) / "compare.json", c.to_json().dump(2) + "\n");
  }
  return c;
}

}  // namespace kd
