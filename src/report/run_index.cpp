#include "kd/report/run_index.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/eval/compare.h"
#include "kd/report/report.h"
#include "kd/runs/run.h"

namespace kd {

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object()) out.push_back(j);
  }
  return out;
}

std::string loss_label(const RunConfig& cfg) {
  if (cfg.mode == Mode::train) return "labels";
  std::vector<std::string> terms;
  if (cfg.task == Task::detect) {
    const auto& d = cfg.detect;
    if (d.kd_class > 0) terms.push_back(fmt::format("class kl T={}", cfg.distill.temperature));
    if (d.kd_box > 0) terms.push_back("box");
    if (d.kd_feature > 0) terms.push_back(d.kd_feature_loss);
  } else if (!cfg.distill.losses.empty()) {
    for (const auto& l : cfg.distill.losses) terms.push_back(l.substr(0, l.find(':')));
  } else if (cfg.distill.targets == Targets::hard) {
    terms.push_back("pseudo-labels");
  } else {
    terms.push_back(fmt::format("kl T={}", cfg.distill.temperature));
  }
  if (!cfg.distill.hints.empty())
    terms.push_back(cfg.distill.hint_loss == "nmse" ? "fitnet" : "hints " + cfg.distill.hint_loss);
  std::string out;
  for (const auto& t : terms) out += (out.empty() ? "" : "+") + t;
  return out;
}

namespace {

// A file's state as part of a stamp: modification time and size, or "-" when it is absent.
std::string file_stamp(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return "-";
  return fmt::format("{}.{}:{}", st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_size);
}

double mtime_seconds(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return static_cast<double>(st.st_mtim.tv_sec) + 1e-9 * static_cast<double>(st.st_mtim.tv_nsec);
}

// The run directories whose .lock a process holds now: kd holds an exclusive flock on it for as
// long as it trains there. Read from /proc/locks rather than by trying the lock, which could make
// a `kd run` resuming at that very moment find its directory "in use".
std::set<std::string> held_locks() {
  std::set<std::string> out;  // "MAJ:MIN:INODE" as /proc/locks writes them
  std::ifstream in("/proc/locks");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string n, kind, advisory, mode, pid, id;
    if (ss >> n >> kind >> advisory >> mode >> pid >> id && kind == "FLOCK" && mode == "WRITE")
      out.insert(id);
  }
  return out;
}

bool lock_held(const fs::path& lock, const std::set<std::string>& held) {
  struct stat st {};
  if (held.empty() || ::stat(lock.c_str(), &st) != 0) return false;
  return held.count(
             fmt::format("{:02x}:{:02x}:{}", major(st.st_dev), minor(st.st_dev), st.st_ino)) > 0;
}

std::string first_line(const std::string& text, size_t max) {
  std::string line = text.substr(0, text.find('\n'));
  return line.size() > max ? line.substr(0, max) + "..." : line;
}

// Where a run's teacher is, relative to the root when it lies below it (as the rows' paths are).
std::string teacher_path(const std::string& teacher, const fs::path& root) {
  if (teacher.empty()) return "";
  std::error_code ec;
  const fs::path rel =
      fs::relative(fs::weakly_canonical(teacher, ec), fs::weakly_canonical(root), ec);
  if (ec || rel.empty() || *rel.begin() == "..") return fs::path(teacher).filename().string();
  return rel.generic_string();
}

nlohmann::json build_row(const fs::path& dir, const std::string& rel, const fs::path& root,
                         bool training, nlohmann::json& summary) {
  const fs::path parent = fs::path(rel).parent_path();
  nlohmann::json row = {{"path", rel},
                        {"experiment", parent.generic_string()},
                        {"name", dir.filename().string()},
                        {"state", "incomplete"}};
  summary = nullptr;
  try {
    const RunConfig cfg = read_run_config(dir.string());
    const bool detect = cfg.task == Task::detect;
    row["name"] = cfg.name.empty() ? dir.filename().string() : cfg.name;
    row["seed"] = cfg.runtime.seed;
    row["task"] = cfg.task;
    row["mode"] = cfg.mode;
    row["arch"] = cfg.arch;
    row["loss"] = loss_label(cfg);
    row["teacher"] = teacher_path(
        cfg.distill.teachers.empty() ? cfg.distill.teacher : cfg.distill.teachers.front(), root);
    row["precision"] = cfg.qat.precision.empty() ? "fp32" : cfg.qat.precision;
    const auto history = read_metrics((dir / "metrics.jsonl").string());
    const char* eval_key = detect ? "eval_map" : "eval_top1";
    row["epochs"] = cfg.train.epochs * std::max(1, cfg.distill.generations);
    row["epoch"] = history.size();
    if (!history.empty() && history.back().contains(eval_key)) {
      row["eval"] = history.back()[eval_key];
      double best = 0;
      for (const auto& h : history) best = std::max(best, h.value(eval_key, 0.0));
      row["best_eval"] = best;
    }
    if (fs::exists(dir / "summary.json")) {
      summary = nlohmann::json::parse(read_text(dir / "summary.json"));
      const auto& s = summary;
      const auto& test = s.at("test");
      row["state"] = "complete";
      row["name"] = s.value("name", row["name"].get<std::string>());
      row["precision"] = s.value("precision", "fp32");
      row["score"] = detect ? test.value("map", 0.0) : test.value("top1", 0.0);
      if (detect) row["score50"] = test.value("map50", 0.0);
      row["params"] = s.value("params", 0);
      row["macs"] = s.value("macs", 0);
      const auto latency = s.value("latency", nlohmann::json::object());
      if (latency.is_object() && latency.contains("batch1_median_ms")) {
        row["latency_ms"] = latency["batch1_median_ms"];
        row["throughput"] = latency.value("throughput_per_s", 0.0);
      }
      row["finished"] = s.value("finished", "");
      row["teacher_name"] = s.value("teacher_name", "");
      summary["name"] = row["name"];  // kd compare's group key, as the row has it
    } else if (training) {
      row["state"] = "training";
      // Seconds per epoch: the last few epochs' wall time (training and evaluation), else their
      // training time alone (metrics written before kd recorded epoch_seconds).
      std::vector<double> seconds;
      for (size_t i = history.size() > 3 ? history.size() - 3 : 0; i < history.size(); ++i)
        seconds.push_back(
            history[i].value("epoch_seconds", history[i].value("train_seconds", 0.0)));
      const int64_t left = row["epochs"].get<int64_t>() - static_cast<int64_t>(history.size());
      if (!seconds.empty() && left >= 0)
        row["eta_s"] = static_cast<double>(left) * stat_of(seconds).mean;
      row["updated"] = mtime_seconds(dir / "metrics.jsonl");
    } else if (fs::exists(dir / "error.txt")) {
      row["state"] = "failed";
      row["error"] = first_line(read_text(dir / "error.txt"), 300);
    }
  } catch (const std::exception& e) {  // one damaged run must not take the whole list down
    row["state"] = "unreadable";
    row["error"] = first_line(e.what(), 300);
    summary = nullptr;
  }
  return row;
}

}  // namespace

RunIndex::RunIndex(std::string root) : root_(std::move(root)) {
  KD_CHECK(fs::is_directory(root_), "--runs {}: no such directory", root_);
}

RunIndex::Scan RunIndex::scan() {
  const auto held = held_locks();
  Scan out;
  std::set<std::string> seen;
  for (const auto& dir : find_run_dirs(root_)) {
    const fs::path d(dir);
    const std::string rel = fs::relative(d, root_).generic_string();
    const bool training = lock_held(d / ".lock", held);
    std::string stamp = training ? "T" : "-";
    for (const char* f : {"config.yaml", "summary.json", "metrics.jsonl", "error.txt"})
      stamp += "|" + file_stamp(d / f);
    Entry& e = entries_[rel];
    if (e.stamp != stamp || e.row.is_null()) {
      e.row = build_row(d, rel, root_, training, e.summary);
      e.stamp = stamp;
    }
    out.rels.push_back(rel);
    out.stamp += rel + "=" + stamp + "\n";
    seen.insert(rel);
  }
  for (auto it = entries_.begin(); it != entries_.end();)
    it = seen.count(it->first) ? std::next(it) : entries_.erase(it);
  out.stamp = fmt::format("{:016x}", std::hash<std::string>{}(out.stamp));
  return out;
}

std::map<std::string, std::string> RunIndex::runs() {
  std::map<std::string, std::string> out;
  for (const auto& dir : find_run_dirs(root_)) out[fs::relative(dir, root_).generic_string()] = dir;
  return out;
}

std::optional<nlohmann::json> RunIndex::index(const std::string& unless_stamp) {
  std::lock_guard<std::mutex> lock(mu_);
  const Scan s = scan();
  if (!unless_stamp.empty() && s.stamp == unless_stamp) return std::nullopt;
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& rel : s.rels) rows.push_back(entries_.at(rel).row);
  if (groups_stamp_ != s.stamp) {
    // kd compare's groups and gap closed, per experiment (the `kd run` folder): seeds of one
    // stage share a name there.
    std::map<std::string, std::vector<nlohmann::json>> by_experiment;
    for (const auto& rel : s.rels) {
      const Entry& e = entries_.at(rel);
      if (!e.summary.is_null())
        by_experiment[e.row["experiment"].get<std::string>()].push_back(e.summary);
    }
    groups_ = nlohmann::json::array();
    for (const auto& [experiment, summaries] : by_experiment) {
      const Comparison c = compare_runs(summaries);
      for (const auto& r : c.rows) {
        nlohmann::json g = {{"experiment", experiment},
                            {"name", r.name},
                            {"mode", r.mode},
                            {"arch", r.arch},
                            {"task", r.task},
                            {"precision", r.precision},
                            {"teacher", r.teacher},
                            {"score", r.score},
                            {"params", r.params},
                            {"macs", r.macs},
                            {"latency_ms", r.latency_ms},
                            {"throughput", r.throughput}};
        if (r.task == Task::detect) g["score50"] = r.score50;
        for (const auto& [name, gap] : c.gap_closed)
          if (name == r.name) g["gap_closed"] = gap;
        groups_.push_back(g);
      }
    }
    groups_stamp_ = s.stamp;
  }
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  // The folder's own name: where it lies on the machine is not the page's business.
  fs::path where = fs::absolute(root_).lexically_normal();
  if (where.filename().empty()) where = where.parent_path();
  return nlohmann::json{{"root", where.filename().string()},
                        {"stamp", s.stamp},
                        {"now", now},
                        {"runs", rows},
                        {"groups", groups_}};
}

nlohmann::json RunIndex::curves(const std::vector<std::string>& rel_paths) {
  const auto known = runs();
  nlohmann::json out = nlohmann::json::object();
  for (const auto& rel : rel_paths) {
    auto it = known.find(rel);
    KD_CHECK(it != known.end(), "no run '{}' under the runs folder", rel);
    out[rel] = read_metrics((fs::path(it->second) / "metrics.jsonl").string());
  }
  return out;
}

}  // namespace kd
