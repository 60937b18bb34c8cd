#include "kd/eval/compare.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <fmt/format.h>

#include "kd/core/error.h"

namespace kd {

Stat stat_of(const std::vector<double>& v) {
  Stat s;
  s.n = static_cast<int>(v.size());
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - s.mean) * (x - s.mean);
    s.std = std::sqrt(ss / static_cast<double>(v.size() - 1));
  }
  return s;
}

void to_json(nlohmann::json& j, const Stat& s) {
  j = {{"mean", s.mean}, {"std", s.std}, {"n", s.n}};
}

namespace {

// What a run was tested on: the test set's name, its images and its class names. Older summaries
// without a field leave it out of the comparison.
std::string tested_on(const nlohmann::json& s) {
  std::string out = s.value("test_set", "");
  const auto t = s.value("test", nlohmann::json::object());
  if (t.contains("samples")) out += fmt::format(", {} images", t["samples"].dump());
  if (t.contains("images")) out += fmt::format(", {} images", t["images"].dump());
  std::vector<std::string> classes;
  if (t.contains("per_class") && t["per_class"].is_object())
    for (const auto& [name, v] : t["per_class"].items()) classes.push_back(name);
  if (t.contains("per_class") && t["per_class"].is_array())
    for (const auto& c : t["per_class"]) classes.push_back(c.value("name", ""));
  if (!classes.empty()) out += fmt::format(", {} classes", classes.size());
  std::sort(classes.begin(), classes.end());
  for (const auto& c : classes) out += "\x1f" + c;  // the names compared, not printed
  return out;
}

std::string printable(const std::string& on) { return on.substr(0, on.find('\x1f')); }

}  // namespace

Comparison compare_runs(const std::vector<nlohmann::json>& summaries, ScoreOn on) {
  struct Group {
    CompareRow row;
    std::vector<double> top1, score50, params, macs, lat, thr;
    std::map<uint64_t, double> top1_by_seed;
    std::set<std::string> tested_on;
  };
  // Born-again runs carry every generation's test accuracy: each earlier generation becomes a
  // row of its own ("ban gen 1"), the run itself being the last generation.
  std::vector<nlohmann::json> expanded;
  for (const auto& s : summaries) {
    if (s.contains("generations") && s["generations"].size() > 1) {
      const auto& gens = s["generations"];
      for (size_t g = 0; g + 1 < gens.size(); ++g) {
        nlohmann::json row = {{"name", fmt::format("{} gen {}", s.value("name", ""), g + 1)},
                              {"mode", g == 0 ? Mode::train : s.value("mode", Mode::train)},
                              {"arch", s.value("arch", "")},
                              {"seed", s.value("seed", uint64_t{0})},
                              {"params", s.value("params", 0.0)},
                              {"macs", s.value("macs", 0.0)},
                              {"test", {{"top1", gens[g].value("test_top1", 0.0)}}}};
        if (gens[g].contains("best_eval_top1")) row["best_eval_top1"] = gens[g]["best_eval_top1"];
        // Tested as the run itself was.
        row["test_set"] = s.value("test_set", "");
        for (const char* k : {"samples", "images", "per_class"})
          if (s.contains("test") && s["test"].contains(k)) row["test"][k] = s["test"][k];
        expanded.push_back(row);
      }
    }
    expanded.push_back(s);
  }
  std::vector<std::string> order;
  std::map<std::string, Group> groups;
  for (size_t i = 0; i < expanded.size(); ++i) {
    const auto& s = expanded[i];
    const std::string name = s.value("name", "run" + std::to_string(i));
    if (!groups.count(name)) {
      order.push_back(name);
      groups[name].row = {name,
                          s.value("mode", Mode::train),
                          s.value("arch", ""),
                          s.value("teacher_name", ""),
                          s.value("task", Task::classify),
                          s.value("precision", "fp32"),
                          {},
                          {},
                          {},
                          {},
                          {},
                          {}};
    }
    Group& g = groups[name];
    const bool detect = s.value("task", Task::classify) == Task::detect;
    double top1 = 0.0;
    if (on == ScoreOn::test) {
      top1 = detect ? s["test"].value("map", 0.0) : s["test"].value("top1", 0.0);
      if (detect) g.score50.push_back(s["test"].value("map50", 0.0));
    } else {
      const char* key = detect ? "best_eval_map" : "best_eval_top1";
      KD_CHECK(s.contains(key) && s[key].is_number(),
               "run '{}' (seed {}) has no eval-split score ({} in its summary)", name,
               s.value("seed", uint64_t{0}), key);
      top1 = s[key].get<double>();
    }
    g.tested_on.insert(tested_on(s));
    g.top1.push_back(top1);
    g.top1_by_seed[s.value("seed", uint64_t{0})] = top1;
    g.params.push_back(s.value("params", 0.0));
    g.macs.push_back(s.value("macs", 0.0));
    if (s.contains("latency")) {
      g.lat.push_back(s["latency"].value("batch1_median_ms", 0.0));
      g.thr.push_back(s["latency"].value("throughput_per_s", 0.0));
    }
  }
  Comparison c;
  c.on = on;
  for (const auto& name : order) {
    Group& g = groups[name];
    g.row.score = stat_of(g.top1);
    g.row.score50 = stat_of(g.score50);
    g.row.params = stat_of(g.params);
    g.row.macs = stat_of(g.macs);
    g.row.latency_ms = stat_of(g.lat);
    g.row.throughput = stat_of(g.thr);
    c.rows.push_back(g.row);
  }
  // "teacher on fashion-mnist test, 50 images, 10 classes; ..." when the groups named were
  // tested on more than one set; empty when on one.
  auto mixed_test_sets = [&](const std::vector<std::pair<std::string, const Group*>>& named) {
    std::set<std::string> sets;
    for (const auto& [label, g] : named) sets.insert(g->tested_on.begin(), g->tested_on.end());
    std::string which;
    if (sets.size() > 1)
      for (const auto& [label, g] : named)
        for (const auto& on : g->tested_on)
          which += fmt::format("{}{} on {}", which.empty() ? "" : "; ", label, printable(on));
    return which;
  };
  std::vector<std::pair<std::string, const Group*>> all;
  for (const auto& name : order) all.emplace_back(name, &groups[name]);
  if (const std::string which = mixed_test_sets(all); !which.empty())
    c.notes.push_back("these runs were not all tested on the same images and classes: " + which);
  for (const auto& name : order) {
    const Group& d = groups[name];
    if (d.row.mode == Mode::train || d.row.teacher.empty() || !groups.count(d.row.teacher))
      continue;
    const Group* student = nullptr;
    // (Not the teacher's own group: a teacher may share the student's registry architecture at
    // another width.)
    for (const auto& other : order)
      if (other != d.row.teacher && groups[other].row.mode == Mode::train &&
          groups[other].row.arch == d.row.arch && groups[other].row.precision == "fp32")
        student = &groups[other];
    if (!student) continue;
    const Group& t = groups[d.row.teacher];
    if (const std::string which =
            mixed_test_sets({{"teacher", &t}, {"student", student}, {name, &d}});
        !which.empty()) {
      c.notes.push_back(fmt::format(
          "{}: gap not computed: its teacher, student and itself were not tested on the same "
          "images and classes ({})",
          name, which));
      continue;
    }
    // Gap closed per seed when every group has that seed (paired), else on the means. A
    // teacher group of one run taught every seed (one teacher, several student seeds).
    std::vector<double> gaps;
    for (const auto& [seed, dv] : d.top1_by_seed) {
      auto si = student->top1_by_seed.find(seed);
      auto ti = t.top1_by_seed.size() == 1 ? t.top1_by_seed.begin() : t.top1_by_seed.find(seed);
      if (si == student->top1_by_seed.end() || ti == t.top1_by_seed.end()) continue;
      if (std::abs(ti->second - si->second) > 1e-12)
        gaps.push_back((dv - si->second) / (ti->second - si->second));
    }
    if (gaps.empty() && std::abs(t.row.score.mean - student->row.score.mean) > 1e-12)
      gaps.push_back((d.row.score.mean - student->row.score.mean) /
                     (t.row.score.mean - student->row.score.mean));
    if (!gaps.empty()) c.gap_closed.emplace_back(name, stat_of(gaps));
  }
  return c;
}

namespace {
std::string fmt_stat(const Stat& s, double scale, const char* spec) {
  if (s.n == 0) return "-";
  std::string m = fmt::format(fmt::runtime(spec), s.mean * scale);
  if (s.n > 1 && s.std > 0) m += fmt::format(" ± " + std::string(spec), s.std * scale);
  return m;
}
}  // namespace

std::string Comparison::markdown() const {
  const bool detect = !rows.empty() && rows[0].task == Task::detect;
  // Eval scores are the best epoch's; the test split has the box-overlap breakdown too.
  const bool with50 = detect && on == ScoreOn::test;
  const std::string score = fmt::format("{}{} %", on == ScoreOn::eval ? "best eval " : "",
                                        detect ? "mAP@[.5:.95]" : "top-1");
  std::string out = fmt::format(
      "| run | mode | arch | precision | {}{} | params | MACs | latency b1 (ms) | throughput b256 "
      "(img/s) | seeds |\n"
      "|---|---|---|---|---|{}---|---|---|---|---|\n",
      score, with50 ? " | mAP@.5 %" : "", with50 ? "---|" : "");
  for (const auto& r : rows)
    out += fmt::format("| {} | {} | {} | {} | {}{} | {} | {} | {} | {} | {} |\n", r.name, r.mode,
                       r.arch, r.precision, fmt_stat(r.score, 100, "{:.2f}"),
                       with50 ? " | " + fmt_stat(r.score50, 100, "{:.2f}") : std::string(),
                       fmt_stat(r.params, 1, "{:.0f}"), fmt_stat(r.macs, 1, "{:.0f}"),
                       fmt_stat(r.latency_ms, 1, "{:.3f}"), fmt_stat(r.throughput, 1, "{:.0f}"),
                       r.score.n);
  for (const auto& [name, s] : gap_closed)
    out += fmt::format("\n{}: closes {} % of the teacher-student gap", name,
                       fmt_stat(s, 100, "{:.1f}"));
  for (const auto& note : notes) out += "\nWarning: " + note;
  if (!gap_closed.empty() || !notes.empty()) out += "\n";
  return out;
}

nlohmann::json Comparison::to_json() const {
  nlohmann::json j = {{"rows", nlohmann::json::array()},
                      {"gap_closed", nlohmann::json::object()},
                      {"scored_on", on == ScoreOn::eval ? "eval" : "test"}};
  for (const auto& r : rows) {
    j["rows"].push_back({{"name", r.name},
                         {"mode", r.mode},
                         {"arch", r.arch},
                         {"teacher", r.teacher},
                         {"task", r.task},
                         {"precision", r.precision},
                         {r.task == Task::detect ? "map" : "top1", r.score},
                         {"params", r.params},
                         {"macs", r.macs},
                         {"latency_ms", r.latency_ms},
                         {"throughput", r.throughput}});
    if (r.task == Task::detect && on == ScoreOn::test) j["rows"].back()["map50"] = r.score50;
  }
  for (const auto& [name, s] : gap_closed) j["gap_closed"][name] = s;
  if (!notes.empty()) j["notes"] = notes;
  return j;
}

}  // namespace kd
