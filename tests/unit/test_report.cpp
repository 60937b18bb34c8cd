// kd report's data gathering: roles, the gap closed, incomplete runs, run discovery, and the
// page keeping hostile names inside its JSON.
#include <fstream>

#include <gtest/gtest.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/report/report.h"
#include "kd/runs/config.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

// A finished (or, without a score, unfinished) classification run directory.
void make_run(const fs::path& dir, const std::string& name, const std::string& mode, double score,
              const std::string& teacher = "", uint64_t seed = 0) {
  fs::create_directories(dir);
  kd::RunConfig cfg;
  cfg.name = name;
  cfg.runtime.seed = seed;
  cfg.mode = kd::parse_kind<kd::Mode>(mode, "test");
  cfg.out = dir.string();
  std::ofstream(dir / "config.yaml") << kd::to_yaml(cfg);
  std::ofstream(dir / "metrics.jsonl") << R"({"epoch":1,"train_loss":1.5,"eval_top1":0.5})"
                                       << "\n"
                                       << R"({"epoch":2,"train_loss":1.0,"eval_top1":0.6})"
                                       << "\n{\"epoch\":3,";
  if (score < 0) return;
  nlohmann::json s = {{"name", name},
                      {"task", "classify"},
                      {"mode", mode},
                      {"arch", "fmnist-student"},
                      {"params", 100},
                      {"macs", 1000},
                      {"finished", "2026-11-28T00:00:00Z"},
                      {"test",
                       {{"top1", score},
                        {"per_class", {{"a", score}, {"b", score}}},
                        {"confusion", {{5, 1}, {2, 4}}}}}};
  if (!teacher.empty()) s.update({{"teacher", teacher}, {"teacher_name", "teacher"}});
  std::ofstream(dir / "summary.json") << s.dump();
}

TEST(Report, RolesGapAndIncompleteRuns) {
  TempDir d;
  make_run(d.path / "t", "teacher", "train", 0.9);
  make_run(d.path / "s", "student", "train", 0.8);
  make_run(d.path / "k", "distilled", "offline", 0.85, (d.path / "t").string());
  make_run(d.path / "x", "broken", "offline", -1);
  auto r = kd::collect_report({d / "t", d / "s", d / "k", d / "x"}, {});
  const auto& runs = r["runs"];
  EXPECT_EQ(runs[0]["role"], "teacher");
  EXPECT_EQ(runs[1]["role"], "student");
  EXPECT_EQ(runs[2]["role"], "distilled");
  EXPECT_FALSE(runs[3]["complete"].get<bool>());
  EXPECT_NE(runs[3]["state"].get<std::string>().find("incomplete: no summary.json (2 epoch(s)"),
            std::string::npos);
  EXPECT_EQ(runs[0]["history"].size(), 2u);  // the torn third line is dropped
  ASSERT_EQ(r["gap_closed"].size(), 1u);
  EXPECT_NEAR(r["gap_closed"][0]["gap_closed"].get<double>(), 0.5,
              1e-9);  // (0.85 - 0.8) / (0.9 - 0.8)
  std::ofstream(d.path / "x" / "error.txt") << "loss is NaN";
  EXPECT_EQ(kd::collect_run(d / "x", {})["state"], "failed: loss is NaN");
  EXPECT_KD_ERROR(kd::collect_report({d / "nowhere"}, {}), "no such run directory");
}

TEST(Report, SeedsOfOneRecipeAreLabelledBySeedAndOtherwiseByPath) {
  TempDir d;
  make_run(d.path / "a" / "distilled-s0", "distilled", "offline", 0.85, "", 0);
  make_run(d.path / "a" / "distilled-s1", "distilled", "offline", 0.86, "", 1);
  make_run(d.path / "b" / "distilled-s1", "distilled", "offline", 0.84, "", 1);
  make_run(d.path / "a" / "teacher", "teacher", "train", 0.9);
  auto at = [&](const char* a, const char* b) { return (d.path / a / b).string(); };
  const auto runs = kd::collect_report({at("a", "distilled-s0"), at("a", "distilled-s1"),
                                        at("b", "distilled-s1"), at("a", "teacher")},
                                       {})["runs"];
  EXPECT_EQ(runs[0]["label"], "distilled (seed 0)");
  EXPECT_EQ(runs[1]["label"], (d.path / "a" / "distilled-s1").string());  // seed 1 twice
  EXPECT_EQ(runs[2]["label"], (d.path / "b" / "distilled-s1").string());
  EXPECT_EQ(runs[3]["label"], "teacher");   // a name of its own stays as it is
  EXPECT_EQ(runs[1]["name"], "distilled");  // kd compare's groups keep the recipe's name
}

TEST(Report, PageKeepsNamesInsideItsData) {
  TempDir d;
  make_run(d.path / "t", "</script><script>alert(1)</script>", "train", 0.9);
  const std::string page = kd::render_report(kd::collect_report({d / "t"}, {}));
  EXPECT_EQ(page.find("<script>alert(1)"), std::string::npos);
  EXPECT_NE(page.find("\\u003c/script>\\u003cscript>alert(1)"), std::string::npos);
  EXPECT_NE(page.find("Chart.js v3"), std::string::npos);
}

TEST(Report, FindsRunDirectoriesButNotTheirInsides) {
  TempDir d;
  make_run(d.path / "a" / "t", "t", "train", 0.9);
  make_run(d.path / "b", "b", "train", 0.9);
  fs::create_directories(d.path / "b" / "generations" / "gen-1");
  std::ofstream(d.path / "b" / "generations" / "gen-1" / "config.yaml") << "x";
  fs::create_directories(d.path / "data");
  auto found = kd::find_run_dirs(d.path.string());
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(fs::path(found[0]).filename(), "t");
  EXPECT_EQ(fs::path(found[1]).filename(), "b");
}

}  // namespace
