#include "kd/serve/dashboard.h"

#include <sstream>

#include <fmt/format.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/report/report.h"
#include "kd/serve/service.h"

namespace kd {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string url_escape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '/' || c == '~')
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

HttpResponse html(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  r.body = std::move(body);
  return r;
}

const char* kStyle = R"(<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f4f6fa; }
header { background: #1d2330; color: #fff; padding: 14px 28px; } header h1 { margin: 0; font-size: 20px; }
header a { color: #9cc3ff; margin-right: 16px; } main { padding: 16px 28px; }
table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
th, td { padding: 5px 10px; text-align: right; border-bottom: 1px solid #e4e8ef; white-space: nowrap; }
th:nth-child(-n+3), td:nth-child(-n+3) { text-align: left; }
.state { color: #b05a00; } button { margin: 10px 0; padding: 6px 12px; }
</style>)";

}  // namespace

Dashboard::Dashboard(std::string root, std::map<std::string, std::string> served)
    : root_(std::move(root)), served_(std::move(served)) {
  KD_CHECK(fs::is_directory(root_), "--runs {}: no such directory", root_);
}

HttpResponse Dashboard::list(const std::string& key) const {
  const std::string key_q = key.empty() ? "" : "&key=" + url_escape(key);
  std::ostringstream rows;
  int n = 0;
  for (const auto& dir : find_run_dirs(root_)) {
    const auto row = run_row(dir);
    const std::string rel = fs::relative(dir, root_).string();
    const bool done = row["complete"].get<bool>();
    std::string predict;
    for (const auto& [source, model] : served_)
      if (fs::weakly_canonical(source) == fs::weakly_canonical(dir))
        predict = fmt::format(" · <a href=\"/?model={}\">predict</a>", url_escape(model));
    const double score = row.value("score", 0.0);
    rows << fmt::format(
        "<tr data-run=\"{0}\"><td><input type=checkbox value=\"{0}\"></td><td "
        "title=\"{1}\">{0}</td><td>{2}</td><td>{3}</td>"
        "<td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td><td>{8}</td><td>{9}</td>"
        "<td><a href=\"/runs/report?runs={10}{11}\">report</a>{12}</td></tr>\n",
        escape(rel), escape(row.value("name", "")), escape(row.value("task", "")),
        escape(row.value("mode", "")), escape(row.value("arch", "")),
        done ? (row["task"] == "detect" ? fmt::format("{:.3f} mAP", score)
                                        : fmt::format("{:.2f} %", 100 * score))
             : fmt::format("<span class=state>{}</span>", escape(row.value("state", "incomplete"))),
        done ? std::to_string(row.value("params", int64_t{0})) : "-",
        done && row.value("latency_ms", -1.0) >= 0
            ? fmt::format("{:.3f}", row["latency_ms"].get<double>())
            : "-",
        escape(row.value("date", "")), done ? "complete" : escape(row.value("state", "incomplete")),
        url_escape(rel), key_q, predict);
    ++n;
  }
  std::string page = fmt::format(
      "<!doctype html><html lang=en><head><meta charset=utf-8><title>kd runs</title>{}</head>"
      "<body data-runs=\"{}\"><header><h1>kd runs: {}</h1><a href=\"/\">prediction page</a><a "
      "href=\"/metrics\">metrics</a></header><main>"
      "<table id=runs><tr><th></th><th>run</th><th>task</th><th>mode</th><th>arch</th><th>test "
      "score</th><th>params</th>"
      "<th>latency b1 (ms)</th><th>finished</th><th>state</th><th></th></tr>\n{}</table>"
      "<button id=compare>Report on the selected runs</button></main><script>"
      "document.getElementById('compare').onclick = () => {{"
      " const runs = [...document.querySelectorAll('input[type=checkbox]:checked')].map(c => "
      "encodeURIComponent(c.value));"
      " if (runs.length) location.href = '/runs/report?runs=' + runs.join(',') + {};"
      "}};</script></body></html>",
      kStyle, n, escape(root_), rows.str(), nlohmann::json(key_q).dump());
  return html(200, page);
}

HttpResponse Dashboard::report(const std::string& runs_param, const std::string&) const {
  // Only runs the listing shows, by their path relative to the root: nothing else on disk.
  std::map<std::string, std::string> known;
  for (const auto& dir : find_run_dirs(root_)) known[fs::relative(dir, root_).string()] = dir;
  std::vector<std::string> dirs;
  std::stringstream ss(runs_param);
  std::string rel;
  while (std::getline(ss, rel, ',')) {
    if (rel.empty()) continue;
    auto it = known.find(rel);
    if (it == known.end())
      return html(404,
                  "<!doctype html><p>no run '" + escape(rel) + "' under " + escape(root_) + "</p>");
    dirs.push_back(it->second);
  }
  if (dirs.empty()) return html(400, "<!doctype html><p>runs=A,B: which runs to report on</p>");
  std::string stamp;
  for (const auto& dir : dirs)
    for (const char* file : {"summary.json", "metrics.jsonl"}) {  // a running run's metrics grow
      std::error_code ec;
      const auto t = fs::last_write_time(fs::path(dir) / file, ec);
      stamp += ec ? std::string("-,") : std::to_string(t.time_since_epoch().count()) + ",";
    }
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(runs_param);
    if (it != cache_.end() && it->second.stamp == stamp) return html(200, it->second.page);
  }
  std::string page = render_report(collect_report(dirs, {}));
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= 64) cache_.clear();  // bounded: a few MB per detection report
  cache_[runs_param] = {stamp, page};
  return html(200, page);
}

}  // namespace kd
