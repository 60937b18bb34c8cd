#include "kd/report/report.h"

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "kd/core/base64.h"
#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/data/detection.h"
#include "kd/eval/coco.h"
#include "kd/eval/compare.h"
#include "kd/eval/detection.h"
#include "kd/models/model.h"
#include "kd/report/run_index.h"
#include "kd/runs/run.h"
#include "kd/runs/run_dir.h"
#include "report_page.h"

namespace kd {
namespace {

nlohmann::json read_json_file(const fs::path& p) {
  try {
    return nlohmann::json::parse(read_text(p));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", p.string(), e.what());
  }
}

// Test images with the detector's boxes drawn, as PNG data URLs (kd predict's drawing).
nlohmann::json detection_extras(const std::string& dir, const nlohmann::json& summary,
                                const ReportOptions& opts) {
  nlohmann::json out;
  const RunConfig cfg = read_run_config(dir);
  auto model = load_model(dir);
  const int64_t size = summary.value("input_size", model->spec().input_shape.at(1));
  DetectionDataset test = has_detection_part(cfg.data.source, "test")
                              ? load_detection(cfg.data.source, "test", size)
                              : load_detection_run_data(cfg.data, size).test;
  PostprocessOptions po;  // as the run evaluated itself
  po.score_threshold = cfg.detect.score_threshold;
  po.iou_threshold = cfg.detect.nms_iou;
  CocoMetrics m = evaluate_detector(*model, test, 32, torch::kCPU, po);
  const auto& names = model->spec().class_names;
  nlohmann::json pr = nlohmann::json::array();
  for (size_t k = 0; k < m.category_ids.size(); ++k) {
    if (m.per_class_ap50[k] < 0) continue;  // no ground truth of this class in the test part
    nlohmann::json points = nlohmann::json::array();
    for (size_t r = 0; r < m.per_class_pr50[k].size(); ++r)
      if (m.per_class_pr50[k][r] >= 0)
        points.push_back({{"x", static_cast<double>(r) / 100.0}, {"y", m.per_class_pr50[k][r]}});
    pr.push_back({{"class", k < names.size() ? names[k] : std::to_string(m.category_ids[k])},
                  {"ap50", m.per_class_ap50[k]},
                  {"points", points}});
  }
  out["pr_curves"] = pr;

  const int64_t n = std::min<int64_t>(opts.samples, test.size());
  auto part = test.subset(torch::arange(n, torch::kLong));
  po.score_threshold = opts.score_threshold;
  auto boxes = detect_boxes(*model, part, 32, torch::kCPU, po);
  nlohmann::json samples = nlohmann::json::array();
  for (int64_t i = 0; i < n; ++i) {
    const auto& info = part.info[static_cast<size_t>(i)];
    cv::Mat img = cv::imread(info.file, cv::IMREAD_COLOR);
    if (img.empty()) continue;
    int shown = 0;
    for (const auto& b : boxes) {
      if (b.image_id != info.id) continue;
      const auto k = std::find(part.category_ids.begin(), part.category_ids.end(), b.category_id) -
                     part.category_ids.begin();
      const cv::Scalar colour(40 + 50 * (k % 5), 200 - 30 * (k % 6), 230);
      cv::rectangle(img, cv::Rect2d(b.bbox[0], b.bbox[1], b.bbox[2], b.bbox[3]), colour, 1);
      const std::string label = fmt::format(
          "{} {:.2f}", static_cast<size_t>(k) < names.size() ? names[static_cast<size_t>(k)] : "?",
          b.score);
      cv::putText(
          img, label,
          cv::Point(static_cast<int>(b.bbox[0]), std::max(8, static_cast<int>(b.bbox[1]) - 2)),
          cv::FONT_HERSHEY_PLAIN, 0.7, colour, 1);
      ++shown;
    }
    std::vector<uchar> png;
    cv::imencode(".png", img, png);
    samples.push_back(
        {{"image", "data:image/png;base64," +
                       base64_encode({reinterpret_cast<const char*>(png.data()), png.size()})},
         {"caption",
          fmt::format("{} ({} box{} at score >= {})", fs::path(info.file).filename().string(),
                      shown, shown == 1 ? "" : "es", opts.score_threshold)}});
  }
  out["samples"] = samples;
  return out;
}

double latency_ms(const nlohmann::json& summary) {
  const auto& l = summary.value("latency", nlohmann::json::object());
  return l.is_object() && l.contains("batch1_median_ms") ? l["batch1_median_ms"].get<double>()
                                                         : -1.0;
}

std::string metric_name(Task task) { return task == Task::detect ? "mAP@[.5:.95]" : "top-1"; }

void fill_complete_run(nlohmann::json& run, const std::string& dir, const RunConfig& cfg,
                       const ReportOptions& opts);

}  // namespace

nlohmann::json collect_run(const std::string& dir, const ReportOptions& opts) {
  const fs::path d(dir);
  KD_CHECK(fs::is_directory(d), "{}: no such run directory", dir);
  KD_CHECK(fs::exists(d / "config.yaml"), "{}: no config.yaml (not a kd run directory)", dir);
  nlohmann::json run;
  run["path"] = dir;
  run["config"] = read_text(d / "config.yaml");
  run["history"] = read_metrics((d / "metrics.jsonl").string());
  const RunConfig cfg = read_run_config(dir);
  run["task"] = cfg.task;
  run["mode"] = cfg.mode;
  run["arch"] = cfg.arch;
  run["precision"] = "fp32";
  run["name"] = cfg.name.empty() ? d.filename().string() : cfg.name;
  run["seed"] = cfg.runtime.seed;
  run["metric"] = metric_name(cfg.task);
  if (!fs::exists(d / "summary.json")) {
    run["complete"] = false;
    const fs::path err = d / "error.txt";
    run["state"] = fs::exists(err) ? "failed: " + read_text(err).substr(0, 500)
                                   : fmt::format(
                                         "incomplete: no summary.json ({} epoch(s) of {} recorded; "
                                         "still running or interrupted)",
                                         run["history"].size(), cfg.train.epochs);
    return run;
  }
  try {
    fill_complete_run(run, dir, cfg, opts);
  } catch (const nlohmann::json::exception& e) {  // a damaged summary: shown, not fatal
    run["complete"] = false;
    run["state"] = fmt::format("unreadable: {}: {}", (d / "summary.json").string(), e.what());
  }
  return run;
}

namespace {

void fill_complete_run(nlohmann::json& run, const std::string& dir, const RunConfig& cfg,
                       const ReportOptions& opts) {
  const fs::path d(dir);
  const nlohmann::json s = read_json_file(d / "summary.json");
  run["complete"] = true;
  run["state"] = "complete";
  run["name"] = s.value("name", run["name"].get<std::string>());
  const Task task = s.value("task", cfg.task);
  run["task"] = task;
  run["metric"] = metric_name(task);
  run["arch"] = s.value("arch", cfg.arch);
  run["precision"] = s.value("precision", "fp32");
  run["params"] = s.value("params", 0);
  run["macs"] = s.value("macs", 0);
  run["latency_ms"] = latency_ms(s);
  run["finished"] = s.value("finished", "");
  run["teacher"] = s.value("teacher", "");
  run["teacher_name"] = s.value("teacher_name", "");
  run["summary"] = s;
  const auto& test = s.at("test");
  if (run["task"] == "detect") {
    run["score"] = test.value("map", 0.0);
    run.update(detection_extras(dir, s, opts));
  } else {
    run["score"] = test.value("top1", 0.0);
    // Class order is the model's (the summary's per-class object is keyed by name).
    std::vector<std::string> names;
    if (fs::exists(d / "model.json"))
      names = ModelSpec::from_json(read_json_file(d / "model.json"), dir).class_names;
    nlohmann::json per = nlohmann::json::array();
    for (const auto& name : names) per.push_back(test.at("per_class").value(name, 0.0));
    run["classes"] = names;
    run["per_class"] = per;
    run["confusion"] = test.at("confusion");
  }
}

}  // namespace

nlohmann::json collect_report(const std::vector<std::string>& dirs, const ReportOptions& opts) {
  KD_CHECK(!dirs.empty(), "no runs given");
  nlohmann::json runs = nlohmann::json::array();
  std::vector<nlohmann::json> summaries;
  for (const auto& dir : dirs) {
    if (fs::is_regular_file(dir)) {  // a TorchScript teacher: after the runs that score it
      runs.push_back({{"path", dir}});
      continue;
    }
    runs.push_back(collect_run(dir, opts));
    if (runs.back()["complete"].get<bool>()) summaries.push_back(runs.back()["summary"]);
  }
  for (auto& r : runs)
    if (!r.contains("complete")) {
      const std::string pt = r["path"];
      const nlohmann::json s = require_torchscript_teacher_summary(pt, summaries);
      r = {{"path", pt},
           {"config", fmt::format("(a TorchScript file: no config.yaml; its test score is the one "
                                  "the {} run(s) distilled from it measured)",
                                  s["measured_by"].get<size_t>())},
           {"history", nlohmann::json::array()},
           {"name", s["name"]},
           {"seed", 0},
           {"task", Task::classify},
           {"mode", Mode::train},
           {"arch", s["arch"]},
           {"precision", s["precision"]},
           {"metric", metric_name(Task::classify)},
           {"complete", true},
           {"state", "complete"},
           {"params", s["params"]},
           {"macs", 0},
           {"latency_ms", -1.0},
           {"finished", ""},
           {"teacher", ""},
           {"teacher_name", ""},
           {"score", s["test"]["top1"]},
           {"classes", nlohmann::json::array()},
           {"per_class", nlohmann::json::array()},
           {"confusion", nlohmann::json::array()},
           {"summary", s}};
      summaries.insert(summaries.begin(), s);
    }
  // Seeds of one recipe share its name (kd compare groups by it); the page tells them apart by
  // seed, or by path where even the seed is shared (one recipe in two experiments).
  auto label_runs = [&runs](const std::function<std::string(const nlohmann::json&)>& label) {
    std::map<std::string, int> count;
    for (const auto& r : runs) ++count[r["label"].get<std::string>()];
    for (auto& r : runs)
      if (count[r["label"].get<std::string>()] > 1) r["label"] = label(r);
  };
  for (auto& r : runs) r["label"] = r["name"];
  label_runs([](const nlohmann::json& r) {
    return fmt::format("{} (seed {})", r["name"].get<std::string>(), r["seed"].get<uint64_t>());
  });
  label_runs([](const nlohmann::json& r) { return r["path"].get<std::string>(); });
  // A trained run another run learned from is a teacher; other trained runs are students.
  for (auto& r : runs) {
    if (r["mode"] != "train") {
      r["role"] = "distilled";
      continue;
    }
    const bool teaches = std::any_of(runs.begin(), runs.end(), [&](const nlohmann::json& o) {
      const std::string t = o.value("teacher", "");
      return !t.empty() && (fs::path(t).lexically_normal() ==
                                fs::path(r["path"].get<std::string>()).lexically_normal() ||
                            o.value("teacher_name", "") == r["name"]);
    });
    r["role"] = teaches ? "teacher" : "student";
  }
  nlohmann::json gap = nlohmann::json::array();
  if (!summaries.empty()) {
    Comparison c = compare_runs(summaries);
    for (const auto& [name, st] : c.gap_closed)
      gap.push_back({{"name", name}, {"gap_closed", st.mean}, {"n", st.n}});
  }
  for (auto& r : runs) r.erase("summary");  // everything shown is already extracted
  return {{"generated", utc_timestamp()}, {"runs", runs}, {"gap_closed", gap}};
}

std::string render_report(const nlohmann::json& report) {
  // The data goes into a <script type="application/json">: no "<" at all, so neither "</script>"
  // nor "<!--" can end or change it ('<' only occurs inside JSON strings, where \u003c is '<').
  std::string data;
  for (char ch : report.dump()) data += ch == '<' ? std::string("\\u003c") : std::string(1, ch);
  std::string page = with_chart_js(kReportPage);
  auto put = [&](const std::string& marker, const std::string& text) {
    const auto at = page.find(marker);
    KD_CHECK(at != std::string::npos, "report template has no {}", marker);
    page.replace(at, marker.size(), text);
  };
  put("KD_REPORT_DATA", data);
  return page;
}

std::string with_chart_js(std::string page) {
  const std::string marker = "/*KD_CHART_JS*/";
  const auto at = page.find(marker);
  KD_CHECK(at != std::string::npos, "page template has no {}", marker);
  return page.replace(at, marker.size(), kChartJs);
}

std::vector<std::string> find_run_dirs(const std::string& root, int max_depth) {
  std::vector<std::string> out;
  KD_CHECK(fs::is_directory(root), "{}: no such directory", root);
  std::error_code ec;
  const fs::path inside = fs::canonical(root);
  // A symbolic link in the folder to a run elsewhere is not one of its runs: only what lies
  // under `root` itself is read and served.
  auto under_root = [&](const fs::path& p) {
    std::error_code e;
    const fs::path c = fs::canonical(p, e);
    return !e && lies_within(c, inside);
  };
  for (auto it = fs::recursive_directory_iterator(
           root, fs::directory_options::skip_permission_denied, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (!it->is_directory()) continue;
    if (fs::exists(it->path() / "config.yaml") && it->path().filename() != "checkpoints") {
      if (under_root(it->path())) out.push_back(it->path().string());
      it.disable_recursion_pending();  // a run's generations/ are part of it
    } else if (it.depth() + 1 >= max_depth) {
      it.disable_recursion_pending();
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace kd
