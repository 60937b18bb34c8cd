#include "kd/serve/dashboard.h"

#include <sstream>

#include <fmt/format.h>

#include "kd/core/error.h"
#include "kd/core/fs.h"
#include "kd/report/report.h"
#include "kd/serve/service.h"
#include "responses.h"
#include "web_page.h"

namespace kd {
using serve_detail::json_response;

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
      default:
        out += c;
    }
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

std::vector<std::string> split_runs(const std::string& param) {
  std::vector<std::string> out;
  std::stringstream ss(param);
  std::string rel;
  while (std::getline(ss, rel, ','))
    if (!rel.empty()) out.push_back(rel);
  return out;
}

}  // namespace

Dashboard::Dashboard(const std::string& root, const std::map<std::string, std::string>& served)
    : index_(root), page_(with_chart_js(kRunsPage)) {
  for (const auto& [source, model] : served) {
    std::error_code ec;
    const fs::path rel =
        fs::relative(fs::weakly_canonical(source, ec), fs::weakly_canonical(root), ec);
    if (!ec && !rel.empty() && *rel.begin() != "..") served_[rel.generic_string()] = model;
  }
}

HttpResponse Dashboard::page() const { return html(200, page_); }

HttpResponse Dashboard::index(const HttpRequest& req) {
  // The stamp changes whenever a file a row is read from does: an unchanged folder costs the
  // client one small 304 per refresh.
  auto inm = req.headers.find("if-none-match");
  std::string client_stamp;
  if (inm != req.headers.end() && inm->second.size() > 2 && inm->second.front() == '"' &&
      inm->second.back() == '"')
    client_stamp = inm->second.substr(1, inm->second.size() - 2);
  auto current = index_.index(client_stamp);
  if (!current) {
    HttpResponse r;
    r.status = 304;
    r.content_type = "application/json";
    r.headers.emplace_back("ETag", inm->second);
    return r;
  }
  nlohmann::json& doc = *current;
  for (auto& row : doc["runs"]) {
    auto it = served_.find(row["path"].get<std::string>());
    if (it != served_.end()) row["served"] = it->second;
  }
  HttpResponse r = json_response(200, doc);
  r.headers.emplace_back("ETag", "\"" + doc["stamp"].get<std::string>() + "\"");
  r.headers.emplace_back("Cache-Control", "no-cache");
  return r;
}

HttpResponse Dashboard::curves(const std::string& runs_param) {
  const auto rels = split_runs(runs_param);
  if (rels.empty()) return json_response(400, {{"error", "runs=A,B: which runs' curves"}});
  try {
    return json_response(200, index_.curves(rels));
  } catch (const Error& e) {
    return json_response(404, {{"error", e.what()}});
  }
}

HttpResponse Dashboard::report(const std::string& runs_param) {
  // Only runs the index lists, by their path relative to the root: nothing else on disk.
  const auto known = index_.runs();
  std::vector<std::string> dirs;
  for (const auto& rel : split_runs(runs_param)) {
    auto it = known.find(rel);
    if (it == known.end())
      return html(404, "<!doctype html><p>no run '" + escape(rel) + "' under the runs folder</p>");
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
